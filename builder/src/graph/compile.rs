//! Stages to ops: expands ARG/ENV per instruction (each instruction sees the
//! values from before it), resolves `FROM` and `--from`, runs ONBUILD
//! triggers of base images, and tracks the image config and history.

use std::collections::{BTreeSet, HashMap};

use crate::check::{Level, Problem};
use crate::dockerfile::heredoc::chomp;
use crate::dockerfile::instructions::{
    ArgDecl, Command, CommandLine, Copy, Instruction, KeyValue, Run,
};
use crate::dockerfile::mounts::{parse_mount, MountType};
use crate::dockerfile::parser;
use crate::dockerfile::platform::Platform;
use crate::dockerfile::shell::{Expansion, Lexer};
use crate::dockerfile::stages::{Dockerfile, Stage};
use crate::error::{suggest, Error, ErrorKind, Result};
use crate::graph::image::{HealthConfig, History, ImageConfig, ImageSource};
use crate::graph::ops::{
    ExecMount, ExecOp, FileAction, FileOp, Graph, InlineFile, Input, NodeId, Op, StageOutput,
};

/// What to build and with which inputs.
#[derive(Debug, Clone, Default)]
pub struct CompileOptions {
    /// `--target` stage name (the last stage when `None`).
    pub target: Option<String>,
    /// `--build-arg KEY=VALUE`, in order (later wins).
    pub build_args: Vec<(String, String)>,
    /// `--platform` (the host's when `None`).
    pub platform: Option<Platform>,
    /// Cleaned `.dockerignore` patterns for the context source.
    pub dockerignore: Vec<String>,
    /// Compile every stage, not only those the target needs (`--check`).
    pub all_stages: bool,
}

/// The ARGs every build defines without a declaration in global scope.
pub const PLATFORM_ARGS: &[&str] = &[
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Proxy ARGs: usable in RUN without a declaration, kept out of history.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Compiles `dockerfile` for `options`. `images` supplies base image configs.
pub fn compile(
    dockerfile: &Dockerfile,
    options: &CompileOptions,
    images: &dyn ImageSource,
) -> Result<Graph> {
    Ok(compile_with_problems(dockerfile, options, images)?.0)
}

/// As [`compile`], also returning what the checks found while expanding
/// (undefined variables).
pub fn compile_with_problems(
    dockerfile: &Dockerfile,
    options: &CompileOptions,
    images: &dyn ImageSource,
) -> Result<(Graph, Vec<Problem>)> {
    let target = dockerfile.target_index(options.target.as_deref())?;
    let mut compiler = Compiler::new(dockerfile, options, images, target)?;
    if options.all_stages {
        for index in 0..dockerfile.stages.len() {
            compiler.stage(index, 0)?;
        }
    } else {
        compiler.stage(target, 0)?;
    }
    let mut graph = compiler.graph;
    let mut stages: Vec<StageOutput> = compiler.done.into_iter().flatten().collect();
    stages.sort_by_key(|s| s.index);
    graph.stages = stages;
    Ok((graph, compiler.problems))
}

struct StageState {
    root: Option<NodeId>,
    config: ImageConfig,
    platform: Platform,
    /// Declared ARGs of this stage with their values (None: no value).
    args: Vec<(String, Option<String>)>,
    cmd_set: bool,
    label: String,
    step: usize,
    steps: usize,
}

impl StageState {
    /// Variables for expansion: ARG values, then ENV (ENV wins).
    fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .args
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect();
        env.extend(self.config.env.iter().map(|e| split_env(e)));
        env
    }

    fn env_value(&self, key: &str) -> Option<String> {
        self.config
            .env
            .iter()
            .rev()
            .map(|e| split_env(e))
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self.config.env.iter().position(|e| split_env(e).0 == key) {
            Some(i) => self.config.env[i] = entry,
            None => self.config.env.push(entry),
        }
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".to_string(), "-c".to_string()])
    }

    fn with_shell(&self, command: &CommandLine) -> Vec<String> {
        match command {
            CommandLine::Exec(args) => args.clone(),
            CommandLine::Shell(text) => {
                let mut args = self.shell();
                args.push(text.clone());
                args
            }
        }
    }

    fn history(&mut self, created_by: String, empty_layer: bool) {
        self.config.history.push(History {
            created_by,
            comment: HISTORY_COMMENT.to_string(),
            empty_layer,
        });
    }

    fn workdir(&self) -> String {
        if self.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            self.config.working_dir.clone()
        }
    }
}

fn split_env(entry: &str) -> (String, String) {
    match entry.split_once('=') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (entry.to_string(), String::new()),
    }
}

