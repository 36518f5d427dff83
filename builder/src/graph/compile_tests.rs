//! Compile tests: ARG scoping, ONBUILD, heredocs, mounts, dedup, history.

use super::*;
use crate::graph::image::NoImages;
use crate::graph::ops::ExecOp;

/// A fixed set of base image configs.
struct Images(Vec<(&'static str, ImageConfig)>);

impl ImageSource for Images {
    fn image_config(
        &self,
        reference: &str,
        _platform: &str,
    ) -> std::result::Result<Option<ImageConfig>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self
            .0
            .iter()
            .find(|(r, _)| *r == reference)
            .map(|(_, c)| c.clone()))
    }
}

fn build(text: &str, options: CompileOptions) -> Result<(Graph, Vec<Problem>)> {
    let df = Dockerfile::parse("Dockerfile", text)?;
    compile_with_problems(&df, &options, &NoImages)
}

fn graph(text: &str) -> Graph {
    build(text, CompileOptions::default()).unwrap().0
}

fn exec(graph: &Graph, n: usize) -> &ExecOp {
    graph
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Exec(e) => Some(e),
            _ => None,
        })
        .nth(n)
        .expect("an exec node")
}

fn history(graph: &Graph) -> Vec<String> {
    graph
        .target_stage()
        .config
        .history
        .iter()
        .map(|h| h.created_by.clone())
        .collect()
}

#[test]
fn run_history_and_env() {
    let g = graph("FROM alpine\nARG V=2\nENV A=1\nRUN echo $A\n");
    assert_eq!(
        history(&g),
        [
            "ARG V=2",
            "ENV A=1",
            "RUN |1 V=2 /bin/sh -c echo $A # buildkit"
        ]
    );
    let e = exec(&g, 0);
    assert_eq!(e.args, ["/bin/sh", "-c", "echo $A"]);
    assert!(e.env.contains(&"A=1".to_string()) && e.env.contains(&"V=2".to_string()));
    assert!(e.env.iter().any(|v| v.starts_with("PATH=")));
    assert_eq!(e.cwd, "/");
}

#[test]
fn valueless_and_redeclared_args_in_run_history() {
    // As BuildKit: every declared ARG is in RUN's prefix (`Y=` without a
    // value), once, at its first place; declaring one again without a
    // value keeps its value.
    let g = graph("FROM alpine\nARG X=1\nARG Y\nARG Z=3\nARG X\nRUN echo $X $Y\n");
    assert_eq!(
        history(&g).last().unwrap(),
        "RUN |3 X=1 Y= Z=3 /bin/sh -c echo $X $Y # buildkit"
    );
    let e = exec(&g, 0);
    assert!(e.env.contains(&"X=1".to_string()), "{:?}", e.env);
    assert!(!e.env.iter().any(|v| v.starts_with("Y=")), "{:?}", e.env);
    let g = graph("FROM alpine\nARG X=1\nARG X=2\nRUN true\n");
    assert_eq!(
        history(&g).last().unwrap(),
        "RUN |1 X=2 /bin/sh -c true # buildkit"
    );
}

#[test]
fn each_instruction_sees_values_from_before_it() {
    let g = graph("FROM a\nENV a=1\nENV a=2 b=$a\n");
    let env = &g.target_stage().config.env;
    assert!(env.contains(&"b=1".to_string()), "{env:?}");
}

#[test]
fn global_args_scope() {
    let text = "ARG TAG=3.20\nARG UNUSED=x\nFROM alpine:$TAG\nARG TAG\nRUN echo $TAG\nLABEL u=\"$UNUSED\"\n";
    let (g, problems) = build(text, CompileOptions::default()).unwrap();
    assert!(matches!(&g.nodes[0].op, Op::Image { reference, .. } if reference == "alpine:3.20"));
    assert!(exec(&g, 0).env.contains(&"TAG=3.20".to_string()));
    assert_eq!(
        g.target_stage().config.labels["u"],
        "",
        "global ARG not declared in the stage"
    );
    assert!(problems
        .iter()
        .any(|p| p.rule == "UndefinedVar" && p.message.contains("$UNUSED")));
    let opts = CompileOptions {
        build_args: vec![("TAG".into(), "edge".into())],
        ..Default::default()
    };
    let (g, _) = build(text, opts).unwrap();
    assert!(matches!(&g.nodes[0].op, Op::Image { reference, .. } if reference == "alpine:edge"));
}

