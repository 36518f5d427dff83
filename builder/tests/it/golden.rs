//! Golden files under testdata/dockerfile/ for what upstream keeps only in Go
//! code: heredocs, directives, flags, `${v#p}`-family expansion, errors and
//! compiled graphs. `UPDATE_GOLDEN=1 cargo test` rewrites the expectations.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kiln_builder::dockerfile::dump::{dump_node, go_quote};
use kiln_builder::dockerfile::parser::parse;
use kiln_builder::dockerfile::shell::Lexer;
use kiln_builder::graph::output::to_json;
use kiln_builder::{compile, CompileOptions, Dockerfile, NoImages, Platform};

fn testdata() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/dockerfile"
    ))
}

fn cases(kind: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(testdata().join(kind))
        .unwrap_or_else(|e| panic!("reading testdata/dockerfile/{kind}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no cases in {kind}");
    out
}

/// Compares `got` with `dir/expected`, or rewrites it under UPDATE_GOLDEN.
fn check_golden(dir: &Path, got: &str, failures: &mut Vec<String>) {
    let path = dir.join("expected");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).expect("writing golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    if expected != got {
        failures.push(format!(
            "{}:\n--- expected\n{expected}--- got\n{got}",
            path.display()
        ));
    }
}

fn read(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("Dockerfile")).expect("reading Dockerfile")
}

/// AST dump plus what the dump leaves out: directives and heredoc bodies.
#[test]
fn parse_cases() {
    let mut failures = Vec::new();
    for dir in cases("parse") {
        let text = read(&dir);
        let got = match parse("Dockerfile", &text) {
            Err(e) => e.render(),
            Ok(ast) => {
                let mut out = format!(
                    "# syntax={:?} escape={:?} check={:?}\n",
                    ast.directives.syntax, ast.directives.escape, ast.directives.check
                );
                for node in &ast.nodes {
                    let _ = writeln!(
                        out,
                        "{}-{} ({})",
                        node.start_line,
                        node.end_line,
                        dump_node(node)
                    );
                    for h in &node.heredocs {
                        let _ = writeln!(
                            out,
                            "  heredoc name={} fd={} expand={} chomp={} content={}",
                            go_quote(&h.name),
                            h.file_descriptor,
                            h.expand,
                            h.chomp,
                            go_quote(&h.content)
                        );
                    }
                }
                for w in &ast.warnings {
                    let _ = writeln!(out, "warning {} line {}", w.rule, w.line);
                }
                out
            }
        };
        check_golden(&dir, &got, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Parse or compile errors, rendered with the caret.
#[test]
fn error_cases() {
    let mut failures = Vec::new();
    for dir in cases("errors") {
        let text = read(&dir);
        let got = match Dockerfile::parse("Dockerfile", &text) {
            Err(e) => e.render(),
            Ok(df) => match compile(&df, &CompileOptions::default(), &NoImages) {
                Err(e) => e.render(),
                Ok(_) => "no error\n".to_string(),
            },
        };
        check_golden(&dir, &got, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Compiled graphs as JSON (fixed platform so the output is the same on
/// every host).
#[test]
fn graph_cases() {
    let mut failures = Vec::new();
    for dir in cases("graph") {
        let text = read(&dir);
        let df = Dockerfile::parse("Dockerfile", &text)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let options = CompileOptions {
            platform: Some(Platform::parse("linux/amd64").expect("valid platform")),
            build_args: vec![("VERSION".into(), "9.9".into())],
            dockerignore: vec!["*.md".into(), "!README.md".into()],
            ..Default::default()
        };
        let got = match compile(&df, &options, &NoImages) {
            Ok(graph) => to_json(&graph).replace(&Platform::host().to_string(), "HOST") + "\n",
            Err(e) => e.render(),
        };
        check_golden(&dir, &got, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `INPUT | EXPECTED` lines, as upstream's envVarTest, for the pattern
/// operators upstream tests only in Go.
#[test]
fn shell_pattern_vectors() {
    let text =
        std::fs::read_to_string(testdata().join("shell/patterns")).expect("reading patterns");
    let env: Vec<(String, String)> = [
        ("FILE", "archive.tar.gz"),
        ("PATHV", "/usr/local/bin/tool"),
        ("REPEAT", "aXbXcX"),
        ("EMPTY", ""),
        ("STARS", "a*b*c"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lexer = Lexer::new('\\');
    let mut failures = Vec::new();
    let mut count = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (input, expected) = line.split_once('|').expect("INPUT | EXPECTED");
        let (input, expected) = (input.trim(), expected.trim());
        count += 1;
        let got = lexer
            .process_word(input, &env)
            .unwrap_or_else(|_| "error".to_string());
        if got != expected {
            failures.push(format!("{input:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(count >= 30, "only {count} vectors");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
