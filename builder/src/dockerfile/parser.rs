//! Dockerfile text to a list of instruction nodes, as BuildKit's
//! `parser.Parse`: directives, comments, line continuations (with comment
//! and blank lines inside), per-instruction argument splitting, heredoc
//! bodies. Semantics (flags, argument counts) come later, in `instructions`.

use serde::Serialize;

use crate::dockerfile::directives::{CheckDirective, DirectiveParser, Directives};
use crate::dockerfile::heredoc::{heredocs_from_line, Heredoc};
use crate::dockerfile::line_parsers::{self as lp, Parsed};
use crate::error::{Error, ErrorKind, Result};

/// One instruction as written, arguments split but not interpreted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The keyword as written (`run`, `RUN`, `Run`).
    pub keyword: String,
    /// Raw `--name[=value]` flags, in order.
    pub flags: Vec<String>,
    /// Arguments; for ENV and LABEL, triples of key, value and separator
    /// (`=` or empty for the legacy form).
    pub args: Vec<String>,
    /// The arguments came from a JSON array (exec form).
    pub json: bool,
    /// ONBUILD's trigger instruction.
    pub child: Option<Box<Node>>,
    /// Heredoc bodies, in the order they were opened.
    pub heredocs: Vec<Heredoc>,
    /// The joined line (continuations removed).
    pub original: String,
    /// First line, 1-based.
    pub start_line: usize,
    /// Last line, 1-based, including heredoc bodies.
    pub end_line: usize,
    /// Comment lines directly above the instruction.
    pub comments: Vec<String>,
}

impl Node {
    /// The keyword in upper case, as docker prints it.
    pub fn name(&self) -> String {
        self.keyword.to_ascii_uppercase()
    }

    fn can_contain_heredoc(&self) -> bool {
        let node = match (&self.child, self.keyword.eq_ignore_ascii_case("onbuild")) {
            (Some(child), true) => child,
            _ => self,
        };
        let heredoc_keyword = ["add", "copy", "run"]
            .iter()
            .any(|k| node.keyword.eq_ignore_ascii_case(k));
        heredoc_keyword && !node.json
    }
}

/// A problem the parser noticed that does not stop the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParseWarning {
    /// BuildKit's rule name (`NoEmptyContinuation`).
    pub rule: &'static str,
    /// What was found.
    pub message: String,
    /// 1-based line.
    pub line: usize,
}

/// The parsed file.
#[derive(Debug, Clone, Serialize)]
pub struct Ast {
    /// Instructions in file order.
    pub nodes: Vec<Node>,
    /// The directives in effect.
    pub directives: Directives,
    /// Non-fatal findings.
    pub warnings: Vec<ParseWarning>,
}

/// Parses Dockerfile text. `file` names the file in errors.
pub fn parse(file: &str, source: &str) -> Result<Ast> {
    parse_inner(source).map_err(|(err, needle)| err.locate(file, source, needle.as_deref()))
}

type Located<T> = std::result::Result<T, (Error, Option<String>)>;

fn at(line: usize, kind: ErrorKind) -> (Error, Option<String>) {
    (Error::at(line, kind), None)
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

struct LineState {
    directives: Directives,
    parser: DirectiveParser,
}

impl LineState {
    /// BuildKit `processLine`: newline trimmed, optionally leading white
    /// space, directives recorded, comment lines emptied.
    fn process_line<'a>(
        &mut self,
        raw: &'a str,
        strip_left: bool,
    ) -> std::result::Result<(&'a str, bool), ErrorKind> {
        let mut token = trim_newline(raw);
        if strip_left {
            token = token.trim_start();
        }
        let mut found = false;
        if let Some((name, value)) = self.parser.parse_line(token)? {
            found = true;
            match name.as_str() {
                "escape" => {
                    if value != "`" && value != "\\" {
                        return Err(ErrorKind::InvalidEscapeToken { value });
                    }
                    self.directives.escape = value.chars().next().expect("checked above");
                }
                "syntax" => self.directives.syntax = Some(value),
                _ => self.directives.check = CheckDirective::parse(&value)?,
            }
        }
        Ok((if is_comment(token) { "" } else { token }, found))
    }

    /// BuildKit's continuation rule: the escape token at the end of the
    /// line (spaces and tabs after it allowed), unless itself escaped.
    fn trim_continuation<'a>(&self, line: &'a str) -> (&'a str, bool) {
        let escape = self.directives.escape;
        let trimmed = line.trim_end_matches([' ', '\t']);
        let Some(before) = trimmed.strip_suffix(escape) else {
            return (line, true);
        };
        if before.is_empty() || !before.ends_with(escape) {
            return (before, false);
        }
        (line, true)
    }
}

