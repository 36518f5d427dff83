//! AST nodes to typed instructions: flags checked per instruction, argument
//! counts, exec/shell forms, heredoc sources (BuildKit `instructions/parse.go`).
//! Values are still unexpanded; `graph::compile` expands them per stage.

use serde::Serialize;

use crate::dockerfile::flags::{parse_duration, FlagKind, Flags};
use crate::dockerfile::heredoc::{parse_heredoc, Heredoc};
use crate::dockerfile::mounts::{parse_mount, Mount};
use crate::dockerfile::parser::Node;
use crate::error::{suggest, Error, ErrorKind, Result};

/// Every instruction keyword, upper case.
pub const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// One typed instruction with its place in the file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Command {
    /// What it does.
    pub instruction: Instruction,
    /// The keyword as written (for casing checks).
    pub keyword: String,
    /// First line, 1-based.
    pub line: usize,
    /// Last line, 1-based.
    pub end_line: usize,
    /// The joined source text.
    pub original: String,
}

/// A command line in exec (JSON) or shell form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandLine {
    /// `["a", "b"]`: run as is.
    Exec(Vec<String>),
    /// `a b`: run through the stage's SHELL.
    Shell(String),
}

impl CommandLine {
    fn from_node(node: &Node) -> CommandLine {
        if node.json {
            CommandLine::Exec(node.args.clone())
        } else {
            CommandLine::Shell(node.args.join(" "))
        }
    }

    /// True for the exec (JSON) form.
    pub fn is_exec(&self) -> bool {
        matches!(self, CommandLine::Exec(_))
    }
}

/// `key=value` of ENV and LABEL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The key, unexpanded.
    pub key: String,
    /// The value, unexpanded (quotes still in place).
    pub value: String,
    /// Written in the legacy `KEY value` form.
    pub legacy: bool,
}

/// One name of an ARG instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDecl {
    /// The name.
    pub key: String,
    /// The default, unexpanded, when given.
    pub value: Option<String>,
}

/// `FROM [--platform=p] image [AS name]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// Image reference or stage name, unexpanded.
    pub image: String,
    /// Stage name as written.
    pub name: Option<String>,
    /// `AS` as written (for FromAsCasing).
    pub as_keyword: Option<String>,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
}

/// RUN `--network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The builder's default (sandboxed) network.
    Default,
    /// No network at all.
    None,
    /// The host's network namespace.
    Host,
}

/// RUN `--security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Normal confinement.
    Sandbox,
    /// All capabilities (needs an entitlement).
    Insecure,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// The command.
    pub command: CommandLine,
    /// `--mount` values as written (parsed again after expansion).
    pub mounts: Vec<String>,
    /// `--network`.
    pub network: Network,
    /// `--security`.
    pub security: Security,
    /// Heredoc bodies on the line.
    pub heredocs: Vec<Heredoc>,
}

/// A heredoc used as a COPY/ADD source: a file made from inline text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineSource {
    /// File name (the delimiter word).
    pub path: String,
    /// Contents (chomped already for `<<-`).
    pub data: String,
    /// Expand variables in `data`.
    pub expand: bool,
}

/// `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// ADD (URLs, archives, git) rather than COPY.
    pub is_add: bool,
    /// Source paths or URLs, unexpanded.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline_sources: Vec<InlineSource>,
    /// Destination, unexpanded.
    pub dest: String,
    /// `--from` (COPY only).
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// ADD `--checksum`.
    pub checksum: Option<String>,
    /// ADD `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// ADD `--unpack` (None: unpack local archives, not remote ones).
    pub unpack: Option<bool>,
    /// Exec-form JSON was used.
    pub json: bool,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `["NONE"]`, `["CMD", args...]` or `["CMD-SHELL", cmd]`, as in the
    /// image config.
    pub test: Vec<String>,
    /// Nanoseconds; 0 means the default.
    pub interval: i64,
    /// Nanoseconds.
    pub timeout: i64,
    /// Nanoseconds.
    pub start_period: i64,
    /// Nanoseconds.
    pub start_interval: i64,
    /// 0 means the default.
    pub retries: i64,
}

