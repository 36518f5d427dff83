//! Heredocs (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`) on RUN, COPY and ADD
//! lines: which words open one, and whether its body is expanded.

use serde::Serialize;

use crate::dockerfile::shell::{Lexer, NoEnv, ShellError};

/// One heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heredoc {
    /// The delimiter word (quotes removed); also the file name for COPY/ADD.
    pub name: String,
    /// The file descriptor before `<<` (`3<<EOF`), 0 when none.
    pub file_descriptor: u32,
    /// False when any part of the delimiter was quoted: the body is then
    /// taken literally.
    pub expand: bool,
    /// `<<-`: leading tabs are removed from the body and the terminator.
    pub chomp: bool,
    /// The body, each line with its newline.
    pub content: String,
}

impl Heredoc {
    /// The body after `<<-` chomping (leading tabs of every line removed).
    pub fn chomped_content(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        chomp(&self.content)
    }
}

/// Removes the leading tabs of every line.
pub fn chomp(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| line.trim_start_matches('\t'))
        .collect()
}

/// Parses one word as a heredoc opener: `^(\d*)<<(-?)([^<]*)$`, the rest
/// being exactly one shell word.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, ShellError> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(after) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, after),
    };
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let mut lexer = Lexer::new('\\');
    lexer.skip_unset_env = true;
    let words = lexer.process_words(rest, &NoEnv)?;
    if words.len() != 1 {
        return Ok(None);
    }
    lexer.raw_quotes = true;
    let raw = lexer.process_words(rest, &NoEnv)?;
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = raw.len() == 1 && quotes(&words[0]) == quotes(&raw[0]);
    Ok(Some(Heredoc {
        name: words[0].clone(),
        file_descriptor: word[..digits].parse().unwrap_or(0),
        expand,
        chomp,
        content: String::new(),
    }))
}

/// All heredoc openers on an instruction line, in order.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ShellError> {
    let mut lexer = Lexer::new('\\');
    lexer.raw_quotes = true;
    lexer.raw_escapes = true;
    lexer.skip_unset_env = true;
    let words = lexer.process_words(line, &NoEnv).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openers() {
        let h = parse_heredoc("<<EOF").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOF", true, false));
        let h = parse_heredoc("<<-'EOF'").unwrap().unwrap();
        assert_eq!((h.name.as_str(), h.expand, h.chomp), ("EOF", false, true));
        let h = parse_heredoc("3<<E\"O\"F").unwrap().unwrap();
        assert_eq!(
            (h.name.as_str(), h.expand, h.file_descriptor),
            ("EOF", false, 3)
        );
        assert!(parse_heredoc("<<").unwrap().is_none());
        assert!(parse_heredoc("a<<EOF").unwrap().is_none());
    }

    #[test]
    fn several_on_one_line() {
        let docs = heredocs_from_line("COPY <<one <<-\"two\" /dest/").unwrap();
        let names: Vec<_> = docs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
    }
}