fn parse_inner(source: &str) -> Located<Ast> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let lines: Vec<&str> = source.split_inclusive('\n').collect();
    let mut state = LineState {
        directives: Directives::default(),
        parser: DirectiveParser::default(),
    };
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut current = 0usize;
    let mut next = 0usize;
    while next < lines.len() {
        let raw = lines[next];
        next += 1;
        if is_comment(raw) {
            let after_first: String = raw.chars().skip(1).collect();
            let comment = after_first.trim();
            if comment.is_empty() {
                comments.clear();
            } else {
                comments.push(comment.to_string());
            }
        }
        let (text, is_directive) = state
            .process_line(raw, true)
            .map_err(|k| at(current + 1, k))?;
        if is_directive {
            comments.pop();
        }
        current += 1;
        let start = current;
        let (text, mut end_of_line) = state.trim_continuation(text);
        if end_of_line && text.is_empty() {
            continue;
        }
        let mut line = text.to_string();
        let mut empty_continuation = false;
        while !end_of_line && next < lines.len() {
            let raw = lines[next];
            next += 1;
            let (text, _) = state
                .process_line(raw, false)
                .map_err(|k| at(current + 1, k))?;
            current += 1;
            if is_comment(raw) {
                continue;
            }
            if text.trim_start().is_empty() {
                empty_continuation = true;
                continue;
            }
            let (text, eol) = state.trim_continuation(text);
            end_of_line = eol;
            line.push_str(text);
        }
        if empty_continuation {
            warnings.push(ParseWarning {
                rule: "NoEmptyContinuation",
                message: "Empty continuation line found in: ".to_string() + &line,
                line: current,
            });
        }
        let mut node = node_from_line(&line, state.directives.escape).map_err(|(e, n)| {
            let mut e = e;
            e.location.line = start;
            (e, n)
        })?;
        if node.can_contain_heredoc() && line.contains("<<") {
            let docs = heredocs_from_line(&line).map_err(|e| at(start, e.into()))?;
            for mut doc in docs {
                let mut terminated = false;
                while next < lines.len() {
                    let raw = lines[next];
                    next += 1;
                    current += 1;
                    let mut candidate = trim_newline(raw);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(raw);
                }
                if !terminated {
                    let needle = format!("<<{}", if doc.chomp { "-" } else { "" });
                    return Err((
                        Error::at(start, ErrorKind::UnterminatedHeredoc { name: doc.name }),
                        Some(needle),
                    ));
                }
                node.heredocs.push(doc);
            }
        }
        node.start_line = start;
        node.end_line = current;
        node.comments = std::mem::take(&mut comments);
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(at(current.max(1), ErrorKind::NoInstructions));
    }
    Ok(Ast {
        nodes,
        directives: state.directives,
        warnings,
    })
}

/// BuildKit `newNodeFromLine`: keyword, flags, then the keyword's own
/// argument splitting. Unknown keywords parse with no arguments; they are
/// rejected when instructions are typed.
fn node_from_line(line: &str, escape: char) -> Located<Node> {
    let (keyword, flags, rest) = lp::split_command(line);
    let lower = keyword.to_ascii_lowercase();
    let mut child = None;
    let parsed: std::result::Result<Parsed, ErrorKind> = match lower.as_str() {
        "add" | "copy" | "volume" => lp::parse_maybe_json_to_list(&rest),
        "arg" => Ok(lp::parse_name_or_name_val(&rest, escape)),
        "cmd" | "entrypoint" | "run" | "shell" => lp::parse_maybe_json(&rest),
        "env" => lp::parse_name_val(&rest, "ENV", escape),
        "label" => lp::parse_name_val(&rest, "LABEL", escape),
        "expose" | "from" => Ok(lp::parse_whitespace_list(&rest)),
        "healthcheck" => lp::parse_health_config(&rest),
        "maintainer" | "stopsignal" | "user" | "workdir" => Ok(lp::parse_string(&rest)),
        "onbuild" => {
            if !rest.is_empty() {
                child = Some(Box::new(node_from_line(&rest, escape)?));
            }
            Ok(Parsed::default())
        }
        _ => Ok(Parsed::default()),
    };
    let parsed = parsed.map_err(|k| (Error::at(0, k), Some(keyword.clone())))?;
    Ok(Node {
        keyword,
        flags,
        args: parsed.args,
        json: parsed.json,
        child,
        heredocs: Vec::new(),
        original: line.to_string(),
        start_line: 0,
        end_line: 0,
        comments: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::dump::dump;

    fn dumped(text: &str) -> String {
        dump(&parse("Dockerfile", text).unwrap().nodes)
    }

    #[test]
    fn heredoc_bodies() {
        let ast = parse(
            "Dockerfile",
            "FROM a\nRUN <<EOF\necho hi\nEOF\nRUN <<-X cat\n\tx\n\tX\n",
        )
        .unwrap();
        assert_eq!(ast.nodes[1].heredocs[0].content, "echo hi\n");
        assert_eq!((ast.nodes[1].start_line, ast.nodes[1].end_line), (2, 4));
        assert_eq!(ast.nodes[2].heredocs[0].chomped_content(), "x\n");
    }

    #[test]
    fn unterminated_heredoc_is_an_error() {
        let err = parse("Dockerfile", "FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert!(matches!(err.kind, ErrorKind::UnterminatedHeredoc { .. }));
        assert_eq!((err.location.line, err.location.column), (2, 5));
    }

    #[test]
    fn json_run_has_no_heredoc() {
        let ast = parse("Dockerfile", "FROM a\nRUN [\"<<EOF\"]\n").unwrap();
        assert!(ast.nodes[1].heredocs.is_empty());
    }

    #[test]
    fn backtick_escape() {
        assert_eq!(
            dumped("# escape=`\nFROM a\nRUN dir `\n  c:\\\n"),
            "(from \"a\")\n(run \"dir   c:\\\\\")\n"
        );
    }

    #[test]
    fn directive_after_instruction_is_a_comment() {
        let ast = parse("Dockerfile", "FROM a\n# escape=`\n").unwrap();
        assert_eq!(ast.directives.escape, '\\');
    }
}
