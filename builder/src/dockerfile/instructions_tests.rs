//! Instruction typing: flags, forms, argument counts, errors.

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
    let full = "FROM a\nCOPY --chmod=755 --exclude=*.md --exclude=x <<one src /dst/\nhello\none\n";
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
fn blank_names() {
    assert!(one("ENV =x").is_err());
    assert!(one("LABEL =x").is_err());
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
