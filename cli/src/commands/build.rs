//! `kiln build`: builds an image (the solver with its cache, the result
//! named in the store), or with `--check` parses, compiles and lints, or
//! with `--print-graph` shows the op graph.

use std::collections::HashSet;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln_builder::dockerfile::dockerignore;
use kiln_builder::graph::output::{to_dot, to_json};
use kiln_builder::{
    compile_with_problems, lint, CompileOptions, Dockerfile, ImageConfig, ImageSource, Level,
    Platform,
};

use crate::commands::pull::{ensure_image, pull_image};
use crate::settings::RegistrySettings;
use crate::ExitStatus;

/// Output format of `--print-graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT (`| dot -Tsvg > graph.svg`).
    Dot,
    /// JSON: nodes, inputs, digests, stages.
    Json,
}

// Arguments of `kiln build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Build context: a directory, or `-` for a Dockerfile on stdin.
    pub context: String,

    /// Name of the Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,

    /// Stage to build (default: the last one).
    #[arg(long)]
    pub target: Option<String>,

    /// Build-time variable KEY=VALUE (KEY alone takes it from the environment).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,

    /// Target platform, os/arch[/variant] (default: this host's).
    #[arg(long)]
    pub platform: Option<String>,

    /// Parse and compile without running anything; print problems.
    #[arg(long, conflicts_with = "print_graph")]
    pub check: bool,

    /// Print the op graph instead of building.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub print_graph: Option<GraphFormat>,

    /// Name (and tag) of the image, NAME[:TAG]; may repeat.
    #[arg(short = 't', long = "tag", value_name = "NAME:TAG")]
    pub tags: Vec<String>,

    /// Do not use the build cache (new results are still recorded).
    #[arg(long)]
    pub no_cache: bool,

    /// Write the image id to this file.
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,

    /// Progress output: tty a live view (auto on a terminal), plain
    /// BuildKit-style lines (auto elsewhere), json one JSON object per
    /// event, quiet only the image id.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,

    /// Steps busy at once (default: the number of cores). A RUN step whose
    /// container is idle (under 10% of one CPU over 50 ms, not always
    /// runnable: sleeping, waiting on the network or disk) gives its slot
    /// back and keeps running, so another step can start; busy again, it
    /// takes a slot back when one is free, else runs on without one (waking
    /// steps can exceed the bound). COPY, layer diffs and hashing hold their
    /// slot.
    #[arg(long)]
    pub jobs: Option<usize>,

    /// Image label KEY=VALUE; may repeat.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,

    /// Secret for `RUN --mount=type=secret`: id=ID,src=FILE or id=ID,env=VAR
    /// (also type=file|env); may repeat.
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    pub secrets: Vec<String>,

    /// Network of RUN steps without their own --network: default, host or none.
    #[arg(long, value_name = "MODE", default_value = "default")]
    pub network: String,

    /// Output: type=image|oci|docker|local|tar[,dest=PATH][,name=NAME],
    /// DIR (type=local) or - (a tar on stdout); may repeat.
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,

    /// Write the build result's metadata (image digest, config digest,
    /// descriptor, names) to this file as JSON.
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// Always pull base images from their registry, even when present.
    #[arg(long)]
    pub pull: bool,

    /// Do not use the cache for the steps of these stages; may repeat.
    #[arg(long = "no-cache-filter", value_name = "STAGE", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,

    /// Print only the image id (`--progress quiet`).
    #[arg(short = 'q', long, conflicts_with = "progress")]
    pub quiet: bool,
}

impl BuildArgs {
    /// `--progress`, with `-q` meaning quiet.
    pub fn progress_mode(&self) -> ProgressMode {
        if self.quiet {
            ProgressMode::Quiet
        } else {
            self.progress
        }
    }
}

/// `--progress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// tty when stderr is a terminal, plain otherwise.
    Auto,
    /// A live terminal view: running steps with timers and output tails.
    Tty,
    /// Lines like BuildKit's `--progress plain`.
    Plain,
    /// One JSON object per event (time, step, event, ...).
    Json,
    /// Nothing but the image id on stdout.
    Quiet,
}

impl ProgressMode {
    /// Whether pull progress lines would get in the way (json, quiet).
    fn is_machine_or_quiet(self) -> bool {
        matches!(self, ProgressMode::Json | ProgressMode::Quiet)
    }
}

