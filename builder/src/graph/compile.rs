//! Stages to ops: expands ARG/ENV per instruction (each instruction sees the
//! values from before it), resolves `FROM` and `--from`, runs ONBUILD
//! triggers of base images, and tracks the image config and history.

use std::collections::{BTreeSet, HashMap};

use crate::check::{Level, Problem};
use crate::dockerfile::instructions::{ArgDecl, Command, Instruction, KeyValue};
use crate::dockerfile::parser;
use crate::dockerfile::platform::Platform;
use crate::dockerfile::shell::{Expansion, Lexer};
use crate::dockerfile::stages::{Dockerfile, Stage};
use crate::error::{suggest, Error, ErrorKind, Result};
use crate::graph::format::{expand_port, go_duration, go_quote_list, is_valid_signal};
use crate::graph::image::{HealthConfig, ImageConfig, ImageSource};
use crate::graph::ops::{FileAction, FileOp, Graph, Input, NodeId, Op, StageOutput};
pub(super) use crate::graph::state::StageState;

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
    if let Some(context) = compiler.context {
        let paths = graph.context_paths(context);
        // The context's digest was taken with an empty include list: the
        // list derives from the ops that read the context, whose digests
        // already cover the paths they read.
        if let Op::Context { include, .. } = &mut graph.nodes[context].op {
            *include = paths;
        }
    }
    let mut stages: Vec<StageOutput> = compiler.done.into_iter().flatten().collect();
    stages.sort_by_key(|s| s.index);
    graph.stages = stages;
    Ok((graph, compiler.problems))
}