#[test]
fn predefined_platform_args() {
    let opts = CompileOptions {
        platform: Some(Platform::parse("linux/arm64").unwrap()),
        ..Default::default()
    };
    let (g, _) = build(
        "FROM --platform=$BUILDPLATFORM a\nARG TARGETARCH\nRUN echo $TARGETARCH\n",
        opts,
    )
    .unwrap();
    assert!(exec(&g, 0).env.contains(&"TARGETARCH=arm64".to_string()));
    assert_eq!(g.target_stage().platform, Platform::host());
}

#[test]
fn only_needed_stages_and_shared_nodes() {
    let text = "FROM a AS one\nRUN make\nFROM a AS two\nRUN make\nFROM b AS unused\nRUN x\nFROM c\nCOPY --from=one /o /o\nCOPY --from=two /o /p\n";
    let g = graph(text);
    let indexes: Vec<usize> = g.stages.iter().map(|s| s.index).collect();
    assert_eq!(indexes, [0, 1, 3]);
    let execs = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Exec(_)))
        .count();
    assert_eq!(execs, 1, "identical RUN on identical base is one node");
    assert_eq!(g.stages[0].root, g.stages[1].root);
    for (i, node) in g.nodes.iter().enumerate() {
        assert!(
            node.inputs.iter().all(|input| input.node < i),
            "inputs come first"
        );
    }
}

#[test]
fn digests_are_deterministic_and_input_sensitive() {
    let a = graph("FROM a\nRUN x\n");
    let b = graph("FROM a\nRUN x\n");
    let c = graph("FROM b\nRUN x\n");
    assert_eq!(a.nodes[1].digest, b.nodes[1].digest);
    assert_ne!(a.nodes[1].digest, c.nodes[1].digest);
    assert!(a.nodes[1].digest.starts_with("sha256:") && a.nodes[1].digest.len() == 71);
}

#[test]
fn undefined_stage_in_from() {
    let e = build(
        "FROM a AS build\nFROM b\nCOPY --from=biuld /x /x\n",
        CompileOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:3:6: undefined stage in --from: biuld (did you mean build?)"
    );
    let e = build("FROM a\nCOPY --from=3 /x /x\n", CompileOptions::default()).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::UndefinedStage { .. }));
    let (g, _) = build(
        "FROM a\nCOPY --from=nginx:latest /x /x\n",
        CompileOptions::default(),
    )
    .unwrap();
    assert!(g
        .nodes
        .iter()
        .any(|n| matches!(&n.op, Op::Image { reference, .. } if reference == "nginx:latest")));
}

#[test]
fn target_selects_stage() {
    let opts = CompileOptions {
        target: Some("build".into()),
        ..Default::default()
    };
    let (g, _) = build("FROM a AS build\nRUN x\nFROM b\nRUN y\n", opts).unwrap();
    assert_eq!(g.target, 0);
    assert_eq!(g.stages.len(), 1);
}

#[test]
fn onbuild_triggers_from_base_config() {
    let base = ImageConfig {
        on_build: vec!["RUN echo triggered".into()],
        env: vec!["PATH=/bin".into(), "FROM_BASE=1".into()],
        working_dir: "/srv".into(),
        ..Default::default()
    };
    let images = Images(vec![("base", base)]);
    let df = Dockerfile::parse("Dockerfile", "FROM base\nRUN echo mine\n").unwrap();
    let g = compile(&df, &CompileOptions::default(), &images).unwrap();
    let first = exec(&g, 0);
    assert_eq!(first.args[2], "echo triggered");
    assert_eq!(first.cwd, "/srv");
    assert!(first.env.contains(&"FROM_BASE=1".to_string()));
    assert_eq!(exec(&g, 1).args[2], "echo mine");
    assert!(
        g.target_stage().config.on_build.is_empty(),
        "triggers do not propagate"
    );
}

