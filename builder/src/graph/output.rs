//! Printing the graph for people: Graphviz DOT (`| dot -Tsvg`) and JSON.

use std::fmt::Write as _;

use crate::graph::ops::{FileAction, Graph, Op};

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..12.min(hex.len())]
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn kind(op: &Op) -> String {
    match op {
        Op::Image {
            reference,
            platform,
        } => format!("image {reference} ({platform})"),
        Op::Context { name, .. } => format!("context {name}"),
        Op::Exec(_) => "exec".to_string(),
        Op::File(f) => {
            let names: Vec<&str> = f
                .actions
                .iter()
                .map(|a| match a {
                    FileAction::Copy { .. } => "copy",
                    FileAction::Mkfile { .. } => "mkfile",
                    FileAction::Mkdir { .. } => "mkdir",
                })
                .collect();
            format!("file {}", names.join("+"))
        }
    }
}

/// The graph in Graphviz DOT: one box per op, one edge per input (labelled
/// with its role), one ellipse per stage pointing at its result.
pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::from(
        "digraph build {\n  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];\n",
    );
    for (id, node) in graph.nodes.iter().enumerate() {
        let label = format!(
            "{}\\n{} {}",
            escape(&node.description),
            escape(&kind(&node.op)),
            short(&node.digest)
        );
        let _ = writeln!(out, "  n{id} [label=\"{label}\"];");
    }
    for (id, node) in graph.nodes.iter().enumerate() {
        for input in &node.inputs {
            let _ = writeln!(
                out,
                "  n{} -> n{id} [label=\"{}\"];",
                input.node,
                escape(&input.role)
            );
        }
    }
    for stage in &graph.stages {
        let name = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        let target = if stage.index == graph.target {
            ", penwidth=2"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  s{} [label=\"{}\", shape=ellipse{target}];",
            stage.index,
            escape(&name)
        );
        if let Some(root) = stage.root {
            let _ = writeln!(out, "  n{root} -> s{};", stage.index);
        }
    }
    out.push_str("}\n");
    out
}

/// The graph as pretty JSON (nodes with ops, inputs and digests; stages with
/// their image config).
pub fn to_json(graph: &Graph) -> String {
    serde_json::to_string_pretty(graph).expect("the graph serializes to JSON")
}
