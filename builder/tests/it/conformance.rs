//! BuildKit's own parser and shell-lexer test data (see
//! shared/conformance/buildkit/README.md for the formats).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kiln_builder::dockerfile::dump::dump;
use kiln_builder::dockerfile::parser::parse;
use kiln_builder::dockerfile::shell::Lexer;

fn conformance_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/buildkit"
    ));
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!(
            "conformance data missing at {} (required under CI)",
            dir.display()
        );
    }
    eprintln!("skipping: conformance data not found at {}", dir.display());
    None
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("reading conformance dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

#[test]
fn parser_testfiles() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let mut failures = Vec::new();
    let all = cases(&root.join("parser/testfiles"));
    for case in &all {
        let text = std::fs::read_to_string(case.join("Dockerfile")).expect("reading Dockerfile");
        let expected = std::fs::read_to_string(case.join("result"))
            .expect("reading result")
            .replace("\r\n", "\n");
        match parse("Dockerfile", &text) {
            Ok(ast) => {
                let got = dump(&ast.nodes);
                if got != expected {
                    failures.push(format!(
                        "{}:\n--- expected\n{expected}--- got\n{got}",
                        case.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: {e}", case.display())),
        }
    }
    assert_eq!(all.len(), 33, "expected 33 cases");
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn parser_negative() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let all = cases(&root.join("parser/testfiles-negative"));
    assert_eq!(all.len(), 4);
    for case in all {
        let text = std::fs::read_to_string(case.join("Dockerfile")).unwrap_or_default();
        assert!(
            parse("Dockerfile", &text).is_err(),
            "{} parsed",
            case.display()
        );
    }
}

#[test]
fn parser_line_numbers() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let text =
        std::fs::read_to_string(root.join("parser/testfile-line/Dockerfile")).expect("reading");
    let ast = parse("Dockerfile", &text).expect("parses");
    let spans: Vec<(usize, usize)> = ast
        .nodes
        .iter()
        .map(|n| (n.start_line, n.end_line))
        .collect();
    assert_eq!(spans, [(5, 5), (11, 12), (17, 31)]);
}

fn base_env() -> HashMap<String, String> {
    [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn shell_env_var_vectors() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let text = std::fs::read_to_string(root.join("shell/envVarTest")).expect("reading");
    let env = base_env();
    let lexer = Lexer::new('\\');
    let (mut run, mut failures) = (0, Vec::new());
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(fields.len(), 3, "bad vector line {line:?}");
        if fields[0] == "W" {
            continue;
        }
        run += 1;
        let got = match lexer.process_word(fields[1], &env) {
            Ok(v) => v,
            Err(_) => "error".to_string(),
        };
        if got != fields[2] {
            failures.push(format!(
                "{:?}: expected {:?}, got {:?}",
                fields[1], fields[2], got
            ));
        }
    }
    assert_eq!(run, 228);
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn shell_words_vectors() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let text = std::fs::read_to_string(root.join("shell/wordsTest")).expect("reading");
    let mut env: Vec<(String, String)> = Vec::new();
    let lexer = Lexer::new('\\');
    let (mut run, mut failures) = (0, Vec::new());
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let (k, v) = rest.trim_start().split_once('=').expect("ENV k=v");
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let (input, expected) = line.split_once('|').expect("one |");
        let expected: Vec<String> = expected.trim_start().split(',').map(String::from).collect();
        run += 1;
        let got = match lexer.process_words(input.trim(), &env) {
            Ok(words) => words,
            Err(_) => vec!["error".to_string()],
        };
        if got != expected {
            failures.push(format!("{input:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert_eq!(run, 24);
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
