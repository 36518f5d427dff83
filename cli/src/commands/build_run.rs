//! Running a build: the solver with the store, progress output, export
//! and names. Joins kiln-builder and kiln-store; a missing base image is
//! pulled from its registry.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use kiln_builder::solve::error_chain;
use kiln_builder::{solve, Graph, ImageResolver, Platform, SolveError, SolveOptions};
use kiln_store::Store;

use crate::build_progress::{BuildProgress, Style};
use crate::commands::build::{base_image, BuildArgs, ProgressMode, Refresh, Resolved};
use crate::commands::build_output::{self, write_atomic, Dest, Kind, Output};
use crate::settings::RegistrySettings;
use crate::ExitStatus;

/// Base images from the store, pulled first when missing (or again with
/// `--pull`).
struct StoreResolver {
    settings: RegistrySettings,
    /// Pull without progress lines.
    quiet: bool,
    refresh: Option<Arc<Refresh>>,
    /// Images compiling the Dockerfile found already (for their configs).
    resolved: Resolved,
}

impl ImageResolver for StoreResolver {
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        _platform: &Platform,
    ) -> Result<kiln_store::Image, Box<dyn std::error::Error + Send + Sync>> {
        // Found (or pulled) for its config while compiling: the same image.
        if let Some(image) = self.resolved.lock().expect("not poisoned").get(reference) {
            return Ok(image.clone());
        }
        // The solver calls this from `spawn_blocking` on its runtime; the
        // pull starts a runtime of its own, so it runs on a plain thread
        // rather than nesting one runtime in another.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    base_image(
                        store,
                        &self.settings,
                        reference,
                        self.quiet,
                        self.refresh.as_deref(),
                    )
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .map_err(|e| anyhow::anyhow!("{e:#}").into())
    }
}

/// What `kiln build` decided before solving: checked outputs, the nodes
/// `--no-cache-filter` names, the `--pull` record.
pub struct Extra {
    pub outputs: Vec<Output>,
    pub no_cache_nodes: BTreeSet<usize>,
    pub refresh: Option<Arc<Refresh>>,
    /// Base images compiling found, by reference.
    pub resolved: Resolved,
}

/// The `--progress` style for this run (`auto`: tty on a terminal).
fn progress_style(mode: ProgressMode) -> Style {
    match mode {
        ProgressMode::Auto if std::io::stderr().is_terminal() => Style::Tty,
        ProgressMode::Auto | ProgressMode::Plain => Style::Plain,
        ProgressMode::Tty => Style::Tty,
        ProgressMode::Json => Style::Json,
        ProgressMode::Quiet => Style::Quiet,
    }
}

/// The number of steps the target needs (the solver numbers them 1..=n).
fn steps_needed(graph: &Graph) -> usize {
    let mut need = vec![false; graph.nodes.len()];
    let mut stack: Vec<usize> = graph.target_stage().root.into_iter().collect();
    while let Some(id) = stack.pop() {
        if !std::mem::replace(&mut need[id], true) {
            stack.extend(graph.nodes[id].inputs.iter().map(|i| i.node));
        }
    }
    need.iter().filter(|&&n| n).count()
}

