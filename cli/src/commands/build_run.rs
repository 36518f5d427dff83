//! Running a build: the solver with the store, progress output, export
//! and names. Joins kiln-builder and kiln-store; a missing base image is
//! pulled from its registry.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use kiln_builder::solve::error_chain;
use kiln_builder::{
    solve, Graph, ImageResolver, Platform, Progress, SolveError, SolveOptions, StepEvent,
};
use kiln_store::Store;

use crate::commands::build::{BuildArgs, ProgressMode};
use crate::commands::pull::ensure_image;
use crate::settings::RegistrySettings;
use crate::ExitStatus;

/// Base images from the store, pulled first when missing.
struct StoreResolver {
    settings: RegistrySettings,
    /// Pull without progress lines.
    quiet: bool,
}

impl ImageResolver for StoreResolver {
    fn resolve(
        &self,
        store: &Store,
        reference: &str,
        _platform: &Platform,
    ) -> Result<kiln_store::Image, Box<dyn std::error::Error + Send + Sync>> {
        // The solver calls this from `spawn_blocking` on its runtime; the
        // pull starts a runtime of its own, so it runs on a plain thread
        // rather than nesting one runtime in another.
        std::thread::scope(|scope| {
            scope
                .spawn(|| ensure_image(store, &self.settings, reference, self.quiet))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .map_err(|e| anyhow::anyhow!("{e:#}").into())
    }
}

/// Renders events on stderr: BuildKit-style lines or JSON lines.
struct Renderer {
    mode: ProgressMode,
    cached: Mutex<HashSet<usize>>,
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Progress for Renderer {
    fn event(&self, step: usize, event: StepEvent) {
        let mut err = std::io::stderr().lock();
        match self.mode {
            ProgressMode::Quiet => {}
            ProgressMode::Json => {
                let time = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                let mut value = serde_json::json!({"time": time, "step": step});
                let fields = match &event {
                    StepEvent::Started { name } => {
                        serde_json::json!({"event": "started", "name": name})
                    }
                    StepEvent::Cached => serde_json::json!({"event": "cached"}),
                    StepEvent::Miss { reason } => {
                        serde_json::json!({"event": "miss", "reason": reason})
                    }
                    StepEvent::Log { elapsed, line } => {
                        serde_json::json!({"event": "log", "elapsed": elapsed.as_secs_f64(), "line": line})
                    }
                    StepEvent::Done { elapsed } => {
                        serde_json::json!({"event": "done", "elapsed": elapsed.as_secs_f64()})
                    }
                    StepEvent::Failed { message, elapsed } => serde_json::json!({
                        "event": "failed", "message": message, "elapsed": elapsed.as_secs_f64()}),
                };
                if let (Some(v), Some(f)) = (value.as_object_mut(), fields.as_object()) {
                    v.extend(f.clone());
                }
                let _ = writeln!(err, "{value}");
            }
            _ => {
                let _ = match event {
                    StepEvent::Started { name } => writeln!(err, "\n#{step} {name}"),
                    StepEvent::Cached => {
                        self.cached.lock().expect("not poisoned").insert(step);
                        writeln!(err, "#{step} CACHED")
                    }
                    StepEvent::Miss { reason } => writeln!(err, "#{step} cache miss: {reason}"),
                    StepEvent::Log { elapsed, line } => {
                        writeln!(err, "#{step} {:.3} {line}", elapsed.as_secs_f64())
                    }
                    StepEvent::Done { elapsed } => {
                        if self.cached.lock().expect("not poisoned").contains(&step) {
                            Ok(())
                        } else {
                            writeln!(err, "#{step} DONE {}", seconds(elapsed))
                        }
                    }
                    StepEvent::Failed { message, elapsed } => {
                        writeln!(err, "#{step} ERROR: {message} ({})", seconds(elapsed))
                    }
                };
            }
        }
    }
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

/// Builds the target of `graph` and names the result.
pub fn build(
    store: &Store,
    settings: &RegistrySettings,
    args: &BuildArgs,
    graph: &Graph,
    dockerfile: &Path,
    build_args: &[(String, String)],
) -> anyhow::Result<ExitStatus> {
    let names = args
        .tags
        .iter()
        .map(|t| crate::names::normalize(t).with_context(|| format!("invalid tag {t:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let labels = parse_labels(&args.labels)?;
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(
            v.parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        ),
        _ => None,
    };
    let context_dir = std::fs::canonicalize(&args.context)
        .with_context(|| format!("build context {}", args.context))?;
    let options = SolveOptions {
        context_dir,
        dockerfile: std::fs::canonicalize(dockerfile).unwrap_or_else(|_| dockerfile.to_path_buf()),
        no_cache: args.no_cache,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        source_date_epoch,
        build_arg_names: build_args.iter().map(|(k, _)| k.clone()).collect(),
        run: run_options(args)?,
    };
    let renderer = Arc::new(Renderer {
        mode: args.progress,
        cached: Mutex::new(HashSet::new()),
    });
    let lease = Arc::new(store.lease().context("taking a store lease")?);
    let solved = match solve(
        store,
        lease.clone(),
        graph,
        &options,
        Arc::new(StoreResolver {
            settings: settings.clone(),
            quiet: matches!(args.progress, ProgressMode::Json | ProgressMode::Quiet),
        }),
        renderer,
    ) {
        Ok(solved) => solved,
        Err(error) => {
            report_failure(&error);
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
    let exported = kiln_builder::export::commit(store, &lease, &config, &solved.layers, &names)
        .map_err(|e| anyhow::anyhow!("exporting the image: {}", error_chain(&e)))?;
    drop(lease);
    let id = exported.config_digest.to_string();
    if args.progress == ProgressMode::Quiet {
        println!("{id}");
    } else {
        let mut err = std::io::stderr().lock();
        writeln!(err, "\n#0 exporting to image")?;
        writeln!(err, "#0 writing image {id} done")?;
        for name in &names {
            writeln!(err, "#0 naming to {name} done")?;
        }
        writeln!(err, "#0 DONE")?;
    }
    if let Some(file) = &args.iidfile {
        std::fs::write(file, &id).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(ExitStatus::SUCCESS)
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