/// Every Dockerfile instruction.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Instruction {
    From(From),
    Run(Run),
    Cmd { command: CommandLine },
    Entrypoint { command: CommandLine },
    Label { pairs: Vec<KeyValue> },
    Maintainer { name: String },
    Expose { ports: Vec<String> },
    Env { pairs: Vec<KeyValue> },
    Add(Copy),
    Copy(Copy),
    Volume { paths: Vec<String> },
    User { user: String },
    Workdir { path: String },
    Arg { args: Vec<ArgDecl> },
    Onbuild { expression: String },
    StopSignal { signal: String },
    Healthcheck(Healthcheck),
    Shell { shell: Vec<String> },
}

const NO_FLAGS: &[(&str, FlagKind)] = &[];
const FROM_FLAGS: &[(&str, FlagKind)] = &[("platform", FlagKind::String)];
const RUN_FLAGS: &[(&str, FlagKind)] = &[
    ("mount", FlagKind::List),
    ("network", FlagKind::String),
    ("security", FlagKind::String),
];
const COPY_FLAGS: &[(&str, FlagKind)] = &[
    ("from", FlagKind::String),
    ("chown", FlagKind::String),
    ("chmod", FlagKind::String),
    ("link", FlagKind::Bool),
    ("parents", FlagKind::Bool),
    ("exclude", FlagKind::List),
];
const ADD_FLAGS: &[(&str, FlagKind)] = &[
    ("chown", FlagKind::String),
    ("chmod", FlagKind::String),
    ("link", FlagKind::Bool),
    ("parents", FlagKind::Bool),
    ("exclude", FlagKind::List),
    ("checksum", FlagKind::String),
    ("keep-git-dir", FlagKind::Bool),
    ("unpack", FlagKind::Bool),
];
const HEALTHCHECK_FLAGS: &[(&str, FlagKind)] = &[
    ("interval", FlagKind::String),
    ("timeout", FlagKind::String),
    ("start-period", FlagKind::String),
    ("start-interval", FlagKind::String),
    ("retries", FlagKind::String),
];

/// An error at `node`'s line, the caret on `needle` when it is on that line.
pub(crate) struct Failure {
    pub(crate) error: Error,
    pub(crate) needle: Option<String>,
}

impl Failure {
    fn new(node: &Node, kind: ErrorKind, needle: Option<String>) -> Failure {
        Failure {
            error: Error::at(node.start_line, kind),
            needle: needle.or_else(|| Some(node.keyword.clone())),
        }
    }
}

fn count_error(node: &Node, expected: &'static str) -> Failure {
    Failure::new(
        node,
        ErrorKind::ArgumentCount {
            instruction: node.name(),
            expected,
        },
        None,
    )
}