/// Base image configs for FROM and ONBUILD.
struct StoreImages {
    store: Option<kiln_store::Store>,
    /// Set when building: a base image missing from the store is pulled
    /// (as `docker build` does), so its config (ENV, USER, ...) applies.
    /// `--check` and `--print-graph` leave it unset and stay offline.
    pull: Option<RegistrySettings>,
    /// Pull without progress lines (`--progress quiet|json`).
    quiet_pull: bool,
    /// `--pull`: base images pulled again, each once per build.
    refresh: Option<std::sync::Arc<Refresh>>,
    /// The images read for their configs, by reference: the solver takes
    /// its base images from here rather than looking them up again.
    resolved: Resolved,
}

/// Base images already found in this build, by reference as written.
pub type Resolved = std::sync::Arc<Mutex<std::collections::HashMap<String, kiln_store::Image>>>;

/// The base images a `--pull` build has pulled: each is pulled again
/// from its registry once, then read from the store.
#[derive(Debug, Default)]
pub struct Refresh {
    pulled: Mutex<HashSet<String>>,
}

/// A base image for a build: pulled when missing, or always once per
/// build with `--pull` (`refresh`).
pub fn base_image(
    store: &kiln_store::Store,
    settings: &RegistrySettings,
    reference: &str,
    quiet: bool,
    refresh: Option<&Refresh>,
) -> anyhow::Result<kiln_store::Image> {
    let Some(refresh) = refresh else {
        return ensure_image(store, settings, reference, quiet);
    };
    // Held across the pull: a reference asked for twice at once is pulled once.
    let mut pulled = refresh.pulled.lock().expect("not poisoned");
    if pulled.contains(reference) {
        return crate::commands::find_image(store, reference);
    }
    let image = pull_image(store, settings, reference, quiet)?;
    pulled.insert(reference.to_string());
    Ok(image)
}

impl ImageSource for StoreImages {
    fn image_config(
        &self,
        reference: &str,
        _platform: &str,
    ) -> Result<Option<ImageConfig>, Box<dyn std::error::Error + Send + Sync>> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let image = match &self.pull {
            Some(settings) => base_image(
                store,
                settings,
                reference,
                self.quiet_pull,
                self.refresh.as_deref(),
            )?,
            // Offline: only images already in the store are known.
            None => match crate::commands::find_image(store, reference) {
                Ok(image) => image,
                Err(_) => return Ok(None),
            },
        };
        let bytes = store.content().read(&image.config_digest)?;
        self.resolved
            .lock()
            .expect("not poisoned")
            .insert(reference.to_string(), image);
        Ok(Some(ImageConfig::from_config_json(&bytes)?))
    }
}

/// The Dockerfile's text, the name to show in messages, and its path.
fn read_dockerfile(args: &BuildArgs) -> anyhow::Result<(String, String, PathBuf)> {
    if args.context == "-" && args.file.is_some() {
        anyhow::bail!("-f cannot be used with a Dockerfile on stdin (context \"-\")");
    }
    if args.context == "-" || args.file.as_deref() == Some(Path::new("-")) {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the Dockerfile from stdin")?;
        return Ok((text, "Dockerfile".to_string(), PathBuf::from("Dockerfile")));
    }
    let path = match &args.file {
        Some(f) => f.clone(),
        None => Path::new(&args.context).join("Dockerfile"),
    };
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let name = match &args.file {
        Some(f) => f.display().to_string(),
        None => "Dockerfile".to_string(),
    };
    Ok((text, name, path))
}

/// With the Dockerfile on stdin (context `-`) there are no files: a step
/// that reads the context is an error, said before anything runs.
fn no_context_problem(args: &BuildArgs, graph: &kiln_builder::Graph) -> Option<String> {
    if args.context != "-" {
        return None;
    }
    let target = graph.target_stage().root?;
    let mut need = vec![false; graph.nodes.len()];
    let mut stack = vec![target];
    while let Some(id) = stack.pop() {
        if !std::mem::replace(&mut need[id], true) {
            stack.extend(graph.nodes[id].inputs.iter().map(|i| i.node));
        }
    }
    graph.nodes.iter().enumerate().find_map(|(id, node)| {
        let reads_context = node.inputs.iter().any(|input| {
            matches!(graph.nodes[input.node].op, kiln_builder::Op::Context { .. })
        });
        (need[id] && reads_context).then(|| {
            let line = node.line.map(|l| format!("Dockerfile:{l}: ")).unwrap_or_default();
            format!(
                "{line}{} reads the build context, but the Dockerfile came from stdin (context \"-\") and there is none; give a context directory (kiln build -f - DIR)",
                node.description
            )
        })
    })
}

