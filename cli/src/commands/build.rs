//! `kiln build`: builds an image (the solver with its cache, the result
//! named in the store), or with `--check` parses, compiles and lints, or
//! with `--print-graph` shows the op graph.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use kiln_builder::dockerfile::dockerignore;
use kiln_builder::graph::output::{to_dot, to_json};
use kiln_builder::{
    compile_with_problems, lint, CompileOptions, Dockerfile, ImageConfig, ImageSource, Level,
    Platform,
};

use crate::commands::pull::ensure_image;
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

/// Arguments of `kiln build`.
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

    /// Progress output: auto and plain print BuildKit-style lines, json one
    /// JSON object per event, quiet only the image id.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,

    /// Steps running at once (default: the number of cores).
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
}

/// `--progress` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// plain (a live terminal view is not available yet).
    Auto,
    /// A live terminal view (not supported yet).
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
            Some(settings) => ensure_image(store, settings, reference, self.quiet_pull)?,
            // Offline: only images already in the store are known.
            None => match crate::commands::find_image(store, reference) {
                Ok(image) => image,
                Err(_) => return Ok(None),
            },
        };
        let bytes = store.content().read(&image.config_digest)?;
        Ok(Some(ImageConfig::from_config_json(&bytes)?))
    }
}

/// The Dockerfile's text, the name to show in messages, and its path.
fn read_dockerfile(args: &BuildArgs) -> anyhow::Result<(String, String, PathBuf)> {
    if args.context == "-" {
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

pub fn run(global: &crate::args::Cli, args: &BuildArgs) -> anyhow::Result<ExitStatus> {
    let building = !args.check && args.print_graph.is_none();
    if building && args.context == "-" {
        anyhow::bail!("building from a Dockerfile on stdin (context \"-\") is not supported yet; give a context directory");
    }
    if building && args.progress == ProgressMode::Tty {
        anyhow::bail!("--progress tty is not supported yet; use plain, json or quiet");
    }
    if building && args.platform.is_some() {
        anyhow::bail!("--platform is not supported yet for builds (only the host's platform)");
    }
    let (text, name, path) = read_dockerfile(args)?;
    let platform = match &args.platform {
        Some(p) => Some(Platform::parse(p).map_err(|e| anyhow::anyhow!("--platform: {e}"))?),
        None => None,
    };
    let dockerignore = if args.context == "-" {
        Vec::new()
    } else {
        dockerignore::load(Path::new(&args.context), &path)
            .map_err(|e| anyhow::anyhow!("{}", e.kind))?
    };
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
            quiet_pull: args.progress.is_machine_or_quiet(),
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
        }
    };
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
        drop(stderr);
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