#[test]
fn copy_and_workdir() {
    let g = graph("FROM a\nWORKDIR app\nCOPY --chown=1:1 --link src ./\nADD https://x/y.tgz /z\n");
    let files: Vec<&FileOp> = g
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::File(f) => Some(f),
            _ => None,
        })
        .collect();
    assert!(matches!(&files[0].actions[0], FileAction::Mkdir { path, .. } if path == "/app"));
    match &files[1].actions[0] {
        FileAction::Copy {
            dest,
            chown,
            link,
            input,
            ..
        } => {
            assert_eq!(
                (dest.as_str(), chown.as_deref(), *link),
                ("/app/", Some("1:1"), true)
            );
            assert_eq!(*input, Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &files[2].actions[0],
        FileAction::Copy { input: None, .. }
    ));
    assert!(g.nodes.iter().any(|n| matches!(n.op, Op::Context { .. })));
    assert_eq!(history(&g)[1], "COPY src ./ # buildkit");
}

#[test]
fn heredocs_in_run_and_copy() {
    let g = graph("FROM a\nRUN <<EOF\necho one\nEOF\nRUN <<EOF\n#!/bin/sh\necho two\nEOF\nENV N=x\nCOPY <<A <<'B' /d/\n$N\nA\n$N\nB\n");
    assert_eq!(exec(&g, 0).args, ["/bin/sh", "-c", "echo one\n"]);
    let second = exec(&g, 1);
    assert_eq!(second.args[2], "/dev/pipes/EOF");
    assert_eq!(
        second.mounts[0].inline.as_ref().unwrap().data,
        "#!/bin/sh\necho two\n"
    );
    let Op::File(f) = &g.nodes.last().unwrap().op else {
        panic!()
    };
    assert!(
        matches!(&f.actions[0], FileAction::Mkfile { path, data, .. } if path == "/d/A" && data == "x\n")
    );
    assert!(matches!(&f.actions[1], FileAction::Mkfile { data, .. } if data == "$N\n"));
}

#[test]
fn run_mounts_resolve_inputs() {
    let g = graph("FROM a AS deps\nRUN x\nFROM b\nRUN --mount=type=cache,target=/c,id=$HOME --mount=from=deps,target=/d --mount=target=src make\n");
    let e = exec(&g, 1);
    assert_eq!(e.mounts.len(), 3);
    assert_eq!(e.mounts[0].input, None);
    assert_eq!(e.mounts[1].input, Some(1));
    assert_eq!(e.mounts[2].target, "/src");
}

#[test]
fn config_changes() {
    let g = graph("FROM a\nCMD [\"x\"]\nENTRYPOINT run\nEXPOSE 80 53/udp\nVOLUME /data\nUSER app\nSTOPSIGNAL SIGINT\nHEALTHCHECK --interval=5m --retries=3 CMD curl\nSHELL [\"/bin/bash\", \"-c\"]\nCMD y\n");
    let c = &g.target_stage().config;
    assert_eq!(
        c.entrypoint.as_deref(),
        Some(&["/bin/sh".to_string(), "-c".into(), "run".into()][..])
    );
    assert_eq!(
        c.cmd.as_deref(),
        Some(&["/bin/bash".to_string(), "-c".into(), "y".into()][..])
    );
    assert_eq!(c.exposed_ports, ["80/tcp", "53/udp"]);
    assert_eq!(
        (c.user.as_str(), c.stop_signal.as_deref()),
        ("app", Some("SIGINT"))
    );
    let h = history(&g);
    assert_eq!(h[0], "CMD [\"x\"]");
    assert_eq!(h[2], "EXPOSE [80/tcp 53/udp]");
    assert!(c.args_escaped, "CMD sets ArgsEscaped as BuildKit does");
    assert_eq!(
        h[6],
        "HEALTHCHECK &{[\"CMD-SHELL\" \"curl\"] \"5m0s\" \"0s\" \"0s\" \"0s\" '\\x03'}"
    );
}

#[test]
fn expansion_errors_are_located() {
    let e = build(
        "FROM a\nENV X=\"${Y:?must be set}\"\n",
        CompileOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.location.line, 2);
    assert!(e.to_string().contains("Y: must be set"), "{e}");
}

#[test]
fn undeclared_arg_in_from() {
    let (_, problems) = build("FROM alpine:${NOPE:-3}\n", CompileOptions::default()).unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].rule, "UndefinedArgInFrom");
    assert_eq!(problems[0].message, "FROM argument 'NOPE' is not declared");
}

#[test]
fn arg_names_see_values_from_before_the_instruction() {
    let g = graph("FROM a\nARG A=1 B=$A\nRUN x\n");
    assert!(exec(&g, 0).env.contains(&"B=".to_string()));
}