/// The nodes of the stages named by `--no-cache-filter` (a name, or a
/// stage's index): each stage's own steps, from its last one back along
/// its file system to where it starts.
fn no_cache_nodes(
    dockerfile: &Dockerfile,
    graph: &kiln_builder::Graph,
    filter: &[String],
) -> anyhow::Result<std::collections::BTreeSet<usize>> {
    let mut nodes = std::collections::BTreeSet::new();
    for wanted in filter.iter().map(|w| w.trim()).filter(|w| !w.is_empty()) {
        let found = dockerfile.stages.iter().position(|stage| {
            stage
                .name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(wanted))
                || wanted.parse::<usize>().ok() == Some(stage.index)
        });
        let Some(index) = found else {
            anyhow::bail!("--no-cache-filter: the Dockerfile has no stage {wanted:?}");
        };
        // A stage the target does not need is not built at all.
        let Some(stage) = graph.stages.iter().find(|s| s.index == index) else {
            continue;
        };
        let label = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        let prefix = format!("[{label} ");
        let mut next = stage.root;
        while let Some(id) = next {
            let node = &graph.nodes[id];
            if !node.description.starts_with(&prefix) {
                break;
            }
            nodes.insert(id);
            next = node
                .inputs
                .iter()
                .find(|i| i.role == "rootfs")
                .map(|i| i.node);
        }
    }
    Ok(nodes)
}

fn parse_build_args(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for text in raw {
        match text.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            Some(_) => anyhow::bail!("invalid --build-arg {text:?}: expected KEY=VALUE"),
            None => {
                if let Ok(v) = std::env::var(text) {
                    out.push((text.clone(), v));
                }
            }
        }
    }
    Ok(out)
}

/// `--platform`: the host's (`local` is the host, as in buildx); another
/// platform would need emulation, which kiln does not do.
fn target_platform(text: &str) -> anyhow::Result<Platform> {
    let host = Platform::host();
    let mut chosen: Option<Platform> = None;
    for part in text.split(',').map(str::trim) {
        let platform = if part == "local" {
            host.clone()
        } else {
            Platform::parse(part).map_err(|e| anyhow::anyhow!("--platform: {e}"))?
        };
        if platform.os != host.os || platform.architecture != host.architecture {
            anyhow::bail!(
                "--platform {part}: kiln builds only for this host's platform ({host}); building for {platform} would need emulation"
            );
        }
        if chosen.as_ref().is_some_and(|c| *c != platform) {
            anyhow::bail!("--platform {text}: a build makes one platform's image");
        }
        chosen = Some(platform);
    }
    chosen.ok_or_else(|| anyhow::anyhow!("--platform: no platform given"))
}