/// Types one node (and an ONBUILD trigger's child, for validation only).
pub(crate) fn parse_command(node: &Node) -> std::result::Result<Command, Failure> {
    let name = node.name();
    let spec = match name.as_str() {
        "FROM" => FROM_FLAGS,
        "RUN" => RUN_FLAGS,
        "COPY" => COPY_FLAGS,
        "ADD" => ADD_FLAGS,
        "HEALTHCHECK" => HEALTHCHECK_FLAGS,
        n if KEYWORDS.contains(&n) => NO_FLAGS,
        _ => {
            return Err(Failure::new(
                node,
                ErrorKind::UnknownInstruction {
                    name: node.keyword.clone(),
                    suggestion: suggest(&node.keyword, KEYWORDS.iter().copied()),
                },
                None,
            ))
        }
    };
    let flags = Flags::parse(&name, &node.flags, spec).map_err(|kind| {
        let needle = match &kind {
            ErrorKind::UnknownFlag { flag, .. }
            | ErrorKind::DuplicateFlag { flag }
            | ErrorKind::FlagNeedsValue { flag }
            | ErrorKind::InvalidFlagValue { flag, .. } => Some(format!("--{flag}")),
            _ => None,
        };
        Failure::new(node, kind, needle)
    })?;
    if !node.heredocs.is_empty() && !matches!(name.as_str(), "RUN" | "COPY" | "ADD" | "ONBUILD") {
        return Err(Failure::new(
            node,
            ErrorKind::HeredocNotSupported { instruction: name },
            None,
        ));
    }
    let args = &node.args;
    let instruction = match name.as_str() {
        "FROM" => parse_from(node, &flags)?,
        "RUN" => parse_run(node, &flags)?,
        "CMD" => Instruction::Cmd {
            command: CommandLine::from_node(node),
        },
        "ENTRYPOINT" => Instruction::Entrypoint {
            command: CommandLine::from_node(node),
        },
        "LABEL" | "ENV" => {
            if args.is_empty() {
                return Err(count_error(node, "at least one argument"));
            }
            let pairs = args
                .chunks(3)
                .map(|c| KeyValue {
                    key: c[0].clone(),
                    value: c.get(1).cloned().unwrap_or_default(),
                    legacy: c.get(2).is_some_and(String::is_empty),
                })
                .collect();
            if name == "ENV" {
                Instruction::Env { pairs }
            } else {
                Instruction::Label { pairs }
            }
        }
        "MAINTAINER" => Instruction::Maintainer {
            name: single(node)?,
        },
        "EXPOSE" => {
            if args.is_empty() {
                return Err(count_error(node, "at least one argument"));
            }
            Instruction::Expose {
                ports: args.clone(),
            }
        }
        "ADD" | "COPY" => parse_copy(node, &flags, name == "ADD")?,
        "VOLUME" => {
            if args.is_empty() {
                return Err(count_error(node, "at least one argument"));
            }
            if args.iter().any(|a| a.trim().is_empty()) {
                return Err(count_error(node, "non-empty paths"));
            }
            Instruction::Volume {
                paths: args.clone(),
            }
        }
        "USER" => Instruction::User {
            user: single(node)?,
        },
        "WORKDIR" => Instruction::Workdir {
            path: single(node)?,
        },
        "STOPSIGNAL" => Instruction::StopSignal {
            signal: single(node)?,
        },
        "ARG" => {
            if args.is_empty() {
                return Err(count_error(node, "at least one argument"));
            }
            let mut decls = Vec::new();
            for word in args {
                let (key, value) = match word.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (word.clone(), None),
                };
                if key.is_empty() {
                    return Err(count_error(node, "a name before '='"));
                }
                decls.push(ArgDecl { key, value });
            }
            Instruction::Arg { args: decls }
        }
        "ONBUILD" => {
            let Some(child) = &node.child else {
                return Err(count_error(node, "at least one argument"));
            };
            let trigger = child.name();
            if matches!(trigger.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(Failure::new(
                    node,
                    ErrorKind::OnbuildNotAllowed {
                        instruction: trigger,
                    },
                    Some(child.keyword.clone()),
                ));
            }
            parse_command(child)?;
            let expression = strip_keyword(&node.original);
            Instruction::Onbuild { expression }
        }
        "HEALTHCHECK" => parse_healthcheck(node, &flags)?,
        "SHELL" => {
            if !node.json {
                return Err(count_error(node, "the arguments to be in JSON form"));
            }
            if args.is_empty() {
                return Err(count_error(node, "at least one argument"));
            }
            Instruction::Shell {
                shell: args.clone(),
            }
        }
        _ => unreachable!("keyword list checked above"),
    };
    Ok(Command {
        instruction,
        keyword: node.keyword.clone(),
        line: node.start_line,
        end_line: node.end_line,
        original: node.original.clone(),
    })
}

/// The text after the keyword (`ONBUILD RUN x` -> `RUN x`).
fn strip_keyword(original: &str) -> String {
    let trimmed = original.trim_start();
    let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
    trimmed[end..].trim_start().to_string()
}

fn single(node: &Node) -> std::result::Result<String, Failure> {
    match node.args.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(count_error(node, "exactly one argument")),
    }
}

fn parse_from(node: &Node, flags: &Flags) -> std::result::Result<Instruction, Failure> {
    let args = &node.args;
    let (name, as_keyword) = match args.len() {
        1 => (None, None),
        3 if args[1].eq_ignore_ascii_case("as") => {
            let name = args[2].to_ascii_lowercase();
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && name.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if !valid {
                return Err(Failure::new(
                    node,
                    ErrorKind::InvalidStageName {
                        name: args[2].clone(),
                    },
                    Some(args[2].clone()),
                ));
            }
            (Some(args[2].clone()), Some(args[1].clone()))
        }
        _ => return Err(count_error(node, "either one or three arguments")),
    };
    Ok(Instruction::From(From {
        image: args[0].clone(),
        name,
        as_keyword,
        platform: flags.string("platform"),
    }))
}