struct Compiler<'a> {
    df: &'a Dockerfile,
    options: &'a CompileOptions,
    images: &'a dyn ImageSource,
    graph: Graph,
    index: HashMap<String, NodeId>,
    done: Vec<Option<StageOutput>>,
    in_progress: Vec<bool>,
    /// Global scope: platform ARGs and ARGs before the first FROM.
    globals: Vec<(String, Option<String>)>,
    build_args: HashMap<String, String>,
    target_platform: Platform,
    context: Option<NodeId>,
    problems: Vec<Problem>,
    lexer: Lexer,
}

impl<'a> Compiler<'a> {
    fn new(
        df: &'a Dockerfile,
        options: &'a CompileOptions,
        images: &'a dyn ImageSource,
        target: usize,
    ) -> Result<Compiler<'a>> {
        let build_platform = Platform::host();
        let target_platform = options
            .platform
            .clone()
            .unwrap_or_else(|| build_platform.clone());
        let mut globals = Vec::new();
        for (prefix, p) in [("TARGET", &target_platform), ("BUILD", &build_platform)] {
            globals.push((format!("{prefix}PLATFORM"), Some(p.to_string())));
            globals.push((format!("{prefix}OS"), Some(p.os.clone())));
            globals.push((format!("{prefix}ARCH"), Some(p.architecture.clone())));
            globals.push((
                format!("{prefix}VARIANT"),
                Some(p.variant.clone().unwrap_or_default()),
            ));
        }
        let mut compiler = Compiler {
            df,
            options,
            images,
            graph: Graph {
                nodes: Vec::new(),
                stages: Vec::new(),
                target,
            },
            index: HashMap::new(),
            done: vec![None; df.stages.len()],
            in_progress: vec![false; df.stages.len()],
            globals,
            build_args: options.build_args.iter().cloned().collect(),
            target_platform,
            context: None,
            problems: Vec::new(),
            lexer: Lexer::new(df.directives.escape),
        };
        for command in &df.global_args {
            let Instruction::Arg { args } = &command.instruction else {
                continue;
            };
            let env = compiler.global_env();
            let mut new = Vec::new();
            for decl in args {
                new.push(compiler.declare_arg(decl, &env, command, None)?);
            }
            compiler.globals.extend(new);
        }
        Ok(compiler)
    }

    fn global_env(&self) -> Vec<(String, String)> {
        self.globals
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect()
    }

    fn error(&self, line: usize, kind: ErrorKind, needle: Option<&str>) -> Error {
        Error::at(line, kind).locate(&self.df.file, &self.df.source, needle)
    }

    /// Expands `word` with `env`, noting undefined variables.
    fn expand(
        &mut self,
        word: &str,
        env: &[(String, String)],
        declared: &dyn Fn(&str) -> bool,
        line: usize,
    ) -> Result<String> {
        let Expansion {
            value, unmatched, ..
        } = self
            .lexer
            .process_word_with_matches(word, env)
            .map_err(|e| self.error(line, e.into(), None))?;
        self.note_undefined(unmatched, env, declared, line);
        Ok(value)
    }

    fn note_undefined(
        &mut self,
        unmatched: BTreeSet<String>,
        env: &[(String, String)],
        declared: &dyn Fn(&str) -> bool,
        line: usize,
    ) {
        for name in unmatched {
            let special = name.chars().all(|c| c.is_ascii_digit())
                || name.len() == 1 && !name.chars().all(char::is_alphabetic);
            if special || declared(&name) || PROXY_ARGS.contains(&name.as_str()) {
                continue;
            }
            let hint = suggest(&name, env.iter().map(|(k, _)| k.as_str()))
                .map(|s| format!(" (did you mean ${s}?)"))
                .unwrap_or_default();
            self.problems.push(Problem {
                rule: "UndefinedVar",
                level: Level::Warning,
                message: format!("Usage of undefined variable '${name}'{hint}"),
                line,
            });
        }
    }

    /// Resolves one ARG declaration to (name, value).
    fn declare_arg(
        &mut self,
        decl: &ArgDecl,
        env: &[(String, String)],
        command: &Command,
        stage_globals: Option<&[(String, Option<String>)]>,
    ) -> Result<(String, Option<String>)> {
        let declared = |_: &str| false;
        let key = self.expand(&decl.key, env, &declared, command.line)?;
        let value = if let Some(v) = self.build_args.get(&key) {
            Some(v.clone())
        } else if let Some(default) = &decl.value {
            Some(self.expand(default, env, &declared, command.line)?)
        } else {
            let globals = stage_globals.unwrap_or(&self.globals);
            globals
                .iter()
                .rev()
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.clone())
        };
        Ok((key, value))
    }

    fn context_node(&mut self) -> NodeId {
        if let Some(id) = self.context {
            return id;
        }
        let id = self.graph.add(
            &mut self.index,
            Op::Context {
                name: "context".to_string(),
                exclude: self.options.dockerignore.clone(),
            },
            Vec::new(),
            "[internal] load build context".to_string(),
            None,
        );
        self.context = Some(id);
        id
    }

    fn image_node(&mut self, reference: &str, platform: &Platform, line: usize) -> NodeId {
        self.graph.add(
            &mut self.index,
            Op::Image {
                reference: reference.to_string(),
                platform: platform.clone(),
            },
            Vec::new(),
            format!("[internal] load metadata for {reference}"),
            Some(line),
        )
    }

    /// Compiles stage `index` (once) and returns its output.
    fn stage(&mut self, index: usize, depth: usize) -> Result<StageOutput> {
        if let Some(done) = &self.done[index] {
            return Ok(done.clone());
        }
        let stage = &self.df.stages[index];
        if self.in_progress[index] || depth > self.df.stages.len() {
            return Err(self.error(
                stage.line,
                ErrorKind::StageCycle {
                    name: stage.name.clone().unwrap_or_else(|| index.to_string()),
                },
                None,
            ));
        }
        self.in_progress[index] = true;
        let output = self.compile_stage(stage, depth)?;
        self.in_progress[index] = false;
        self.done[index] = Some(output.clone());
        Ok(output)
    }

    fn compile_stage(&mut self, stage: &'a Stage, depth: usize) -> Result<StageOutput> {
        let globals = self.global_env();
        let global_names: Vec<String> = self.globals.iter().map(|(k, _)| k.clone()).collect();
        let is_global = |n: &str| global_names.iter().any(|g| g == n);
        let image = self.expand(&stage.from.image, &globals, &is_global, stage.line)?;
        let platform = match &stage.from.platform {
            Some(p) => {
                let text = self.expand(p, &globals, &is_global, stage.line)?;
                Platform::parse(&text).map_err(|k| self.error(stage.line, k, Some("--platform")))?
            }
            None => self.target_platform.clone(),
        };
        let label = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        let mut state = StageState {
            root: None,
            config: ImageConfig::default(),
            platform: platform.clone(),
            args: Vec::new(),
            cmd_set: false,
            label,
            step: 1,
            steps: stage.commands.len() + 1,
        };
        let base_stage = self.df.find_stage(&image, Some(stage.index));
        if let Some(base) = base_stage {
            let out = self.stage(base, depth + 1)?;
            state.root = out.root;
            state.config = out.config;
        } else if !image.eq_ignore_ascii_case("scratch") {
            if let Some(later) = self.df.find_stage(&image, None) {
                let name = self.df.stages[later].name.clone().unwrap_or_default();
                return Err(self.error(
                    stage.line,
                    ErrorKind::UndefinedStage {
                        name: image.clone(),
                        suggestion: Some(format!(
                            "a stage defined before line {} ({name})",
                            stage.line
                        )),
                    },
                    Some(&stage.from.image),
                ));
            }
            let root = self.image_node(&image, &platform, stage.line);
            state.root = Some(root);
            let config = self
                .images
                .image_config(&image, &platform.to_string())
                .map_err(|source| {
                    self.error(
                        stage.line,
                        ErrorKind::ImageConfig {
                            reference: image.clone(),
                            source,
                        },
                        None,
                    )
                })?;
            if let Some(config) = config {
                state.config = config;
            }
        }
        if !state.config.env.iter().any(|e| e.starts_with("PATH=")) && platform.os == "linux" {
            state.config.env.insert(0, DEFAULT_PATH.to_string());
        }
        let triggers = std::mem::take(&mut state.config.on_build);
        for trigger in &triggers {
            let commands = self.parse_trigger(trigger, stage.line)?;
            for command in &commands {
                self.instruction(&mut state, stage, command, depth)?;
            }
        }
        for command in &stage.commands {
            state.step += 1;
            self.instruction(&mut state, stage, command, depth)?;
        }
        Ok(StageOutput {
            index: stage.index,
            name: stage.name.clone(),
            platform,
            root: state.root,
            config: state.config,
        })
    }

    fn parse_trigger(&self, trigger: &str, line: usize) -> Result<Vec<Command>> {
        let relocate = |mut e: Error| {
            e.location.line = line;
            e.location.column = 1;
            e.line_text = None;
            e.locate(&self.df.file, &self.df.source, None)
        };
        let ast = parser::parse(&self.df.file, trigger).map_err(relocate)?;
        let mut out = Vec::new();
        for node in &ast.nodes {
            let name = node.name();
            if matches!(name.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(self.error(
                    line,
                    ErrorKind::OnbuildNotAllowed { instruction: name },
                    None,
                ));
            }
            let mut command = crate::dockerfile::instructions::parse_command(node)
                .map_err(|f| relocate(f.error))?;
            command.line = line;
            command.end_line = line;
            out.push(command);
        }
        Ok(out)
    }

    fn instruction(
        &mut self,
        state: &mut StageState,
        stage: &Stage,
        command: &Command,
        depth: usize,
    ) -> Result<()> {
        let env = state.env();
        let declared_args: Vec<String> = state.args.iter().map(|(k, _)| k.clone()).collect();
        let declared = move |n: &str| declared_args.iter().any(|a| a == n);
        let line = command.line;
        match &command.instruction {
            Instruction::From(_) => unreachable!("FROM starts a stage"),
            Instruction::Env { pairs } => {
                let pairs = self.expand_pairs(pairs, &env, &declared, line)?;
                let mut text = String::from("ENV");
                for (k, v) in &pairs {
                    state.set_env(k, v);
                    text.push_str(&format!(" {k}={v}"));
                }
                state.history(text, true);
            }
            Instruction::Label { pairs } => {
                let pairs = self.expand_pairs(pairs, &env, &declared, line)?;
                let mut text = String::from("LABEL");
                for (k, v) in pairs {
                    text.push_str(&format!(" {k}={v}"));
                    state.config.labels.insert(k, v);
                }
                state.history(text, true);
            }
            Instruction::Arg { args } => {
                let stage_globals = self.globals.clone();
                let mut parts = Vec::new();
                for decl in args {
                    let env = state.env();
                    let (key, value) =
                        self.declare_arg(decl, &env, command, Some(&stage_globals))?;
                    parts.push(match &value {
                        Some(v) => format!("{key}={v}"),
                        None => key.clone(),
                    });
                    state.args.retain(|(k, _)| *k != key);
                    state.args.push((key, value));
                }
                state.history(format!("ARG {}", parts.join(" ")), true);
            }
            Instruction::Maintainer { name } => {
                state.config.author = Some(name.clone());
                state.history(format!("MAINTAINER {name}"), true);
            }
            Instruction::Expose { ports } => {
                let mut added = Vec::new();
                for port in ports {
                    let words = self
                        .lexer
                        .process_words(port, &env)
                        .map_err(|e| self.error(line, e.into(), None))?;
                    for word in words {
                        for p in expand_port(&word).map_err(|k| self.error(line, k, Some(port)))? {
                            if !state.config.exposed_ports.contains(&p) {
                                state.config.exposed_ports.push(p.clone());
                            }
                            added.push(p);
                        }
                    }
                }
                state.history(format!("EXPOSE {}", added.join(" ")), true);
            }
            Instruction::Volume { paths } => {
                let mut added = Vec::new();
                for p in paths {
                    let v = self.expand(p, &env, &declared, line)?;
                    if v.trim().is_empty() {
                        return Err(self.error(
                            line,
                            ErrorKind::ArgumentCount {
                                instruction: "VOLUME".into(),
                                expected: "non-empty paths",
                            },
                            None,
                        ));
                    }
                    if !state.config.volumes.contains(&v) {
                        state.config.volumes.push(v.clone());
                    }
                    added.push(v);
                }
                state.history(format!("VOLUME [{}]", added.join(" ")), true);
            }
            Instruction::User { user } => {
                let user = self.expand(user, &env, &declared, line)?;
                state.config.user = user.clone();
                state.history(format!("USER {user}"), true);
            }
            Instruction::Workdir { path } => {
                let path = self.expand(path, &env, &declared, line)?;
                let dir = crate::dockerfile::dockerignore::clean(&if path.starts_with('/') {
                    path.clone()
                } else {
                    format!("{}/{}", state.workdir(), path)
                });
                state.config.working_dir = dir.clone();
                let inputs = state
                    .root
                    .map(|r| Input {
                        role: "rootfs".into(),
                        node: r,
                    })
                    .into_iter()
                    .collect();
                let chown = Some(state.config.user.clone()).filter(|u| !u.is_empty());
                let op = Op::File(FileOp {
                    actions: vec![FileAction::Mkdir {
                        path: dir.clone(),
                        mode: 0o755,
                        parents: true,
                        chown,
                    }],
                });
                state.root = Some(self.add(state, op, inputs, command));
                state.history(format!("WORKDIR {dir}"), false);
            }
            Instruction::StopSignal { signal } => {
                let signal = self.expand(signal, &env, &declared, line)?;
                state.config.stop_signal = Some(signal.clone());
                state.history(format!("STOPSIGNAL {signal}"), true);
            }
            Instruction::Shell { shell } => {
                state.config.shell = Some(shell.clone());
                state.history(format!("SHELL [{}]", shell.join(" ")), true);
            }
            Instruction::Cmd { command: cmd } => {
                let args = state.with_shell(cmd);
                state.history(format!("CMD {}", go_quote_list(&args)), true);
                state.config.cmd = Some(args);
                state.cmd_set = true;
            }
            Instruction::Entrypoint { command: cmd } => {
                let args = state.with_shell(cmd);
                state.history(format!("ENTRYPOINT {}", go_quote_list(&args)), true);
                state.config.entrypoint = Some(args);
                if !state.cmd_set {
                    state.config.cmd = None;
                }
            }
            Instruction::Healthcheck(h) => {
                let config = HealthConfig {
                    test: h.test.clone(),
                    interval: h.interval,
                    timeout: h.timeout,
                    start_period: h.start_period,
                    start_interval: h.start_interval,
                    retries: h.retries,
                };
                state.history(
                    format!(
                        "HEALTHCHECK &{{{} {:?} {:?} {:?} {:?} '\\x{:02x}'}}",
                        go_quote_list(&config.test),
                        go_duration(config.interval),
                        go_duration(config.timeout),
                        go_duration(config.start_period),
                        go_duration(config.start_interval),
                        config.retries
                    ),
                    true,
                );
                state.config.healthcheck = Some(config);
            }
            Instruction::Onbuild { expression } => {
                state.config.on_build.push(expression.clone());
                state.history(format!("ONBUILD {expression}"), true);
            }
            Instruction::Run(run) => self.run(state, stage, command, run, &env, depth)?,
            Instruction::Copy(copy) | Instruction::Add(copy) => {
                self.copy(state, stage, command, copy, &env, &declared, depth)?
            }
        }
        Ok(())
    }

    fn add(&mut self, state: &StageState, op: Op, inputs: Vec<Input>, command: &Command) -> NodeId {
        let description = format!(
            "[{} {}/{}] {}",
            state.label,
            state.step,
            state.steps,
            command.original.trim()
        );
        self.graph
            .add(&mut self.index, op, inputs, description, Some(command.line))
    }

    fn expand_pairs(
        &mut self,
        pairs: &[KeyValue],
        env: &[(String, String)],
        declared: &dyn Fn(&str) -> bool,
        line: usize,
    ) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for pair in pairs {
            let key = self.expand(&pair.key, env, declared, line)?;
            let value = self.expand(&pair.value, env, declared, line)?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// A `--from` or mount `from` value: a stage's root, or an image.
    fn resolve_from(
        &mut self,
        name: &str,
        stage: &Stage,
        line: usize,
        depth: usize,
        platform: &Platform,
    ) -> Result<Option<NodeId>> {
        if let Some(index) = self.df.find_stage(name, Some(stage.index)) {
            return Ok(self.stage(index, depth + 1)?.root);
        }
        let simple = !name.contains(['/', ':', '@']);
        let numeric = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
        let later = self.df.find_stage(name, None).is_some();
        let close = simple
            .then(|| suggest(name, self.df.stage_names()))
            .flatten();
        if numeric || later || close.is_some() || name.is_empty() {
            return Err(self.error(
                line,
                ErrorKind::UndefinedStage {
                    name: name.to_string(),
                    suggestion: close,
                },
                Some(&format!("--from={name}")),
            ));
        }
        Ok(Some(self.image_node(name, platform, line)))
    }

    fn run(
        &mut self,
        state: &mut StageState,
        stage: &Stage,
        command: &Command,
        run: &Run,
        env: &[(String, String)],
        depth: usize,
    ) -> Result<()> {
        let line = command.line;
        let mut inputs: Vec<Input> = state
            .root
            .map(|r| Input {
                role: "rootfs".into(),
                node: r,
            })
            .into_iter()
            .collect();
        let mut mounts = Vec::new();
        for text in &run.mounts {
            let mut expand = |v: &str| -> std::result::Result<String, ErrorKind> {
                self.lexer.process_word(v, env).map_err(ErrorKind::from)
            };
            let mount =
                parse_mount(text, &mut expand).map_err(|k| self.error(line, k, Some("--mount")))?;
            let target = mount.target.clone().unwrap_or_else(|| match mount.kind {
                MountType::Ssh => "/run/buildkit/ssh_agent.0".to_string(),
                _ => String::new(),
            });
            let target = if target.is_empty() || target.starts_with('/') {
                target
            } else {
                format!("{}/{}", state.workdir().trim_end_matches('/'), target)
            };
            let input = match (mount.kind, &mount.from) {
                (MountType::Bind | MountType::Cache, Some(from)) => {
                    let platform = state.platform.clone();
                    self.resolve_from(from, stage, line, depth, &platform)?
                }
                (MountType::Bind, None) => Some(self.context_node()),
                _ => None,
            };
            let slot = input.map(|node| {
                inputs.push(Input {
                    role: format!("mount:{target}"),
                    node,
                });
                inputs.len() - 1
            });
            mounts.push(ExecMount {
                kind: mount.kind,
                target,
                input: slot,
                source: mount.source.clone().unwrap_or_else(|| "/".into()),
                readonly: mount.readonly,
                id: mount.id.clone(),
                sharing: mount.sharing,
                mode: mount.mode,
                uid: mount.uid,
                gid: mount.gid,
                required: mount.required,
                size: mount.size,
                env: mount.env.clone(),
                inline: None,
            });
        }
        let mut args = match &run.command {
            CommandLine::Exec(args) => args.clone(),
            CommandLine::Shell(text) => vec![text.clone()],
        };
        let prepend_shell = !run.command.is_exec();
        if !run.heredocs.is_empty() && prepend_shell {
            let simple = crate::dockerfile::heredoc::parse_heredoc(&args[0])
                .ok()
                .flatten();
            let first = &run.heredocs[0];
            if simple.is_some() {
                let data = if first.chomp {
                    chomp(&first.content)
                } else {
                    first.content.clone()
                };
                if data.starts_with("#!") {
                    mounts.push(ExecMount {
                        kind: MountType::Bind,
                        target: "/dev/pipes/".to_string(),
                        input: None,
                        source: "/".to_string(),
                        readonly: true,
                        id: None,
                        sharing: crate::dockerfile::mounts::CacheSharing::Shared,
                        mode: None,
                        uid: None,
                        gid: None,
                        required: false,
                        size: None,
                        env: None,
                        inline: Some(InlineFile {
                            name: first.name.clone(),
                            data,
                            mode: 0o755,
                        }),
                    });
                    args = vec![format!("/dev/pipes/{}", first.name)];
                } else {
                    args = vec![data];
                }
            } else {
                let mut full = args[0].clone();
                for doc in &run.heredocs {
                    full.push('\n');
                    full.push_str(&doc.content);
                    full.push_str(&doc.name);
                }
                args = vec![full];
            }
        }
        if prepend_shell {
            let mut shell = state.shell();
            shell.extend(args);
            args = shell;
        }
        // Environment: ENV, then ARG values ENV does not override, then
        // proxy build args (not recorded in history).
        let mut exec_env = state.config.env.clone();
        let mut history_args = Vec::new();
        for (key, value) in &state.args {
            let Some(value) = value else { continue };
            if PROXY_ARGS.contains(&key.as_str()) {
                continue;
            }
            let effective = state.env_value(key).unwrap_or_else(|| value.clone());
            history_args.push(format!("{key}={effective}"));
            if state.env_value(key).is_none() {
                exec_env.push(format!("{key}={value}"));
            }
        }
        for proxy in PROXY_ARGS {
            let value = state
                .args
                .iter()
                .find(|(k, _)| k == proxy)
                .and_then(|(_, v)| v.clone())
                .or_else(|| self.build_args.get(*proxy).cloned());
            if let Some(v) = value {
                exec_env.push(format!("{proxy}={v}"));
            }
        }
        let mut created_by = String::from("RUN ");
        if !history_args.is_empty() {
            created_by.push_str(&format!(
                "|{} {} ",
                history_args.len(),
                history_args.join(" ")
            ));
        }
        created_by.push_str(&args.join(" "));
        created_by.push_str(" # buildkit");
        let op = Op::Exec(ExecOp {
            args,
            env: exec_env,
            cwd: state.workdir(),
            user: state.config.user.clone(),
            mounts,
            network: run.network,
            security: run.security,
            platform: state.platform.clone(),
        });
        state.root = Some(self.add(state, op, inputs, command));
        state.history(created_by, false);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        state: &mut StageState,
        stage: &Stage,
        command: &Command,
        copy: &Copy,
        env: &[(String, String)],
        declared: &dyn Fn(&str) -> bool,
        depth: usize,
    ) -> Result<()> {
        let line = command.line;
        let keyword = if copy.is_add { "ADD" } else { "COPY" };
        let mut sources = Vec::new();
        for s in &copy.sources {
            sources.push(self.expand(s, env, declared, line)?);
        }
        let raw_dest = self.expand(&copy.dest, env, declared, line)?;
        let dest = if raw_dest.starts_with('/') {
            raw_dest.clone()
        } else {
            let joined = crate::dockerfile::dockerignore::clean(&format!(
                "{}/{}",
                state.workdir(),
                raw_dest
            ));
            if raw_dest.ends_with('/') || raw_dest == "." || raw_dest.is_empty() {
                format!("{}/", joined.trim_end_matches('/'))
            } else {
                joined
            }
        };
        let chown = match &copy.chown {
            Some(c) => Some(self.expand(c, env, declared, line)?),
            None => None,
        };
        let chmod = match &copy.chmod {
            Some(c) => {
                let v = self.expand(c, env, declared, line)?;
                if !is_valid_chmod(&v) {
                    return Err(self.flag_error(
                        line,
                        "chmod",
                        v,
                        "octal bits like 0755 or symbolic like u+x",
                    ));
                }
                Some(v)
            }
            None => None,
        };
        let checksum = match &copy.checksum {
            Some(c) => {
                let v = self.expand(c, env, declared, line)?;
                if !is_valid_checksum(&v) {
                    return Err(self.flag_error(
                        line,
                        "checksum",
                        v,
                        "sha256:<64 hex>, sha384:, sha512: or a git commit",
                    ));
                }
                Some(v)
            }
            None => None,
        };
        let mut exclude = Vec::new();
        for e in &copy.exclude {
            exclude.push(self.expand(e, env, declared, line)?);
        }
        let mut inputs: Vec<Input> = state
            .root
            .map(|r| Input {
                role: "rootfs".into(),
                node: r,
            })
            .into_iter()
            .collect();
        let mut actions = Vec::new();
        let remote = |s: &str| {
            s.starts_with("http://")
                || s.starts_with("https://")
                || s.starts_with("git@")
                || s.starts_with("git://")
        };
        let needs_input = sources.iter().any(|s| !(copy.is_add && remote(s)));
        let input = if !needs_input {
            None
        } else {
            let node = match &copy.from {
                Some(from) => {
                    let from = self.expand(from, env, declared, line)?;
                    let platform = state.platform.clone();
                    self.resolve_from(&from, stage, line, depth, &platform)?
                }
                None => Some(self.context_node()),
            };
            node.map(|node| {
                inputs.push(Input {
                    role: "source".into(),
                    node,
                });
                inputs.len() - 1
            })
        };
        let mode = chmod
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .unwrap_or(0o644);
        let several = copy.inline_sources.len() + sources.len() > 1;
        for inline in &copy.inline_sources {
            let data = if inline.expand {
                let mut raw = Lexer::new('\\');
                raw.skip_process_quotes = true;
                raw.process_word(&inline.data, env)
                    .map_err(|e| self.error(line, e.into(), None))?
            } else {
                inline.data.clone()
            };
            let path = if dest.ends_with('/') || several {
                format!("{}/{}", dest.trim_end_matches('/'), inline.path)
            } else {
                dest.clone()
            };
            actions.push(FileAction::Mkfile {
                path,
                data,
                mode,
                chown: chown.clone(),
            });
        }
        if !sources.is_empty() {
            actions.push(FileAction::Copy {
                input,
                sources: sources.clone(),
                dest: dest.clone(),
                chown: chown.clone(),
                chmod: chmod.clone(),
                link: copy.link,
                parents: copy.parents,
                exclude,
                is_add: copy.is_add,
                unpack: copy.unpack,
                checksum,
                keep_git_dir: copy.keep_git_dir,
            });
        }
        let op = Op::File(FileOp { actions });
        state.root = Some(self.add(state, op, inputs, command));
        let mut created_by = keyword.to_string();
        for s in &sources {
            created_by.push(' ');
            created_by.push_str(s);
        }
        for inline in &copy.inline_sources {
            created_by.push_str(&format!(" <<{}", inline.path));
        }
        created_by.push_str(&format!(" {raw_dest} # buildkit"));
        state.history(created_by, false);
        Ok(())
    }

    fn flag_error(&self, line: usize, flag: &str, value: String, expected: &'static str) -> Error {
        self.error(
            line,
            ErrorKind::InvalidFlagValue {
                flag: flag.to_string(),
                value,
                expected,
            },
            Some(&format!("--{flag}")),
        )
    }
}

