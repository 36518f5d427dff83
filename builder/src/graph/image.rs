//! Image configuration as the frontend sees it: what a base image brings
//! (ENV, WORKDIR, ONBUILD...) and what each stage's instructions change.
//! Field meanings follow the OCI image spec, config.md.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The runtime part of an image config plus its history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `KEY=value` entries, in order.
    pub env: Vec<String>,
    /// CMD, already wrapped in the shell for the shell form.
    pub cmd: Option<Vec<String>>,
    /// ENTRYPOINT, already wrapped in the shell for the shell form.
    pub entrypoint: Option<Vec<String>>,
    /// USER (empty: root).
    pub user: String,
    /// WORKDIR (empty: `/`).
    pub working_dir: String,
    /// LABELs.
    pub labels: BTreeMap<String, String>,
    /// EXPOSEd ports, `80/tcp` form.
    pub exposed_ports: Vec<String>,
    /// VOLUMEs.
    pub volumes: Vec<String>,
    /// STOPSIGNAL.
    pub stop_signal: Option<String>,
    /// HEALTHCHECK.
    pub healthcheck: Option<HealthConfig>,
    /// SHELL (docker's extension to the OCI config).
    pub shell: Option<Vec<String>>,
    /// ONBUILD triggers, as written after the keyword.
    pub on_build: Vec<String>,
    /// docker's `ArgsEscaped`: BuildKit sets it with CMD; kept from the base.
    #[serde(default)]
    pub args_escaped: bool,
    /// MAINTAINER (the image's `author`).
    pub author: Option<String>,
    /// History entries, oldest first.
    pub history: Vec<History>,
}

/// A HEALTHCHECK in the image config (docker's extension).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthConfig {
    /// `["NONE"]`, `["CMD", ...]` or `["CMD-SHELL", cmd]`.
    pub test: Vec<String>,
    /// Nanoseconds between checks; 0 = default.
    pub interval: i64,
    /// Nanoseconds before a check is considered hung; 0 = default.
    pub timeout: i64,
    /// Nanoseconds of start-up grace; 0 = default.
    pub start_period: i64,
    /// Nanoseconds between checks during start-up; 0 = default.
    pub start_interval: i64,
    /// Failures before unhealthy; 0 = default.
    pub retries: i64,
}

/// One history entry (OCI config `history`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// When a base image's entry was made (RFC 3339), kept as it was; this
    /// build's entries get the build time when exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The instruction as docker writes it (`RUN /bin/sh -c make # buildkit`).
    pub created_by: String,
    /// `buildkit.dockerfile.v0`, as BuildKit writes.
    pub comment: String,
    /// True when the step made no layer.
    pub empty_layer: bool,
}

/// Looks up base images' configs so FROM can inherit ENV, WORKDIR, USER...
/// and run ONBUILD triggers. The CLI backs it with the store; tests use a
/// map.
pub trait ImageSource {
    /// The config of `reference` for `platform` (`linux/amd64`), or `None`
    /// when the image is not known locally (compile then assumes an empty
    /// config; the solver resolves it later).
    fn image_config(
        &self,
        reference: &str,
        platform: &str,
    ) -> std::result::Result<Option<ImageConfig>, Box<dyn std::error::Error + Send + Sync>>;
}

/// An [`ImageSource`] that knows no images.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoImages;

impl ImageSource for NoImages {
    fn image_config(
        &self,
        _reference: &str,
        _platform: &str,
    ) -> std::result::Result<Option<ImageConfig>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(None)
    }
}

/// The parts of an image config file (OCI image-spec config.md, plus
/// docker's `Healthcheck`, `Shell` and `OnBuild` extensions) a build reads.
#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RuntimeSection>,
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    history: Vec<HistoryEntry>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RuntimeSection {
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    user: Option<String>,
    working_dir: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    volumes: Option<BTreeMap<String, serde_json::Value>>,
    stop_signal: Option<String>,
    healthcheck: Option<HealthSection>,
    shell: Option<Vec<String>>,
    on_build: Option<Vec<String>>,
    args_escaped: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthSection {
    test: Option<Vec<String>>,
    #[serde(default)]
    interval: i64,
    #[serde(default)]
    timeout: i64,
    #[serde(default)]
    start_period: i64,
    #[serde(default)]
    start_interval: i64,
    #[serde(default)]
    retries: i64,
}

#[derive(Deserialize)]
struct HistoryEntry {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    created_by: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    empty_layer: Option<bool>,
}

impl ImageConfig {
    /// Reads an image config file as registries and `docker save` carry it.
    pub fn from_config_json(bytes: &[u8]) -> std::result::Result<ImageConfig, serde_json::Error> {
        let file: ConfigFile = serde_json::from_slice(bytes)?;
        let section = file.config.unwrap_or_default();
        Ok(ImageConfig {
            env: section.env.unwrap_or_default(),
            cmd: section.cmd,
            entrypoint: section.entrypoint,
            user: section.user.unwrap_or_default(),
            working_dir: section.working_dir.unwrap_or_default(),
            labels: section.labels.unwrap_or_default(),
            exposed_ports: section
                .exposed_ports
                .unwrap_or_default()
                .into_keys()
                .collect(),
            volumes: section.volumes.unwrap_or_default().into_keys().collect(),
            stop_signal: section.stop_signal,
            healthcheck: section.healthcheck.map(|h| HealthConfig {
                test: h.test.unwrap_or_default(),
                interval: h.interval,
                timeout: h.timeout,
                start_period: h.start_period,
                start_interval: h.start_interval,
                retries: h.retries,
            }),
            shell: section.shell,
            on_build: section.on_build.unwrap_or_default(),
            args_escaped: section.args_escaped.unwrap_or(false),
            author: file.author,
            history: file
                .history
                .into_iter()
                .map(|h| History {
                    created: h.created,
                    created_by: h.created_by.unwrap_or_default(),
                    comment: h.comment.unwrap_or_default(),
                    empty_layer: h.empty_layer.unwrap_or(false),
                })
                .collect(),
        })
    }
}

#[cfg(test)]
mod config_file_tests {
    use super::*;

    #[test]
    fn reads_docker_extensions() {
        let json = br#"{"architecture":"amd64","os":"linux","author":"me",
            "config":{"Env":["A=1"],"Cmd":["sh"],"WorkingDir":"/w","User":"u",
                "ExposedPorts":{"80/tcp":{}},"Volumes":{"/data":{}},"OnBuild":["RUN echo hi"],
                "Shell":["/bin/ash","-c"],"Healthcheck":{"Test":["CMD","true"],"Interval":1000}},
            "rootfs":{"type":"layers","diff_ids":[]},
            "history":[{"created_by":"x","empty_layer":true}]}"#;
        let c = ImageConfig::from_config_json(json).unwrap();
        assert_eq!(c.env, ["A=1"]);
        assert_eq!(c.working_dir, "/w");
        assert_eq!(c.exposed_ports, ["80/tcp"]);
        assert_eq!(c.volumes, ["/data"]);
        assert_eq!(c.on_build, ["RUN echo hi"]);
        assert_eq!(c.shell.unwrap(), ["/bin/ash", "-c"]);
        assert_eq!(c.healthcheck.unwrap().interval, 1000);
        assert_eq!(c.author.as_deref(), Some("me"));
        assert!(c.history[0].empty_layer);
    }
}
