//! No input may panic the frontend: random and mutated Dockerfiles (the
//! conformance files and the golden inputs cut, spliced and garbled) must
//! give an Ok or an Err.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use kiln_builder::dockerfile::dockerignore::{read_patterns, Matcher};
use kiln_builder::dockerfile::dump::dump;
use kiln_builder::dockerfile::parser::parse;
use kiln_builder::dockerfile::shell::Lexer;
use kiln_builder::{compile_with_problems, lint, CompileOptions, Dockerfile, NoImages};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CASES: usize = 4000;

const SNIPPETS: &[&str] = &[
    "\\",
    "`",
    "\"",
    "'",
    "$",
    "${",
    "}",
    "${a:-b}",
    "${a#*}",
    "${a//x/y}",
    "<<",
    "<<-EOF",
    "<<'E'",
    "EOF",
    "\n",
    "\r\n",
    "\t",
    " ",
    "[",
    "]",
    "[\"a\",",
    "#",
    "# escape=`\n",
    "# syntax=x\n",
    "# check=error=true\n",
    "=",
    "--",
    "--mount=type=cache,target=/x",
    "--from=0",
    "--chmod=",
    "--platform=$BUILDPLATFORM",
    "FROM ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ONBUILD ",
    "ARG ",
    "ENV ",
    "LABEL ",
    "HEALTHCHECK ",
    "SHELL ",
    "AS ",
    "é",
    "♥",
    "\u{0}",
    "\u{feff}",
    "\u{a0}",
    "\u{85}",
    "🦀",
];

fn corpus() -> Vec<String> {
    let mut out = vec![
        "FROM a AS b\nRUN <<EOF\necho\nEOF\nCOPY --from=b <<X /y\n$A\nX\n".to_string(),
        "ARG V=1\nFROM x:$V\nENV a=$V b=${V:+set}\nWORKDIR rel\nEXPOSE 80/udp\nCMD [\"a\"]\n"
            .to_string(),
    ];
    let roots = [
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/conformance/buildkit/parser"
        ),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/dockerfile"),
    ];
    for root in roots {
        collect(Path::new(root), &mut out);
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.file_name().is_some_and(|n| n == "Dockerfile") {
            if let Ok(text) = std::fs::read_to_string(&path) {
                out.push(text);
            }
        }
    }
}

fn boundary(text: &str, rng: &mut StdRng) -> usize {
    if text.is_empty() {
        return 0;
    }
    let mut at = rng.random_range(0..=text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn mutate(corpus: &[String], rng: &mut StdRng) -> String {
    let mut text = corpus[rng.random_range(0..corpus.len())].clone();
    for _ in 0..rng.random_range(1..6) {
        match rng.random_range(0..6) {
            0 => {
                let at = boundary(&text, rng);
                text.truncate(at);
            }
            1 => {
                let other = &corpus[rng.random_range(0..corpus.len())];
                let (a, b) = (boundary(&text, rng), boundary(other, rng));
                text = format!("{}{}", &text[..a], &other[b..]);
            }
            2 | 3 => {
                let at = boundary(&text, rng);
                let snippet = SNIPPETS[rng.random_range(0..SNIPPETS.len())];
                text.insert_str(at, snippet);
            }
            4 => {
                let (a, b) = (boundary(&text, rng), boundary(&text, rng));
                let (a, b) = (a.min(b), a.max(b));
                text.replace_range(a..b, "");
            }
            _ => {
                let len = rng.random_range(0..40);
                let random: String = (0..len)
                    .map(|_| char::from_u32(rng.random_range(0..0x3000)).unwrap_or('x'))
                    .collect();
                let at = boundary(&text, rng);
                text.insert_str(at, &random);
            }
        }
    }
    text
}

fn exercise(text: &str) {
    if let Ok(ast) = parse("Dockerfile", text) {
        let _ = dump(&ast.nodes);
    }
    if let Ok(df) = Dockerfile::parse("Dockerfile", text) {
        let _ = lint(&df);
        let options = CompileOptions {
            all_stages: true,
            build_args: vec![("V".into(), "2".into())],
            ..Default::default()
        };
        if let Ok((graph, _)) = compile_with_problems(&df, &options, &NoImages) {
            let _ = kiln_builder::graph::output::to_dot(&graph);
        }
    }
    let env = vec![("a".to_string(), "xyz".to_string())];
    let _ = Lexer::new('\\').process_words(text, &env);
    let _ = Lexer::new('`').process_word(text, &env);
    if let Ok(m) = Matcher::new(&read_patterns(text)) {
        let _ = m.matches("a/b/c");
    }
}

#[test]
fn random_and_mutated_dockerfiles_never_panic() {
    let corpus = corpus();
    assert!(corpus.len() > 2);
    let mut rng = StdRng::seed_from_u64(0x6b696c6e);
    for case in 0..CASES {
        let text = mutate(&corpus, &mut rng);
        if catch_unwind(AssertUnwindSafe(|| exercise(&text))).is_err() {
            panic!("case {case} panicked on input {text:?}");
        }
    }
}
