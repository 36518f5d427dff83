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
