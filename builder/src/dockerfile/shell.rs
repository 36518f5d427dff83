//! The shell lexer BuildKit uses to expand `$VAR` and `${VAR...}` in
//! Dockerfile words and to split them into words.
//!
//! It mimics a POSIX shell only as far as the Dockerfile reference says
//! ("Environment replacement"): single and double quotes, the escape token,
//! `$v ${v} ${v:-w} ${v-w} ${v:+w} ${v+w} ${v:?m} ${v?m}`, the patterns
//! `${v#p} ${v##p} ${v%p} ${v%%p} ${v/p/r} ${v//p/r}` (`*` and `?` only), and
//! the special and positional parameters, which are never set here.

use std::collections::{BTreeSet, HashMap};

use crate::dockerfile::dump::go_quote;

/// Variables visible to an expansion.
pub trait Env {
    /// The value of `name`, or `None` when it is not set (set-but-empty is
    /// `Some("")`).
    fn lookup(&self, name: &str) -> Option<&str>;
}

impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// No variables at all.
pub struct NoEnv;

impl Env for NoEnv {
    fn lookup(&self, _name: &str) -> Option<&str> {
        None
    }
}

/// A failed expansion: the word and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {}: {reason}", go_quote(.word))]
pub struct ShellError {
    /// The word as written.
    pub word: String,
    /// What went wrong inside it.
    pub reason: ShellFailure,
}

/// Why an expansion failed; messages are BuildKit's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellFailure {
    #[error("unexpected end of statement while looking for matching single-quote")]
    UnterminatedSingleQuote,
    #[error("unexpected end of statement while looking for matching double-quote")]
    UnterminatedDoubleQuote,
    #[error("unexpected end of statement while looking for matching {stop}")]
    UnexpectedEnd { stop: char },
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier { modifier: String },
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern { pattern: String, reason: String },
}

/// The result of one word's expansion, with the variable names it read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word (quotes removed, variables replaced).
    pub value: String,
    /// Names that were looked up and found.
    pub matched: BTreeSet<String>,
    /// Names that were looked up and not set.
    pub unmatched: BTreeSet<String>,
}

/// The lexer: its escape token and its modes.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
    /// Keep quote characters in the output.
    pub raw_quotes: bool,
    /// Keep escape characters in the output.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters (heredoc bodies).
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
}

impl Lexer {
    /// A lexer with `escape` as its escape token (`\` or `` ` ``).
    pub fn new(escape: char) -> Lexer {
        Lexer {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_process_quotes: false,
            skip_unset_env: false,
        }
    }

    /// Expands one word; spaces between words are kept.
    pub fn process_word(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<String, ShellError> {
        Ok(self.process_word_with_matches(word, env)?.value)
    }

    /// Expands one word and reports which variables it read.
    pub fn process_word_with_matches(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<Expansion, ShellError> {
        let mut state = State::new(self, word, env);
        let (value, _) = state.process_top(word)?;
        Ok(Expansion {
            value,
            matched: state.matched,
            unmatched: state.unmatched,
        })
    }

    /// Expands and then splits into words on unquoted white space.
    pub fn process_words(
        &self,
        word: &str,
        env: &(impl Env + ?Sized),
    ) -> Result<Vec<String>, ShellError> {
        let mut state = State::new(self, word, env);
        Ok(state.process_top(word)?.1)
    }
}

struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn new() -> Words {
        Words {
            buf: String::new(),
            words: Vec::new(),
            in_word: false,
        }
    }

    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, text: &str) {
        text.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, text: &str) {
        self.buf.push_str(text);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(std::mem::take(&mut self.buf));
        }
        self.words
    }
}

struct State<'a, E: Env + ?Sized> {
    lexer: &'a Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a E,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type Step<T> = std::result::Result<T, ShellFailure>;

impl<'a, E: Env + ?Sized> State<'a, E> {
    fn new(lexer: &'a Lexer, word: &str, env: &'a E) -> Self {
        State {
            lexer,
            chars: word.chars().collect(),
            pos: 0,
            env,
            raw_escapes: lexer.raw_escapes,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        }
    }