fn parse_labels(raw: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    raw.iter()
        .map(|text| match text.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("invalid --label {text:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// `--secret` and `--network`.
fn run_options(args: &BuildArgs) -> anyhow::Result<kiln_builder::solve::RunOptions> {
    use kiln_builder::dockerfile::instructions::Network;
    let network = match args.network.as_str() {
        "default" => Network::Default,
        "host" => Network::Host,
        "none" => Network::None,
        other => anyhow::bail!("invalid --network {other:?}: expected default, host or none"),
    };
    let mut secrets = kiln_builder::solve::Secrets::default();
    for text in &args.secrets {
        let (id, value) = parse_secret(text)?;
        secrets.insert(id, value);
    }
    Ok(kiln_builder::solve::RunOptions { secrets, network })
}

/// One `--secret` (buildx's syntax): `[type=file|env,]id=ID[,src=FILE|env=VAR]`.
/// With neither src nor env, the variable ID if set, else the file ID.
/// Errors name the id and the source, never the value.
fn parse_secret(text: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let (mut kind, mut id, mut src, mut env) = (None, None, None, None);
    for field in text.split(',') {
        let (key, value) = field.split_once('=').ok_or_else(|| {
            anyhow::anyhow!("invalid --secret {text:?}: {field:?} is not key=value")
        })?;
        match key.trim().to_ascii_lowercase().as_str() {
            "type" => kind = Some(value.to_string()),
            "id" => id = Some(value.to_string()),
            "src" | "source" => src = Some(value.to_string()),
            "env" => env = Some(value.to_string()),
            _ => anyhow::bail!("invalid --secret {text:?}: unexpected key {key:?}"),
        }
    }
    let id = id
        .or_else(|| env.clone())
        .or_else(|| {
            src.as_deref()
                .and_then(|s| Path::new(s).file_name())
                .map(|n| n.to_string_lossy().into_owned())
        })
        .filter(|i| !i.is_empty())
        .ok_or_else(|| anyhow::anyhow!("invalid --secret {text:?}: no id"))?;
    let from_env = |var: &str| {
        std::env::var_os(var)
            .map(|v| v.into_encoded_bytes())
            .ok_or_else(|| anyhow::anyhow!("secret {id}: environment variable {var} is not set"))
    };
    let from_file =
        |file: &str| std::fs::read(file).with_context(|| format!("secret {id}: reading {file}"));
    let value = match kind.as_deref() {
        Some("env") => from_env(env.as_deref().or(src.as_deref()).unwrap_or(&id))?,
        Some("file") => from_file(src.as_deref().unwrap_or(&id))?,
        Some(other) => {
            anyhow::bail!("invalid --secret {text:?}: type {other:?}: expected file or env")
        }
        None => match (&src, &env) {
            (Some(file), _) => from_file(file)?,
            (None, Some(var)) => from_env(var)?,
            (None, None) if std::env::var_os(&id).is_some() => from_env(&id)?,
            (None, None) => from_file(&id)?,
        },
    };
    Ok((id, value))
}

/// Builds the target of `graph` and writes the result to its outputs
/// (by default, the image named in the store).
pub fn build(
    store: &Store,
    settings: &RegistrySettings,
    args: &BuildArgs,
    graph: &Graph,
    dockerfile: &Path,
    build_args: &[(String, String)],
    extra: Extra,
) -> anyhow::Result<ExitStatus> {
    let tags = args
        .tags
        .iter()
        .map(|t| crate::names::normalize(t).with_context(|| format!("invalid tag {t:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut outputs = extra.outputs;
    // No --output: the image goes into the store, named by -t. With other
    // outputs -t names the image inside oci/docker archives only, as
    // docker build does (its -t does not reach `docker images` then).
    if outputs.is_empty() {
        outputs.push(Output {
            kind: Kind::Image,
            dest: Dest::None,
            names: Vec::new(),
        });
    }
    let labels = parse_labels(&args.labels)?;
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(
            v.parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        ),
        _ => None,
    };
    // A Dockerfile on stdin has no context: nothing reads it (checked
    // before), and the step identities say "-".
    let context_dir = if args.context == "-" {
        PathBuf::from("-")
    } else {
        std::fs::canonicalize(&args.context)
            .with_context(|| format!("build context {}", args.context))?
    };
    let options = SolveOptions {
        context_dir,
        dockerfile: std::fs::canonicalize(dockerfile).unwrap_or_else(|_| dockerfile.to_path_buf()),
        no_cache: args.no_cache,
        no_cache_nodes: extra.no_cache_nodes,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        source_date_epoch,
        build_arg_names: build_args.iter().map(|(k, _)| k.clone()).collect(),
        run: run_options(args)?,
    };
    let style = progress_style(args.progress_mode());
    let renderer = Arc::new(BuildProgress::new(style, steps_needed(graph)));
    let lease = Arc::new(store.lease().context("taking a store lease")?);
    kiln_builder::timing::mark("lease taken, solving");
    let solved = match solve(
        store,
        lease.clone(),
        graph,
        &options,
        Arc::new(StoreResolver {
            settings: settings.clone(),
            // A pull's own bars would tear the live view: its step's timer shows it.
            quiet: style != Style::Plain,
            refresh: extra.refresh,
            resolved: extra.resolved,
        }),
        renderer.clone(),
    ) {
        Ok(solved) => solved,
        Err(error) => {
            renderer.finish();
            if !renderer.shows_failures() {
                report_failure(&error);
            }
            return Err(anyhow::anyhow!("failed to solve: {}", error_chain(&error)));
        }
    };
    // SOURCE_DATE_EPOCH wins; otherwise the time the last step was first
    // built, so a fully cached rebuild gives the same image id.
    let created = match source_date_epoch.or(solved.created) {
        Some(secs) => chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default(),
        None => chrono::Utc::now(),
    }
    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let config =
        kiln_builder::export::config_json(graph.target_stage(), &solved, &created, &labels);
    kiln_builder::timing::mark("solved");
    let exported = export(store, &lease, &renderer, &outputs, &tags, &config, &solved)
        .inspect_err(|_| renderer.finish())?;
    kiln_builder::timing::mark("exported");
    drop(lease);
    renderer.finish();
    kiln_builder::timing::mark("lease dropped");
    let id = exported.image.config_digest.to_string();
    let stdout_taken = outputs.iter().any(|o| o.dest == Dest::Stdout);
    if args.progress_mode() == ProgressMode::Quiet && !stdout_taken {
        println!("{id}");
    }
    if let Some(file) = &args.iidfile {
        std::fs::write(file, &id).with_context(|| format!("writing {}", file.display()))?;
    }
    if let Some(file) = &args.metadata_file {
        let metadata = metadata_json(&exported, &outputs);
        write_atomic(file, |out| {
            serde_json::to_writer_pretty(&mut *out, &metadata)?;
            Ok(out.write_all(b"\n")?)
        })?;
    }
    Ok(ExitStatus::SUCCESS)
}

/// The image written by a build, with every name it was given.
struct Written {
    image: kiln_builder::export::Exported,
    names: Vec<String>,
}

/// Writes the image and each output, with BuildKit's export lines.
fn export(
    store: &Store,
    lease: &kiln_store::Lease,
    renderer: &BuildProgress,
    outputs: &[Output],
    tags: &[String],
    config: &[u8],
    solved: &kiln_builder::Solved,
) -> anyhow::Result<Written> {
    // A fully cached rebuild whose -t names already point at the image
    // writes nothing (no lease, no metadata write), and reads the metadata
    // once for the check and the naming.
    let hold = store.hold_metadata();
    let unchanged = kiln_builder::export::already_named(store, config, &solved.layers, tags)
        .map_err(|e| anyhow::anyhow!("exporting the image: {}", error_chain(&e)))?;
    let mut hold = unchanged.is_some().then_some(hold);
    let image = match unchanged {
        Some(image) => image,
        None => kiln_builder::export::write_image(store, lease, config, &solved.layers)
            .map_err(|e| anyhow::anyhow!("exporting the image: {}", error_chain(&e)))?,
    };
    let id = image.config_digest.to_string();
    let manifest_digest = image.manifest.digest().to_string();
    let mut all_names: Vec<String> = Vec::new();
    for output in outputs {
        if output.kind != Kind::Image {
            // Writing an archive or files takes long: other kiln processes
            // must not wait for the metadata meanwhile.
            hold = None;
        }
        // `name=` when given, else the -t names (as buildx passes them).
        let names = if output.names.is_empty() {
            tags.to_vec()
        } else {
            output.names.clone()
        };
        if output.kind.is_image() {
            for name in &names {
                if !all_names.contains(name) {
                    all_names.push(name.clone());
                }
            }
        }
        match output.kind {
            Kind::Image => {
                renderer.export_start("exporting to image");
                kiln_builder::export::name_image(store, &image, &names)
                    .map_err(|e| anyhow::anyhow!("exporting the image: {}", error_chain(&e)))?;
                renderer.export_line(&format!("writing image {id} done"));
                for name in &names {
                    renderer.export_line(&format!("naming to {name} done"));
                }
            }
            Kind::Oci | Kind::Docker => {
                let format = if output.kind == Kind::Oci {
                    "oci"
                } else {
                    "docker"
                };
                renderer.export_start(&format!("exporting to {format} image format"));
                renderer.export_line(&format!("exporting manifest {manifest_digest} done"));
                renderer.export_line(&format!("exporting config {id} done"));
                let loaded = store
                    .load_image(&image.manifest, names.clone())
                    .context("reading the built image")?;
                build_output::write_archive(store, output, loaded, names)?;
                renderer.export_line("sending tarball done");
            }
            Kind::Local | Kind::Tar => {
                let title = if output.kind == Kind::Local {
                    "exporting to client directory"
                } else {
                    "exporting to client tarball"
                };
                renderer.export_start(title);
                build_output::write_filesystem(store, lease, output, &solved.layers)?;
                renderer.export_line("copying files done");
            }
        }
        renderer.export_done();
    }
    drop(hold);
    Ok(Written {
        image,
        names: all_names,
    })
}

/// `--metadata-file` contents, as buildx writes them: the image's digests
/// and descriptor and its names, when an image was exported.
fn metadata_json(written: &Written, outputs: &[Output]) -> serde_json::Value {
    if !outputs.iter().any(|o| o.kind.is_image()) {
        return serde_json::json!({});
    }
    let manifest = &written.image.manifest;
    let mut value = serde_json::json!({
        "containerimage.config.digest": written.image.config_digest.to_string(),
        "containerimage.digest": manifest.digest().to_string(),
        "containerimage.descriptor": {
            "mediaType": manifest.media_type().to_string(),
            "digest": manifest.digest().to_string(),
            "size": manifest.size(),
        },
    });
    if !written.names.is_empty() {
        value["image.name"] = serde_json::Value::String(written.names.join(","));
    }
    value
}

/// BuildKit's failure block: the step and the last lines it printed.
fn report_failure(error: &SolveError) {
    let mut err = std::io::stderr().lock();
    let SolveError::Step { step, source } = error else {
        return;
    };
    if let SolveError::ExecFailed { output_tail, .. } = source.root_cause() {
        let _ = writeln!(err, "------\n > {step}:");
        for line in output_tail {
            let _ = writeln!(err, "{line}");
        }
        let _ = writeln!(err, "------");
    }
}

#[cfg(test)]
mod secret_tests {
    use super::parse_secret;

    #[test]
    fn secret_spellings() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "v1").unwrap();
        let path = file.path().display().to_string();
        for text in [
            format!("id=a,src={path}"),
            format!("id=a,source={path}"),
            format!("type=file,id=a,src={path}"),
        ] {
            assert_eq!(parse_secret(&text).unwrap(), ("a".into(), b"v1".to_vec()));
        }
        std::env::set_var("KILN_UNIT_SECRET", "v2");
        for text in [
            "id=b,env=KILN_UNIT_SECRET",
            "type=env,id=b,src=KILN_UNIT_SECRET",
            "type=env,id=b,env=KILN_UNIT_SECRET",
        ] {
            assert_eq!(parse_secret(text).unwrap(), ("b".into(), b"v2".to_vec()));
        }
        assert_eq!(
            parse_secret("id=KILN_UNIT_SECRET").unwrap().1,
            b"v2".to_vec()
        );
        let err = parse_secret("id=c,env=KILN_UNIT_SECRET_UNSET").unwrap_err();
        assert!(err
            .to_string()
            .contains("KILN_UNIT_SECRET_UNSET is not set"));
        assert!(parse_secret("id=c,type=socket").is_err());
        assert!(parse_secret("src=").is_err());
    }
}
