//! Export: the image config as docker writes it (OCI config plus docker's
//! `Healthcheck`, `Shell`, `OnBuild`), the manifest, and names (DESIGN.md,
//! "How data flows: build", step 4).

pub mod fs;

use std::collections::BTreeMap;

use kiln_store::{CachedLayer, Digest, Lease, Store};
use oci_spec::image::Descriptor;
use serde::Serialize;

use crate::graph::image::ImageConfig;
use crate::graph::ops::StageOutput;
use crate::solve::{SolveError, Solved};

#[derive(Serialize)]
struct ConfigFile<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    author: Option<&'a str>,
    architecture: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
    os: &'a str,
    config: Runtime<'a>,
    rootfs: RootFs,
    history: Vec<HistoryEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Runtime<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    user: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<&'a str, Empty>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    env: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cmd: Option<&'a [String]>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    volumes: BTreeMap<&'a str, Empty>,
    #[serde(skip_serializing_if = "str::is_empty")]
    working_dir: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<Health<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    on_build: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    shell: Option<&'a [String]>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    args_escaped: bool,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Health<'a> {
    test: &'a [String],
    #[serde(skip_serializing_if = "is_zero")]
    interval: i64,
    #[serde(skip_serializing_if = "is_zero")]
    timeout: i64,
    #[serde(skip_serializing_if = "is_zero")]
    start_period: i64,
    #[serde(skip_serializing_if = "is_zero")]
    start_interval: i64,
    #[serde(skip_serializing_if = "is_zero")]
    retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
struct HistoryEntry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<&'a str>,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    comment: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    empty_layer: bool,
}

/// The config JSON of `stage` on `solved`, created at `created` (RFC 3339).
/// History entries of steps that changed nothing are marked empty, as
/// BuildKit does; extra `labels` are added (`--label`).
pub fn config_json(
    stage: &StageOutput,
    solved: &Solved,
    created: &str,
    labels: &[(String, String)],
) -> Vec<u8> {
    let config: &ImageConfig = &stage.config;
    let mut empty_flags: Vec<bool> = config.history.iter().map(|h| h.empty_layer).collect();
    // The last `steps.len()` layer-making entries belong to this build's
    // steps, in order.
    let making: Vec<usize> = (0..empty_flags.len())
        .filter(|&i| !empty_flags[i])
        .collect();
    let first = making.len().saturating_sub(solved.steps.len());
    let own = &making[first..];
    for (i, made) in own.iter().zip(
        solved
            .steps
            .iter()
            .skip(solved.steps.len().saturating_sub(own.len())),
    ) {
        if !made {
            empty_flags[*i] = true;
        }
    }
    let history_start = own.first().copied().unwrap_or(config.history.len());
    // Entries of this build get the build time; base entries keep theirs.
    let base_len = config
        .history
        .iter()
        .position(|h| h.comment == "buildkit.dockerfile.v0")
        .unwrap_or(history_start)
        .min(history_start);
    let mut all_labels: BTreeMap<String, String> = config.labels.clone();
    for (k, v) in labels {
        all_labels.insert(k.clone(), v.clone());
    }
    let file = ConfigFile {
        created: Some(created.to_string()),
        author: config.author.as_deref(),
        architecture: &stage.platform.architecture,
        variant: stage.platform.variant.as_deref(),
        os: &stage.platform.os,
        config: Runtime {
            user: &config.user,
            exposed_ports: config
                .exposed_ports
                .iter()
                .map(|p| (p.as_str(), Empty {}))
                .collect(),
            env: &config.env,
            entrypoint: config.entrypoint.as_deref(),
            cmd: config.cmd.as_deref(),
            volumes: config
                .volumes
                .iter()
                .map(|p| (p.as_str(), Empty {}))
                .collect(),
            working_dir: &config.working_dir,
            labels: all_labels,
            stop_signal: config.stop_signal.as_deref(),
            healthcheck: config.healthcheck.as_ref().map(|h| Health {
                test: &h.test,
                interval: h.interval,
                timeout: h.timeout,
                start_period: h.start_period,
                start_interval: h.start_interval,
                retries: h.retries,
            }),
            on_build: &config.on_build,
            shell: config.shell.as_deref(),
            args_escaped: config.args_escaped,
        },
        rootfs: RootFs {
            kind: "layers",
            diff_ids: solved
                .layers
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect(),
        },
        history: config
            .history
            .iter()
            .enumerate()
            .map(|(i, h)| HistoryEntry {
                created: if i >= base_len || later_than(h.created.as_deref(), created) {
                    Some(created)
                } else {
                    h.created.as_deref()
                },
                created_by: &h.created_by,
                comment: &h.comment,
                empty_layer: empty_flags[i],
            })
            .collect(),
    };
    serde_json::to_vec(&file).expect("an image config serializes")
}

/// Whether RFC 3339 time `a` is after `b`. A base image's history entry
/// newer than the image being made is clamped to the image's time, as
/// BuildKit does with SOURCE_DATE_EPOCH, so that epoch gives the same
/// config whenever the base was made.
fn later_than(a: Option<&str>, b: &str) -> bool {
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    match (a.and_then(parse), parse(b)) {
        (Some(a), Some(b)) => a > b,
        _ => false,
    }
}

/// An image written to the store.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The manifest's descriptor.
    pub manifest: Descriptor,
    /// The config digest: the image id.
    pub config_digest: Digest,
}