    fn process_top(&mut self, word: &str) -> Result<(String, Vec<String>), ShellError> {
        let raw = self.raw_escapes;
        self.process_stop_on(None, raw)
            .map_err(|reason| ShellError {
                word: word.to_string(),
                reason,
            })
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Step<(String, Vec<String>)> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let out = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        out
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> Step<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::new();
        let quotes = !self.lexer.skip_process_quotes;
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok((result, words.finish()));
            }
            if ch == '$' || (quotes && (ch == '\'' || ch == '"')) {
                let piece = match ch {
                    '$' => self.process_dollar()?,
                    '\'' => self.process_single_quote()?,
                    _ => self.process_double_quote()?,
                };
                result.push_str(&piece);
                if ch == '$' {
                    words.add_string(&piece);
                } else {
                    words.add_raw_string(&piece);
                }
                continue;
            }
            let mut ch = self.next().expect("peeked a character");
            if ch == self.lexer.escape {
                if self.raw_escapes {
                    words.add_raw_char(ch);
                    result.push(ch);
                }
                match self.next() {
                    None => break,
                    Some(escaped) => {
                        words.add_raw_char(escaped);
                        ch = escaped;
                    }
                }
            } else {
                words.add_char(ch);
            }
            result.push(ch);
        }
        if let Some(stop) = stop {
            return Err(ShellFailure::UnexpectedEnd { stop });
        }
        Ok((result, words.finish()))
    }

    fn process_single_quote(&mut self) -> Step<String> {
        let mut result = String::new();
        let open = self.next().expect("called on a quote");
        if self.lexer.raw_quotes {
            result.push(open);
        }
        loop {
            match self.next() {
                None => return Err(ShellFailure::UnterminatedSingleQuote),
                Some('\'') => {
                    if self.lexer.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Step<String> {
        let mut result = String::new();
        let open = self.next().expect("called on a quote");
        if self.lexer.raw_quotes {
            result.push(open);
        }
        loop {
            match self.peek() {
                None => return Err(ShellFailure::UnterminatedDoubleQuote),
                Some('"') => {
                    self.next();
                    if self.lexer.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let value = self.process_dollar()?;
                    result.push_str(&value);
                }
                Some(_) => {
                    let mut ch = self.next().expect("peeked a character");
                    if ch == self.lexer.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.lexer.escape => {
                                ch = self.next().expect("peeked a character");
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Step<String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.lookup(&name) {
                Some(v) => v,
                None if self.lexer.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(ShellFailure::MissingBrace),
            Some('{' | '}' | ':') => return Err(ShellFailure::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        // Go's scanner returns EOF (shown as U+FFFD) past the end.
        let mut ch = self.next();
        let mut modifier = ch.map_or('\u{FFFD}'.to_string(), String::from);
        let mut null_is_unset = false;
        match ch {
            Some('}') => {
                return Ok(match self.lookup(&name) {
                    Some(v) => v,
                    None if self.lexer.skip_unset_env => format!("${{{name}}}"),
                    None => String::new(),
                })
            }
            Some(':') => {
                null_is_unset = true;
                ch = self.next();
                modifier.push(ch.unwrap_or('\u{FFFD}'));
            }
            Some('+' | '-' | '?' | '#' | '%') => {}
            Some('/') => return self.process_replace(name),
            _ => return Err(ShellFailure::UnsupportedModifier { modifier }),
        }
        let pattern_op = matches!(ch, Some('#' | '%'));
        if null_is_unset && pattern_op {
            return Err(ShellFailure::UnsupportedModifier { modifier });
        }
        let word = match self.process_stop_on(Some('}'), pattern_op) {
            Ok((word, _)) => word,
            Err(e) => return Err(self.missing_at_end(e, ShellFailure::MissingBrace)),
        };
        let value = self.lookup(&name);
        if self.lexer.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let unset_or_null = value.is_none() || (null_is_unset && value.as_deref() == Some(""));
        match ch {
            Some('-') => Ok(if unset_or_null {
                word
            } else {
                value.unwrap_or_default()
            }),
            Some('+') => Ok(if unset_or_null { String::new() } else { word }),
            Some('?') => {
                let message = |default: &str| {
                    if word.is_empty() {
                        default.to_string()
                    } else {
                        word.clone()
                    }
                };
                match value {
                    None => Err(ShellFailure::Required {
                        name,
                        message: message("is not allowed to be unset"),
                    }),
                    Some(v) if null_is_unset && v.is_empty() => Err(ShellFailure::Required {
                        name,
                        message: message("is not allowed to be empty"),
                    }),
                    Some(v) => Ok(v),
                }
            }
            Some(op @ ('%' | '#')) => {
                let value = value.unwrap_or_default();
                let (pattern, greedy) = match word.strip_prefix(op) {
                    Some(rest) => (rest.to_string(), true),
                    None => (word, false),
                };
                if op == '%' {
                    trim_suffix(&pattern, &value, greedy)
                } else {
                    trim_prefix(&pattern, &value, greedy)
                }
            }
            _ => Err(ShellFailure::UnsupportedModifier { modifier }),
        }
    }

    fn missing_at_end(&self, error: ShellFailure, at_end: ShellFailure) -> ShellFailure {
        if self.peek().is_none() {
            at_end
        } else {
            error
        }
    }

    fn process_replace(&mut self, name: String) -> Step<String> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = match self.process_stop_on(Some('/'), true) {
            Ok((p, _)) => p,
            Err(e) => return Err(self.missing_at_end(e, ShellFailure::MissingSlash)),
        };
        let replacement = match self.process_stop_on(Some('}'), true) {
            Ok((r, _)) => r,
            Err(e) => return Err(self.missing_at_end(e, ShellFailure::MissingBrace)),
        };
        let value = self.lookup(&name);
        let Some(value) = value else {
            if self.lexer.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return replace(&pattern, &replacement, "", all);
        };
        replace(&pattern, &replacement, &value, all)
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_digit(ch) {
                while let Some(d) = self.peek().filter(|&c| is_digit(c)) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphabetic() && !is_digit(ch) && ch != '_' {
                break;
            }
            name.push(ch);
            self.next();
        }
        name
    }
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

fn replace(pattern: &str, replacement: &str, value: &str, all: bool) -> Step<String> {
    let re = shell_pattern_to_regex(pattern, true, false)?;
    if all {
        return Ok(re.replace_all(value, replacement).into_owned());
    }
    Ok(match re.find(value) {
        Some(m) => format!(
            "{}{}{}",
            &value[..m.start()],
            replacement,
            &value[m.end()..]
        ),
        None => value.to_string(),
    })
}

/// Compiles a shell wildcard pattern (`*`, `?`, `\` escapes; no brackets)
/// into a regular expression, as BuildKit does (POSIX XCU 2.13 without `[]`).
fn shell_pattern_to_regex(pattern: &str, greedy: bool, anchored: bool) -> Step<regex::Regex> {
    let mut out = String::with_capacity(pattern.len() + 4);
    if anchored {
        out.push('^');
    }
    let star = if greedy { ".*" } else { ".*?" };
    let mut chars = pattern.chars().peekable();
    while let Some(tok) = chars.next() {
        match tok {
            '*' => out.push_str(star),
            '?' => out.push('.'),
            '\\' => {
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(c @ ('*' | '?' | '\\')) => {
                        out.push('\\');
                        out.push(c);
                    }
                    other => {
                        return Err(ShellFailure::InvalidPattern {
                            pattern: pattern.to_string(),
                            reason: format!("invalid escape '\\{}'", other.unwrap_or('\u{FFFD}')),
                        })
                    }
                }
            }
            '[' | ']' | '{' | '}' | '.' | '+' | '(' | ')' | '|' | '^' | '$' => {
                out.push('\\');
                out.push(tok);
            }
            _ => {
                let mut buf = [0u8; 4];
                out.push_str(&regex::escape(tok.encode_utf8(&mut buf)));
            }
        }
    }
    regex::Regex::new(&out).map_err(|e| ShellFailure::InvalidPattern {
        pattern: pattern.to_string(),
        reason: e.to_string(),
    })
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    let re = shell_pattern_to_regex(pattern, greedy, true)?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

/// Reverses a pattern but keeps each escape before the character it escapes.
fn reverse_pattern(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = vec!['\0'; chars.len()];
    let last = chars.len().saturating_sub(1);
    let mut i = 0;
    while i < chars.len() {
        let at = last - i;
        if chars[i] == '\\' && i != last {
            out[at - 1] = '\\';
            out[at] = chars[i + 1];
            i += 2;
        } else {
            out[at] = chars[i];
            i += 1;
        }
    }
    out.into_iter().collect()
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Step<String> {
    // Regular expressions find the leftmost match; reversing both sides turns
    // "shortest/longest suffix" into "shortest/longest prefix".
    let reversed: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&reverse_pattern(pattern), &reversed, greedy)?;
    Ok(trimmed.chars().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        [("v", "foo/bar/baz.tar.gz"), ("e", ""), ("x", "aXbXc")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expand(word: &str) -> String {
        Lexer::new('\\')
            .process_word(word, &env())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn pattern_operators() {
        assert_eq!(expand("${v#*/}"), "bar/baz.tar.gz");
        assert_eq!(expand("${v##*/}"), "baz.tar.gz");
        assert_eq!(expand("${v%.*}"), "foo/bar/baz.tar");
        assert_eq!(expand("${v%%.*}"), "foo/bar/baz");
        assert_eq!(expand("${v/bar/qux}"), "foo/qux/baz.tar.gz");
        assert_eq!(expand("${x/X/-}"), "a-bXc");
        assert_eq!(expand("${x//X/-}"), "a-b-c");
        assert_eq!(expand("${v#nomatch}"), "foo/bar/baz.tar.gz");
        assert_eq!(expand("${v%\\*}"), "foo/bar/baz.tar.gz");
        assert_eq!(expand("${unset#x}"), "");
        assert!(expand("${v:#x}").starts_with("error"));
        assert!(expand("${v/x").starts_with("error"));
    }

    #[test]
    fn reverse_pattern_keeps_escapes() {
        assert_eq!(reverse_pattern("a\\*c"), "c\\*a");
    }

    #[test]
    fn words_keep_quoted_spaces() {
        let words = Lexer::new('\\')
            .process_words("a \"b c\" d${e}", &env())
            .unwrap();
        assert_eq!(words, ["a", "b c", "d"]);
    }

    #[test]
    fn matches_are_reported() {
        let r = Lexer::new('\\')
            .process_word_with_matches("$v ${nope}", &env())
            .unwrap();
        assert!(r.matched.contains("v"));
        assert!(r.unmatched.contains("nope"));
    }
}