pub(super) struct Compiler<'a> {
    pub(super) df: &'a Dockerfile,
    pub(super) options: &'a CompileOptions,
    pub(super) images: &'a dyn ImageSource,
    pub(super) graph: Graph,
    pub(super) index: HashMap<String, NodeId>,
    pub(super) done: Vec<Option<StageOutput>>,
    pub(super) in_progress: Vec<bool>,
    /// Per compiled stage: the ARG values its build steps saw, which a
    /// stage FROM it sees too (BuildKit keeps them in the LLB state's
    /// environment, not in the image config).
    pub(super) arg_env: Vec<Vec<(String, String)>>,
    /// Global scope: platform ARGs and ARGs before the first FROM.
    pub(super) globals: Vec<(String, Option<String>)>,
    pub(super) build_args: HashMap<String, String>,
    pub(super) target_platform: Platform,
    pub(super) context: Option<NodeId>,
    /// `.dockerignore` compiled, for the CopyIgnoredFile check.
    pub(super) ignore: Option<crate::dockerfile::dockerignore::Matcher>,
    pub(super) problems: Vec<Problem>,
    pub(super) lexer: Lexer,
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
            arg_env: vec![Vec::new(); df.stages.len()],
            globals,
            build_args: options.build_args.iter().cloned().collect(),
            target_platform,
            context: None,
            ignore: if options.dockerignore.is_empty() {
                None
            } else {
                crate::dockerfile::dockerignore::Matcher::new(&options.dockerignore).ok()
            },
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

    pub(super) fn error(&self, line: usize, kind: ErrorKind, needle: Option<&str>) -> Error {
        Error::at(line, kind).locate(&self.df.file, &self.df.source, needle)
    }

    /// Expands `word` with `env`, noting undefined variables.
    pub(super) fn expand(
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

    pub(super) fn context_node(&mut self) -> NodeId {
        if let Some(id) = self.context {
            return id;
        }
        let id = self.graph.add(
            &mut self.index,
            Op::Context {
                name: "context".to_string(),
                include: Vec::new(),
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
    /// Compiles stage `index` once; the result is in `self.done[index]`.
    pub(super) fn stage(&mut self, index: usize, depth: usize) -> Result<&StageOutput> {
        if self.done[index].is_some() {
            return Ok(self.done[index].as_ref().expect("checked above"));
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
        Ok(self.done[index].insert(output))
    }

    fn compile_stage(&mut self, stage: &'a Stage, depth: usize) -> Result<StageOutput> {
        let globals = self.global_env();
        let global_names: Vec<String> = self.globals.iter().map(|(k, _)| k.clone()).collect();
        let is_global = |n: &str| global_names.iter().any(|g| g == n);
        let before = self.problems.len();
        let image = self.expand(&stage.from.image, &globals, &is_global, stage.line)?;
        let platform = match &stage.from.platform {
            Some(p) => {
                let text = self.expand(p, &globals, &is_global, stage.line)?;
                Platform::parse(&text).map_err(|k| self.error(stage.line, k, Some("--platform")))?
            }
            None => self.target_platform.clone(),
        };
        // BuildKit names undeclared variables in FROM differently.
        for problem in &mut self.problems[before..] {
            if let Some(name) = problem.message.split('\'').nth(1) {
                problem.message = format!(
                    "FROM argument '{}' is not declared",
                    name.trim_start_matches('$')
                );
            }
            problem.rule = "UndefinedArgInFrom";
        }
        let label = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        let mut state = StageState {
            root: None,
            config: ImageConfig::default(),
            platform: platform.clone(),
            args: Vec::new(),
            inherited: Vec::new(),
            cmd_set: false,
            scope: None,
            label,
            step: 1,
            steps: stage.commands.len() + 1,
        };
        let base_stage = self.df.find_stage(&image, Some(stage.index));
        if let Some(base) = base_stage {
            let out = self.stage(base, depth + 1)?;
            state.root = out.root;
            state.config = out.config.clone();
            state.inherited = self.arg_env[base].clone();
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
                self.instruction(&mut state, command, depth)?;
            }
        }
        for command in &stage.commands {
            state.step += 1;
            self.instruction(&mut state, command, depth)?;
        }
        let mut arg_env = state.inherited.clone();
        for (key, value) in &state.args {
            let Some(value) = value else { continue };
            if PROXY_ARGS.contains(&key.as_str()) {
                continue;
            }
            arg_env.retain(|(k, _)| k != key);
            arg_env.push((key.clone(), value.clone()));
        }
        self.arg_env[stage.index] = arg_env;
        Ok(StageOutput {
            index: stage.index,
            name: stage.name.clone(),
            platform,
            root: state.root,
            config: state.config,
            args: state.args,
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
        command: &Command,
        depth: usize,
    ) -> Result<()> {
        let scope = state.scope();
        let env = scope.env.as_slice();
        let declared = |n: &str| scope.is_declared(n);
        let line = command.line;
        match &command.instruction {
            Instruction::From(_) => unreachable!("FROM starts a stage"),
            Instruction::Env { pairs } => {
                let pairs = self.expand_pairs(pairs, env, &declared, line)?;
                let mut text = String::from("ENV");
                for (k, v) in &pairs {
                    state.set_env(k, v);
                    text.push_str(&format!(" {k}={v}"));
                }
                state.history(text, true);
            }
            Instruction::Label { pairs } => {
                let pairs = self.expand_pairs(pairs, env, &declared, line)?;
                let mut text = String::from("LABEL");
                for (k, v) in pairs {
                    text.push_str(&format!(" {k}={v}"));
                    state.config.labels.insert(k, v);
                }
                state.history(text, true);
            }
            Instruction::Arg { args } => {
                // Every name sees the values from before the instruction.
                let globals = std::mem::take(&mut self.globals);
                let mut declared_now = Vec::new();
                // History shows the Dockerfile's default, never a
                // --build-arg value (as BuildKit writes it).
                let mut parts = Vec::new();
                for decl in args {
                    match self.declare_arg(decl, env, command, Some(&globals)) {
                        Ok(pair) => {
                            let shown = decl
                                .value
                                .as_ref()
                                .and_then(|d| self.lexer.process_word(d, env).ok());
                            parts.push(match shown {
                                Some(v) => format!("{}={v}", pair.0),
                                None => pair.0.clone(),
                            });
                            declared_now.push(pair);
                        }
                        Err(e) => {
                            self.globals = globals;
                            return Err(e);
                        }
                    }
                }
                self.globals = globals;
                for (key, value) in declared_now {
                    match state.args.iter_mut().find(|(k, _)| *k == key) {
                        // Declared again: it keeps its place, and a
                        // declaration without a value keeps the value it
                        // had (as BuildKit's stage environment does).
                        Some(slot) => {
                            if value.is_some() {
                                slot.1 = value;
                            }
                        }
                        None => state.args.push((key, value)),
                    }
                }
                state.scope = None;
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
                        .process_words(port, env)
                        .map_err(|e| self.error(line, e.into(), None))?;
                    for word in words {
                        if let Some((_, proto)) = word.split_once('/') {
                            if proto != proto.to_ascii_lowercase() {
                                self.problems.push(Problem {
                                    rule: "ExposeProtoCasing",
                                    level: Level::Warning,
                                    message: format!("Defined protocol '{word}' in EXPOSE instruction should be lowercase"),
                                    line,
                                });
                            }
                        }
                        for p in expand_port(&word).map_err(|k| self.error(line, k, Some(port)))? {
                            if !state.config.exposed_ports.contains(&p) {
                                state.config.exposed_ports.push(p.clone());
                            }
                            added.push(p);
                        }
                    }
                }
                // As BuildKit writes it: the expanded ports as a Go slice.
                state.history(format!("EXPOSE [{}]", added.join(" ")), true);
            }
            Instruction::Volume { paths } => {
                let mut added = Vec::new();
                for p in paths {
                    let v = self.expand(p, env, &declared, line)?;
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
                let user = self.expand(user, env, &declared, line)?;
                state.config.user = user.clone();
                state.history(format!("USER {user}"), true);
            }
            Instruction::Workdir { path } => {
                let path = self.expand(path, env, &declared, line)?;
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
                let signal = self.expand(signal, env, &declared, line)?;
                if !is_valid_signal(&signal) {
                    return Err(self.error(line, ErrorKind::InvalidSignal { value: signal }, None));
                }
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
                // BuildKit marks CMD's arguments as escaped (docker's
                // ArgsEscaped, for Windows); ENTRYPOINT does not.
                state.config.args_escaped = true;
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
                // BuildKit records no history entry for ONBUILD.
                state.config.on_build.push(expression.clone());
            }
            Instruction::Run(run) => self.run(state, command, run, env, depth)?,
            Instruction::Copy(copy) | Instruction::Add(copy) => {
                self.copy(state, command, copy, env, &declared, depth)?
            }
        }
        Ok(())
    }

    pub(super) fn add(
        &mut self,
        state: &StageState,
        op: Op,
        inputs: Vec<Input>,
        command: &Command,
    ) -> NodeId {
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
    pub(super) fn resolve_from(
        &mut self,
        name: &str,
        line: usize,
        depth: usize,
        platform: &Platform,
    ) -> Result<Option<NodeId>> {
        // Unlike FROM, `--from` may name any stage, earlier or later
        // (BuildKit resolves it once all stages are known); cycles fail.
        if let Some(index) = self.df.find_stage(name, None) {
            return Ok(self.stage(index, depth + 1)?.root);
        }
        let simple = !name.contains(['/', ':', '@']);
        let numeric = !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit());
        let close = simple
            .then(|| suggest(name, self.df.stage_names()))
            .flatten();
        if numeric || close.is_some() || name.is_empty() {
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

    pub(super) fn flag_error(
        &self,
        line: usize,
        flag: &str,
        value: String,
        expected: &'static str,
    ) -> Error {
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

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