fn parse_run(node: &Node, flags: &Flags) -> std::result::Result<Instruction, Failure> {
    if node.args.is_empty() {
        return Err(count_error(node, "at least one argument"));
    }
    let network = match flags.string("network").as_deref() {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(other) => {
            return Err(Failure::new(
                node,
                ErrorKind::InvalidFlagValue {
                    flag: "network".into(),
                    value: other.into(),
                    expected: "default, none or host",
                },
                Some("--network".into()),
            ))
        }
    };
    let security = match flags.string("security").as_deref() {
        None | Some("sandbox") => Security::Sandbox,
        Some("insecure") => Security::Insecure,
        Some(other) => {
            return Err(Failure::new(
                node,
                ErrorKind::InvalidFlagValue {
                    flag: "security".into(),
                    value: other.into(),
                    expected: "sandbox or insecure",
                },
                Some("--security".into()),
            ))
        }
    };
    let mounts = flags.list("mount");
    for mount in &mounts {
        check_mount(mount).map_err(|kind| Failure::new(node, kind, Some("--mount".into())))?;
    }
    Ok(Instruction::Run(Run {
        command: CommandLine::from_node(node),
        mounts,
        network,
        security,
        heredocs: node.heredocs.clone(),
    }))
}

/// Validates a mount's keys before variables are known.
fn check_mount(text: &str) -> std::result::Result<Mount, ErrorKind> {
    parse_mount(text, &mut |v: &str| Ok(v.to_string()))
}

fn parse_copy(
    node: &Node,
    flags: &Flags,
    is_add: bool,
) -> std::result::Result<Instruction, Failure> {
    let name = node.name();
    if node.args.len() < 2 {
        return Err(count_error(node, "at least two arguments, but only one was provided. Destination could not be determined"));
    }
    let (sources, dest) = node.args.split_at(node.args.len() - 1);
    let dest = dest[0].clone();
    if !node.json && parse_heredoc(&dest).ok().flatten().is_some() {
        return Err(count_error(node, "a destination that is not a heredoc"));
    }
    let mut paths = Vec::new();
    let mut inline_sources = Vec::new();
    for source in sources {
        let heredoc = if node.json {
            None
        } else {
            parse_heredoc(source).ok().flatten()
        };
        match heredoc {
            Some(opener) => {
                let body = node.heredocs.iter().find(|h| h.name == opener.name);
                let data = body.map(|h| h.content.clone()).unwrap_or_default();
                let data = if opener.chomp {
                    crate::dockerfile::heredoc::chomp(&data)
                } else {
                    data
                };
                inline_sources.push(InlineSource {
                    path: opener.name,
                    data,
                    expand: opener.expand,
                });
            }
            None => paths.push(source.clone()),
        }
    }
    let copy = Copy {
        is_add,
        sources: paths,
        inline_sources,
        dest,
        from: if is_add { None } else { flags.string("from") },
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link"),
        parents: flags.bool("parents"),
        exclude: flags.list("exclude"),
        checksum: if is_add {
            flags.string("checksum")
        } else {
            None
        },
        keep_git_dir: is_add && flags.bool("keep-git-dir"),
        unpack: if is_add && node.flags.iter().any(|f| f.starts_with("--unpack")) {
            Some(flags.bool("unpack"))
        } else {
            None
        },
        json: node.json,
    };
    let _ = name;
    Ok(if is_add {
        Instruction::Add(copy)
    } else {
        Instruction::Copy(copy)
    })
}

fn parse_healthcheck(node: &Node, flags: &Flags) -> std::result::Result<Instruction, Failure> {
    let args = &node.args;
    let Some(kind) = args.first() else {
        return Err(count_error(node, "an argument"));
    };
    let test = match kind.to_ascii_uppercase().as_str() {
        "NONE" => {
            if args.len() > 1 || !node.flags.is_empty() {
                return Err(count_error(node, "no other arguments or flags with NONE"));
            }
            vec!["NONE".to_string()]
        }
        "CMD" => {
            let rest = &args[1..];
            if rest.is_empty() || (!node.json && rest.iter().all(|a| a.trim().is_empty())) {
                return Err(count_error(node, "a command after CMD"));
            }
            if node.json {
                let mut test = vec!["CMD".to_string()];
                test.extend(rest.iter().cloned());
                test
            } else {
                vec!["CMD-SHELL".to_string(), rest.join(" ")]
            }
        }
        _ => return Err(count_error(node, "a type of CMD or NONE")),
    };
    let duration = |flag: &'static str| -> std::result::Result<i64, Failure> {
        let Some(text) = flags.string(flag) else {
            return Ok(0);
        };
        let bad = || {
            Failure::new(
                node,
                ErrorKind::InvalidFlagValue {
                    flag: flag.to_string(),
                    value: text.clone(),
                    expected: "a duration of 0 or at least 1ms, like 30s",
                },
                Some(format!("--{flag}")),
            )
        };
        let nanos = parse_duration(&text).ok_or_else(bad)?;
        if nanos < 0 || (nanos != 0 && nanos < 1_000_000) {
            return Err(bad());
        }
        Ok(nanos)
    };
    let retries = match flags.string("retries") {
        None => 0,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n >= 0 => n,
            _ => {
                return Err(Failure::new(
                    node,
                    ErrorKind::InvalidFlagValue {
                        flag: "retries".into(),
                        value: text,
                        expected: "a non-negative integer",
                    },
                    Some("--retries".into()),
                ))
            }
        },
    };
    Ok(Instruction::Healthcheck(Healthcheck {
        test,
        interval: duration("interval")?,
        timeout: duration("timeout")?,
        start_period: duration("start-period")?,
        start_interval: duration("start-interval")?,
        retries,
    }))
}