fn is_valid_chmod(text: &str) -> bool {
    if !text.is_empty() && text.len() <= 4 && text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return true;
    }
    !text.is_empty()
        && text.split(',').all(|clause| {
            let who = clause.bytes().take_while(|b| b"ugoa".contains(b)).count();
            let rest = &clause[who..];
            !rest.is_empty()
                && rest.as_bytes()[0].is_ascii()
                && b"+-=".contains(&rest.as_bytes()[0])
                && rest[1..].bytes().all(|b| b"rwxXst".contains(&b))
        })
}

fn is_valid_checksum(text: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match text.split_once(':') {
        Some(("sha256", h)) => hex(h, 64),
        Some(("sha384", h)) => hex(h, 96),
        Some(("sha512", h)) => hex(h, 128),
        None => hex(text, 40) || hex(text, 64),
        _ => false,
    }
}

/// `80`, `80/udp`, `8000-8002/tcp` to `80/tcp`-style entries.
fn expand_port(text: &str) -> std::result::Result<Vec<String>, ErrorKind> {
    let bad = || ErrorKind::InvalidPort {
        value: text.to_string(),
    };
    let (ports, proto) = match text.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (text, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    let parse = |s: &str| s.parse::<u16>().map_err(|_| bad());
    let (start, end) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if end < start {
        return Err(bad());
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| crate::dockerfile::dump::go_quote(s))
        .collect();
    format!("[{}]", quoted.join(" "))
}

/// Go's `time.Duration.String()`: `0s`, `1.5s`, `5m0s`, `300ms`.
fn go_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_string();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        let (unit, div) = if n < 1_000 {
            ("ns", 1)
        } else if n < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", trim_fraction(n, div));
    }
    let hours = n / 3_600_000_000_000;
    let minutes = (n / 60_000_000_000) % 60;
    let seconds = trim_fraction(n % 60_000_000_000, 1_000_000_000);
    let mut out = sign.to_string();
    if hours > 0 {
        out.push_str(&format!("{hours}h{minutes}m"));
    } else if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{seconds}s"));
    out
}

