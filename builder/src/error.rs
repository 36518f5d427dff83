//! The frontend's error type: what went wrong, and where in the Dockerfile.

use std::fmt;

use crate::dockerfile::shell::ShellError;

/// A position in a source file, 1-based, as editors count.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Location {
    /// The file name as the user gave it (`Dockerfile`, `build/app.Dockerfile`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// An error of the frontend or the compiler, with its place in the file.
///
/// `Display` gives one line (`Dockerfile:3:1: unknown instruction: RUNN (did
/// you mean RUN?)`); [`Error::render`] adds the source line and a caret.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {kind}")]
pub struct Error {
    /// Where the problem is.
    pub location: Location,
    /// What the problem is.
    #[source]
    pub kind: ErrorKind,
    /// The text of the line at `location`, when known.
    pub line_text: Option<String>,
}

/// `Result` with the frontend's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error at `line` (1-based), column unknown yet.
    pub(crate) fn at(line: usize, kind: ErrorKind) -> Error {
        Error {
            location: Location {
                file: String::new(),
                line,
                column: 1,
            },
            kind,
            line_text: None,
        }
    }

    /// Fills the file name, the column (from `needle`, when found on the
    /// line) and the line text, from the whole source.
    pub(crate) fn locate(mut self, file: &str, source: &str, needle: Option<&str>) -> Error {
        if self.location.file.is_empty() {
            self.location.file = file.to_string();
        }
        if self.line_text.is_none() && self.location.line > 0 {
            if let Some(text) = source.lines().nth(self.location.line - 1) {
                let text = text.trim_end_matches('\r');
                let column = needle
                    .filter(|n| !n.is_empty())
                    .and_then(|n| text.find(n))
                    .or_else(|| text.find(|c: char| !c.is_whitespace()))
                    .map(|byte| text[..byte].chars().count() + 1)
                    .unwrap_or(1);
                if self.location.column <= 1 {
                    self.location.column = column;
                }
                self.line_text = Some(text.to_string());
            }
        }
        self
    }

    /// Several lines: the message, the source line and a caret under the
    /// column, then a hint when the error has one.
    pub fn render(&self) -> String {
        let mut out = format!("{self}\n");
        if let Some(text) = &self.line_text {
            let number = self.location.line.to_string();
            out.push_str(&format!(" {number} | {text}\n"));
            let pad: String = text
                .chars()
                .take(self.location.column.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            out.push_str(&format!(" {} | {pad}^\n", " ".repeat(number.len())));
        }
        out
    }
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

/// What went wrong. Messages follow BuildKit's where BuildKit has one.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("file with no instructions")]
    NoInstructions,
    #[error("invalid escape token '{value}' does not match ` or \\")]
    InvalidEscapeToken { value: String },
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective { name: String },
    #[error(
        "invalid check directive {value:?}: expected skip=<rules>|all and/or error=true|false"
    )]
    InvalidCheckDirective { value: String },
    #[error("unknown instruction: {name}{}", did_you_mean(.suggestion))]
    UnknownInstruction {
        name: String,
        suggestion: Option<String>,
    },
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    #[error("{instruction} must have two arguments")]
    MissingValue { instruction: String },
    #[error("Syntax error - can't find = in {word:?}. Must be of the form: name=value")]
    MissingEquals { word: String },
    #[error("unterminated heredoc {name}")]
    UnterminatedHeredoc { name: String },
    #[error("{instruction} requires {expected}")]
    ArgumentCount {
        instruction: String,
        expected: &'static str,
    },
    #[error("unknown flag: --{flag} for {instruction}{}", did_you_mean(.suggestion))]
    UnknownFlag {
        instruction: String,
        flag: String,
        suggestion: Option<String>,
    },
    #[error("duplicate flag specified: --{flag}")]
    DuplicateFlag { flag: String },
    #[error("missing a value on flag: --{flag}")]
    FlagNeedsValue { flag: String },
    #[error("invalid value {value:?} for --{flag}: expected {expected}")]
    InvalidFlagValue {
        flag: String,
        value: String,
        expected: &'static str,
    },
    #[error("--{flag} is not allowed here: {reason}")]
    FlagNotAllowed { flag: String, reason: &'static str },
    #[error("invalid mount {field:?}: {reason}")]
    InvalidMount { field: String, reason: &'static str },
    #[error(
        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName { name: String },
    #[error("duplicate name {name:?} for build stages")]
    DuplicateStageName { name: String },
    #[error("{instruction} isn't allowed as an ONBUILD trigger")]
    OnbuildNotAllowed { instruction: String },
    #[error("no build stage in current context: {instruction} must come after FROM")]
    BeforeFrom { instruction: String },
    #[error("undefined stage in --from: {name}{}", did_you_mean(.suggestion))]
    UndefinedStage {
        name: String,
        suggestion: Option<String>,
    },
    #[error("target stage {name:?} could not be found{}", did_you_mean(.suggestion))]
    UnknownTarget {
        name: String,
        suggestion: Option<String>,
    },
    #[error("circular dependency between stages at {name:?}")]
    StageCycle { name: String },
    #[error("invalid platform {value:?}: expected os/arch[/variant]")]
    InvalidPlatform { value: String },
    #[error("invalid port {value:?}")]
    InvalidPort { value: String },
    #[error("heredocs are only supported by RUN, COPY and ADD; {instruction} has one")]
    HeredocNotSupported { instruction: String },
    #[error("invalid build argument {text:?}: expected KEY=VALUE")]
    InvalidBuildArg { text: String },
    #[error("reading the config of base image {reference}")]
    ImageConfig {
        reference: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Shell(#[from] ShellError),
}

/// The closest candidate to `word` by edit distance, when it is close enough
/// to be a likely typo (BuildKit suggests within distance 2, case-insensitive).
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let word = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let distance = edit_distance(&word, &candidate.to_ascii_lowercase());
        let limit = if word.len() <= 3 { 1 } else { 2 };
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            current[j + 1] = (previous[j] + cost)
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        assert_eq!(suggest("RUNN", ["RUN", "FROM"]), Some("RUN".into()));
        assert_eq!(suggest("mout", ["mount", "network"]), Some("mount".into()));
        assert_eq!(suggest("xyzzy", ["mount", "network"]), None);
    }

    #[test]
    fn render_puts_a_caret_under_the_column() {
        let err = Error::at(
            2,
            ErrorKind::UnknownInstruction {
                name: "RUNN".into(),
                suggestion: Some("RUN".into()),
            },
        )
        .locate("Dockerfile", "FROM a\n  RUNN x\n", Some("RUNN"));
        assert_eq!(
            err.render(),
            "Dockerfile:2:3: unknown instruction: RUNN (did you mean RUN?)\n 2 |   RUNN x\n   |   ^\n"
        );
    }
}