/// Types one node, with a located error.
pub fn parse_node(file: &str, source: &str, node: &Node) -> Result<Command> {
    parse_command(node).map_err(|f| f.error.locate(file, source, f.needle.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parser::parse;

    fn one(text: &str) -> Result<Command> {
        let full = format!("FROM a\n{text}\n");
        let ast = parse("Dockerfile", &full)?;
        parse_node("Dockerfile", &full, &ast.nodes[1])
    }

    #[test]
    fn unknown_instruction_suggests() {
        let e = one("RUNN echo").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dockerfile:2:1: unknown instruction: RUNN (did you mean RUN?)"
        );
    }

    #[test]
    fn unknown_flag_points_at_it() {
        let e = one("RUN --mout=type=cache,target=/x echo").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dockerfile:2:5: unknown flag: --mout for RUN (did you mean --mount?)"
        );
    }

    #[test]
    fn copy_flags_and_heredoc_sources() {
        let full =
            "FROM a\nCOPY --chmod=755 --exclude=*.md --exclude=x <<one src /dst/\nhello\none\n";
        let ast = parse("Dockerfile", full).unwrap();
        let c = parse_node("Dockerfile", full, &ast.nodes[1]).unwrap();
        let Instruction::Copy(copy) = c.instruction else {
            panic!()
        };
        assert_eq!(copy.sources, ["src"]);
        assert_eq!(copy.inline_sources[0].data, "hello\n");
        assert_eq!(copy.exclude, ["*.md", "x"]);
        assert_eq!(copy.chmod.as_deref(), Some("755"));
    }

    #[test]
    fn add_rejects_from() {
        assert!(one("ADD --from=x a b").is_err());
        assert!(one("ADD --checksum=sha256:00 --keep-git-dir --unpack=false a b").is_ok());
    }

    #[test]
    fn healthcheck_forms() {
        let c = one("HEALTHCHECK --interval=5s --retries=3 CMD curl -f x").unwrap();
        let Instruction::Healthcheck(h) = c.instruction else {
            panic!()
        };
        assert_eq!(h.test, ["CMD-SHELL", "curl -f x"]);
        assert_eq!((h.interval, h.retries), (5_000_000_000, 3));
        assert!(one("HEALTHCHECK --interval=5 CMD x").is_err());
        assert!(one("HEALTHCHECK CONNECT TCP 7000").is_err());
        assert!(one("HEALTHCHECK NONE").is_ok());
    }

    #[test]
    fn from_forms() {
        assert!(one("FROM a AS b c").is_err());
        assert!(one("FROM a AS 1b").is_err());
        let c = one("FROM --platform=linux/arm64 a as Build").unwrap();
        let Instruction::From(f) = c.instruction else {
            panic!()
        };
        assert_eq!(
            (f.name.as_deref(), f.platform.as_deref()),
            (Some("Build"), Some("linux/arm64"))
        );
    }

    #[test]
    fn onbuild_rules() {
        assert!(one("ONBUILD FROM x").is_err());
        let c = one("ONBUILD RUN echo hi").unwrap();
        assert_eq!(
            c.instruction,
            Instruction::Onbuild {
                expression: "RUN echo hi".into()
            }
        );
    }

    #[test]
    fn run_flags() {
        assert!(one("RUN --network=sideways echo").is_err());
        assert!(one("RUN --mount=type=cache echo").is_err());
        assert!(
            one("RUN --mount=type=cache,target=/c --network=none --security=insecure echo").is_ok()
        );
        assert!(one("CMD --doit echo").is_err());
    }
}