fn trim_fraction(value: u64, div: u64) -> String {
    let whole = value / div;
    let frac = value % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = (div as f64).log10().round() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(5_000_000_000), "5s");
        assert_eq!(go_duration(300_000_000_000), "5m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(300_000_000), "300ms");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    }

    #[test]
    fn ports() {
        assert_eq!(expand_port("80").unwrap(), ["80/tcp"]);
        assert_eq!(expand_port("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(expand_port("8000-8001").unwrap(), ["8000/tcp", "8001/tcp"]);
        assert!(expand_port("http").is_err());
        assert!(expand_port("80/icmp").is_err());
    }

    #[test]
    fn chmod_and_checksum() {
        assert!(is_valid_chmod("0755") && is_valid_chmod("u+x,go-w") && !is_valid_chmod("999"));
        assert!(is_valid_checksum(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_valid_checksum("sha256:abc"));
    }
}

#[cfg(test)]
mod graph_tests {
    use super::*;
    use crate::graph::image::NoImages;

    /// A fixed set of base image configs.
    struct Images(Vec<(&'static str, ImageConfig)>);

    impl ImageSource for Images {
        fn image_config(
            &self,
            reference: &str,
            _platform: &str,
        ) -> std::result::Result<Option<ImageConfig>, Box<dyn std::error::Error + Send + Sync>>
        {
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
    fn each_instruction_sees_values_from_before_it() {
        let g = graph("FROM a\nENV a=1\nENV a=2 b=$a\n");
        let env = &g.target_stage().config.env;
        assert!(env.contains(&"b=1".to_string()), "{env:?}");
    }

    #[test]
    fn global_args_scope() {
        let text = "ARG TAG=3.20\nARG UNUSED=x\nFROM alpine:$TAG\nARG TAG\nRUN echo $TAG\nLABEL u=\"$UNUSED\"\n";
        let (g, problems) = build(text, CompileOptions::default()).unwrap();
        assert!(
            matches!(&g.nodes[0].op, Op::Image { reference, .. } if reference == "alpine:3.20")
        );
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
        assert!(
            matches!(&g.nodes[0].op, Op::Image { reference, .. } if reference == "alpine:edge")
        );
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
        let g =
            graph("FROM a\nWORKDIR app\nCOPY --chown=1:1 --link src ./\nADD https://x/y.tgz /z\n");
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
}