#[test]
fn context_include_lists_what_the_build_reads() {
    let g = graph(
        "FROM a\nCOPY src/ /src/\nCOPY ./go.mod /\nRUN --mount=target=/x,source=tools make\n",
    );
    let include = g.nodes.iter().find_map(|n| match &n.op {
        Op::Context { include, .. } => Some(include.clone()),
        _ => None,
    });
    assert_eq!(include.unwrap(), ["go.mod", "src", "tools"]);
    let g = graph("FROM a\nCOPY src/ /src/\nCOPY . /all\n");
    assert!(g
        .nodes
        .iter()
        .any(|n| matches!(&n.op, Op::Context { include, .. } if include.is_empty())));
}

#[test]
fn which_instructions_expand() {
    let text = "FROM a\nENV P=80 U=app D=/data S=SIGINT\nEXPOSE $P\nUSER $U\nVOLUME $D\nSTOPSIGNAL $S\nWORKDIR $D/w\nLABEL l=$U\nCMD echo $U\nENTRYPOINT [\"$U\"]\nONBUILD RUN echo $U\nRUN echo $U\n";
    let g = graph(text);
    let c = &g.target_stage().config;
    assert_eq!(c.exposed_ports, ["80/tcp"]);
    assert_eq!(
        (c.user.as_str(), c.working_dir.as_str()),
        ("app", "/data/w")
    );
    assert_eq!(
        (c.volumes[0].as_str(), c.stop_signal.as_deref()),
        ("/data", Some("SIGINT"))
    );
    assert_eq!(c.labels["l"], "app");
    assert_eq!(c.entrypoint.as_deref(), Some(&["$U".to_string()][..]));
    assert_eq!(
        c.cmd.as_ref().map(|c| c[2].as_str()),
        Some("echo $U"),
        "CMD set earlier in the stage stays"
    );
    assert_eq!(c.on_build, ["RUN echo $U"]);
    assert_eq!(exec(&g, 0).args[2], "echo $U");
}

#[test]
fn entrypoint_clears_inherited_cmd() {
    let g = graph("FROM a AS base\nCMD [\"x\"]\nFROM base\nENTRYPOINT [\"y\"]\n");
    assert_eq!(g.target_stage().config.cmd, None);
}

#[test]
fn copy_of_an_ignored_file_is_reported() {
    let options = CompileOptions {
        dockerignore: vec!["secret.txt".into(), "docs".into()],
        ..Default::default()
    };
    let (_, problems) = build("FROM a\nCOPY secret.txt docs/a.md src /\n", options).unwrap();
    let rules: Vec<_> = problems
        .iter()
        .map(|p| (p.rule, p.message.as_str()))
        .collect();
    assert_eq!(
        rules,
        [
            (
                "CopyIgnoredFile",
                "Attempting to Copy file \"secret.txt\" that is excluded by .dockerignore"
            ),
            (
                "CopyIgnoredFile",
                "Attempting to Copy file \"docs/a.md\" that is excluded by .dockerignore"
            ),
        ]
    );
}

#[test]
fn a_stage_from_a_stage_sees_its_arg_values() {
    // BuildKit keeps a stage's ARG values in its state's environment, so a
    // stage FROM it sees them in RUN and in expansion (not in its config
    // nor in RUN's `|N` history prefix); its own ARG and ENV win.
    let g = graph(
        "FROM a AS base\nARG F=plain\nARG G=g\nFROM base\nARG G=own\nWORKDIR /$F\nRUN echo $F\n",
    );
    let e = exec(&g, 0);
    assert!(e.env.contains(&"F=plain".to_string()), "{:?}", e.env);
    assert!(e.env.contains(&"G=own".to_string()), "{:?}", e.env);
    assert!(!e.env.contains(&"G=g".to_string()), "{:?}", e.env);
    let c = &g.target_stage().config;
    assert_eq!(c.working_dir, "/plain");
    assert!(!c.env.iter().any(|v| v.starts_with("F=")), "{:?}", c.env);
    assert!(history(&g).contains(&"RUN |1 G=own /bin/sh -c echo $F # buildkit".to_string()));
}

#[test]
fn onbuild_makes_no_history_entry() {
    let g = graph("FROM a\nONBUILD RUN echo hi\nENV A=1\n");
    assert_eq!(history(&g), ["ENV A=1"]);
    assert_eq!(g.target_stage().config.on_build, ["RUN echo hi"]);
}