pub fn run(global: &crate::args::Cli, args: &BuildArgs) -> anyhow::Result<ExitStatus> {
    kiln_builder::timing::mark("build command start");
    let building = !args.check && args.print_graph.is_none();
    if building && args.progress_mode() == ProgressMode::Tty && !std::io::stderr().is_terminal() {
        anyhow::bail!("--progress tty: standard error is not a terminal; use auto or plain");
    }
    // Every --output is checked before anything is read or built.
    let outputs = if building {
        crate::commands::build_output::parse_all(&args.outputs)?
    } else {
        Vec::new()
    };
    let platform = match &args.platform {
        Some(p) if building => Some(target_platform(p)?),
        Some(p) => Some(Platform::parse(p).map_err(|e| anyhow::anyhow!("--platform: {e}"))?),
        None => None,
    };
    let (text, name, path) = read_dockerfile(args)?;
    let dockerignore = if args.context == "-" {
        Vec::new()
    } else if args.file.as_deref() == Some(Path::new("-")) {
        // The Dockerfile has no file beside which to look for its own ignore file.
        let file = Path::new(&args.context).join(".dockerignore");
        match std::fs::read_to_string(&file) {
            Ok(text) => dockerignore::read_patterns(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        }
    } else {
        dockerignore::load(Path::new(&args.context), &path)
            .map_err(|e| anyhow::anyhow!("{}", e.kind))?
    };
    kiln_builder::timing::mark("Dockerfile and .dockerignore read");
    let options = CompileOptions {
        target: args.target.clone(),
        build_args: parse_build_args(&args.build_args)?,
        platform,
        dockerignore,
        all_stages: args.check,
    };
    // A root that does not exist yet holds no images; checking a
    // Dockerfile must not create one. A build opens (or creates) the store
    // first, since it may pull base images into it.
    let images = if building {
        let store = kiln_store::Store::open(&global.root)
            .with_context(|| format!("opening the store at {}", global.root.display()))?;
        StoreImages {
            store: Some(store),
            pull: Some(RegistrySettings::from_cli(global)),
            quiet_pull: args.progress_mode().is_machine_or_quiet(),
            refresh: args.pull.then(Default::default),
            resolved: Resolved::default(),
        }
    } else {
        StoreImages {
            store: global
                .root
                .join("oci-layout")
                .exists()
                .then(|| kiln_store::Store::open(&global.root))
                .transpose()?,
            pull: None,
            quiet_pull: true,
            refresh: None,
            resolved: Resolved::default(),
        }
    };
    kiln_builder::timing::mark("store opened");
    let dockerfile = match Dockerfile::parse(&name, &text) {
        Ok(df) => df,
        Err(e) => {
            write!(std::io::stderr(), "{}", e.render())?;
            return Ok(ExitStatus::FAILURE);
        }
    };
    // Compiling may pull a base image, whose progress writes to stderr from
    // the pull's threads: stderr is locked only afterwards.
    let compiled = compile_with_problems(&dockerfile, &options, &images);
    kiln_builder::timing::mark("compiled");
    let mut stderr = std::io::stderr().lock();
    if building {
        let graph = match compiled {
            Ok((graph, _)) => graph,
            Err(e) => {
                write!(stderr, "{}", e.render())?;
                // Why a base image could not be read or pulled.
                if let Some(cause) = std::error::Error::source(&e.kind) {
                    writeln!(stderr, "{}", kiln_builder::solve::error_chain(cause))?;
                }
                return Ok(ExitStatus::FAILURE);
            }
        };
        if let Some(problem) = no_context_problem(args, &graph) {
            writeln!(stderr, "{problem}")?;
            return Ok(ExitStatus::FAILURE);
        }
        drop(stderr);
        let no_cache_nodes = no_cache_nodes(&dockerfile, &graph, &args.no_cache_filter)?;
        let (Some(store), Some(settings)) = (images.store, images.pull) else {
            unreachable!("a build opens the store and resolves registry settings above");
        };
        return crate::commands::build_run::build(
            &store,
            &settings,
            args,
            &graph,
            &path,
            &options.build_args,
            crate::commands::build_run::Extra {
                outputs,
                no_cache_nodes,
                refresh: images.refresh,
                resolved: images.resolved,
            },
        );
    }
    let mut stdout = std::io::stdout().lock();
    if let Some(format) = args.print_graph {
        let (graph, _) = match compiled {
            Ok(c) => c,
            Err(e) => {
                write!(stderr, "{}", e.render())?;
                return Ok(ExitStatus::FAILURE);
            }
        };
        let out = match format {
            GraphFormat::Dot => to_dot(&graph),
            GraphFormat::Json => to_json(&graph) + "\n",
        };
        stdout.write_all(out.as_bytes())?;
        return Ok(ExitStatus::SUCCESS);
    }
    let check = &dockerfile.directives.check;
    let mut problems = lint(&dockerfile);
    let mut failed = false;
    match compiled {
        Ok((_, found)) => problems.extend(found),
        Err(e) => {
            write!(stderr, "{}", e.render())?;
            failed = true;
        }
    }
    problems
        .retain(|p| !check.skip_all && !check.skip.iter().any(|s| s.eq_ignore_ascii_case(p.rule)));
    problems.sort_by_key(|p| p.line);
    problems.dedup();
    for p in &problems {
        writeln!(stdout, "{p}")?;
    }
    let warnings = problems
        .iter()
        .filter(|p| p.level == Level::Warning)
        .count();
    failed |= problems.iter().any(|p| p.level == Level::Error) || (check.error && warnings > 0);
    match warnings {
        0 if !failed => writeln!(stdout, "Check complete, no warnings found.")?,
        0 => {}
        1 => writeln!(stdout, "Check complete, 1 warning has been found!")?,
        n => writeln!(stdout, "Check complete, {n} warnings have been found!")?,
    }
    Ok(if failed {
        ExitStatus::FAILURE
    } else {
        ExitStatus::SUCCESS
    })
}