/// Writes config and manifest, then points each of `names` (normalized)
/// at it, or keeps it as an untagged image when there are none.
pub fn commit(
    store: &Store,
    lease: &Lease,
    config_bytes: &[u8],
    layers: &[CachedLayer],
    names: &[String],
) -> Result<Exported, SolveError> {
    if let Some(unchanged) = already_named(store, config_bytes, layers, names)? {
        return Ok(unchanged);
    }
    let exported = write_image(store, lease, config_bytes, layers)?;
    name_image(store, &exported, names)?;
    Ok(exported)
}

/// The image when every one of `names` (at least one) already points at
/// exactly it: a fully cached rebuild. It is then in the store and
/// reachable, and nothing needs writing. Reads only.
pub fn already_named(
    store: &Store,
    config_bytes: &[u8],
    layers: &[CachedLayer],
    names: &[String],
) -> Result<Option<Exported>, SolveError> {
    let descriptors: Vec<Descriptor> = layers.iter().map(|l| l.descriptor.clone()).collect();
    let mut unchanged = None;
    for name in names {
        unchanged = store
            .named_image_matches(name, config_bytes, &descriptors)
            .map_err(SolveError::store("reading the image name"))?;
        if unchanged.is_none() {
            break;
        }
    }
    Ok(unchanged.map(|manifest| Exported {
        manifest,
        config_digest: Digest::of(config_bytes),
    }))
}

/// Writes config and manifest, protected by `lease` only: the image has
/// no name (an export to a file or directory, without `-t`).
pub fn write_image(
    store: &Store,
    lease: &Lease,
    config_bytes: &[u8],
    layers: &[CachedLayer],
) -> Result<Exported, SolveError> {
    let descriptors: Vec<Descriptor> = layers.iter().map(|l| l.descriptor.clone()).collect();
    let manifest = store
        .commit_image_bytes(config_bytes, &descriptors, lease)
        .map_err(SolveError::store("writing the image"))?;
    Ok(Exported {
        manifest,
        config_digest: Digest::of(config_bytes),
    })
}

/// Points each of `names` (normalized) at the image, or keeps it as an
/// untagged image when there are none.
pub fn name_image(store: &Store, image: &Exported, names: &[String]) -> Result<(), SolveError> {
    for name in names {
        store
            .set_name(name, &image.manifest)
            .map_err(SolveError::store("naming the image"))?;
    }
    if names.is_empty() {
        store
            .keep_untagged(&image.manifest)
            .map_err(SolveError::store("recording the untagged image"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, CompileOptions, Dockerfile, NoImages};

    #[test]
    fn history_marks_steps_without_changes_empty() {
        let df = Dockerfile::parse(
            "Dockerfile",
            "FROM scratch\nWORKDIR /\nCOPY a /a\nENV X=1\nHEALTHCHECK CMD true\nSHELL [\"/bin/ash\", \"-c\"]\n",
        )
        .unwrap();
        let graph = compile(&df, &CompileOptions::default(), &NoImages).unwrap();
        let solved = Solved {
            layers: Vec::new(),
            steps: vec![false, true],
            created: None,
        };
        let bytes = config_json(
            graph.target_stage(),
            &solved,
            "2024-01-01T00:00:00Z",
            &[("k".into(), "v".into())],
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let history = v["history"].as_array().unwrap();
        assert_eq!(history[0]["created_by"], "WORKDIR /");
        assert_eq!(history[0]["empty_layer"], true);
        assert!(history[1].get("empty_layer").is_none());
        assert_eq!(
            v["config"]["Env"][0].as_str().unwrap().split('=').next(),
            Some("PATH")
        );
        assert_eq!(v["config"]["Healthcheck"]["Test"][0], "CMD-SHELL");
        assert_eq!(v["config"]["Shell"][0], "/bin/ash");
        assert_eq!(v["config"]["Labels"]["k"], "v");
        assert_eq!(v["rootfs"]["type"], "layers");
    }

    #[test]
    fn base_history_keeps_its_times() {
        let base = ImageConfig::from_config_json(
            br#"{"config":{},"history":[{"created":"1970-01-01T00:00:00Z","comment":"Imported"}]}"#,
        )
        .unwrap();
        let mut stage = compile(
            &Dockerfile::parse("Dockerfile", "FROM scratch\nENV A=1\n").unwrap(),
            &CompileOptions::default(),
            &NoImages,
        )
        .unwrap()
        .target_stage()
        .clone();
        let mut history = base.history.clone();
        history.append(&mut stage.config.history);
        stage.config.history = history;
        let solved = Solved {
            layers: Vec::new(),
            steps: Vec::new(),
            created: None,
        };
        let bytes = config_json(&stage, &solved, "2024-01-01T00:00:00Z", &[]);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let history = v["history"].as_array().unwrap();
        assert_eq!(history[0]["created"], "1970-01-01T00:00:00Z");
        assert!(history[0].get("created_by").is_none(), "{}", history[0]);
        assert_eq!(history[1]["created"], "2024-01-01T00:00:00Z");
        assert_eq!(history[1]["created_by"], "ENV A=1");
        // An older image time (SOURCE_DATE_EPOCH) clamps newer base entries.
        let bytes = config_json(&stage, &solved, "1960-01-01T00:00:00Z", &[]);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["history"][0]["created"], "1960-01-01T00:00:00Z");
    }
}
