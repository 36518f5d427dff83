//! Cache keys and miss reasons.
//!
//! A step's key is sha256 over its op definition, its inputs' keys, and the
//! content of the context files it reads (path, kind, mode, digest; not
//! mtimes, so `touch` keeps the cache). Each step's last definition is
//! kept in `cache/steps/` by a stable identity (context, Dockerfile,
//! description), so a miss can say what changed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// What a step's key covers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct StepRecord {
    /// The op, as JSON.
    pub op: serde_json::Value,
    /// (role, key) of each input; a context input shows as its file set.
    pub inputs: Vec<(String, String)>,
    /// Context files read: path -> `kind mode digest`.
    pub files: BTreeMap<String, String>,
}

impl StepRecord {
    /// The cache key: sha256 of the JSON of `(1, op, inputs, files)`.
    #[cfg(test)]
    pub fn key(&self) -> String {
        self.encode().0
    }

    /// The cache key and the record's JSON (what [`save`] writes), with
    /// each part serialized once: a context of many files makes a large
    /// `files` map.
    pub fn encode(&self) -> (String, Vec<u8>) {
        let op = serde_json::to_vec(&self.op).expect("serializes");
        let inputs = serde_json::to_vec(&self.inputs).expect("serializes");
        let files = serde_json::to_vec(&self.files).expect("serializes");
        // The JSON of the tuple `(1u32, op, inputs, files)`.
        let mut hasher = Sha256::new();
        for part in [b"[1,", &op[..], b",", &inputs, b",", &files, b"]"] {
            hasher.update(part);
        }
        let key = format!("sha256:{}", hex::encode(hasher.finalize()));
        // The JSON of the struct.
        let mut record = Vec::with_capacity(op.len() + inputs.len() + files.len() + 32);
        for part in [
            &b"{\"op\":"[..],
            &op,
            b",\"inputs\":",
            &inputs,
            b",\"files\":",
            &files,
            b"}",
        ] {
            record.extend_from_slice(part);
        }
        (key, record)
    }
}

/// The file holding the last record of the step `identity`.
pub(crate) fn record_path(cache_dir: &Path, identity: &str) -> std::path::PathBuf {
    let hex = hex::encode(Sha256::digest(identity.as_bytes()));
    cache_dir.join("steps").join(format!("{hex}.json"))
}

/// The file whose mtime is when the cache record `key` was last used
/// (written or hit), for `kiln builder du` and `prune --keep-storage`.
pub(crate) fn used_path(cache_dir: &Path, key: &str) -> std::path::PathBuf {
    let hex = key.strip_prefix("sha256:").unwrap_or(key);
    cache_dir.join("used").join(hex)
}

/// Records that the cache record `key` was used now.
pub(crate) fn touch_used(cache_dir: &Path, key: &str) {
    let path = used_path(cache_dir, key);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .or_else(|_| {
            std::fs::create_dir_all(cache_dir.join("used"))?;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        });
    // Advisory only: a lost mark makes the record look older.
    if let Ok(f) = file {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

pub(crate) fn load(path: &Path) -> Option<StepRecord> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes a record as [`StepRecord::encode`] gave it.
pub(crate) fn save(path: &Path, bytes: &[u8]) {
    // Advisory only (miss reasons): a failed or lost write costs nothing.
    // A rebuild of an unchanged step finds the same record: no new file.
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return;
    }
    let _ = crate::solve::context::write_atomic(path, bytes);
}

/// Why `now` missed, compared with the step's last record.
pub(crate) fn miss_reason(
    previous: Option<&StepRecord>,
    now: &StepRecord,
    build_args: &[String],
) -> String {
    let Some(prev) = previous else {
        return "not built before".to_string();
    };
    if prev == now {
        return "no cache record (pruned or --no-cache)".to_string();
    }
    if prev.op != now.op {
        let env = |op: &serde_json::Value| -> BTreeMap<String, String> {
            op.get("env")
                .and_then(|e| e.as_array())
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e.to_string(), String::new()),
                })
                .collect()
        };
        let (a, b) = (env(&prev.op), env(&now.op));
        let mut without_env = (prev.op.clone(), now.op.clone());
        if let (Some(x), Some(y)) = (without_env.0.as_object_mut(), without_env.1.as_object_mut()) {
            x.remove("env");
            y.remove("env");
        }
        if a != b && without_env.0 == without_env.1 {
            let keys: std::collections::BTreeSet<&String> = a
                .keys()
                .chain(b.keys())
                .filter(|k| a.get(*k) != b.get(*k))
                .collect();
            let names: Vec<String> = keys
                .iter()
                .map(|k| {
                    if build_args.iter().any(|b| b == *k) {
                        format!("build-arg {k}")
                    } else {
                        format!("environment variable {k}")
                    }
                })
                .collect();
            return format!("{} changed", names.join(", "));
        }
        return "instruction changed".to_string();
    }
    if prev.inputs != now.inputs {
        let changed: Vec<&str> = now
            .inputs
            .iter()
            .filter(|i| !prev.inputs.contains(i))
            .map(|(role, _)| role.as_str())
            .collect();
        // A stage's first step reads its base image (`image DIGEST PLATFORM`).
        let base_image = |inputs: &[(String, String)]| {
            inputs
                .iter()
                .find(|(role, key)| role == "rootfs" && key.starts_with("image "))
                .and_then(|(_, key)| key.split(' ').nth(1).map(str::to_string))
        };
        if let (Some(old), Some(new)) = (base_image(&prev.inputs), base_image(&now.inputs)) {
            if old != new {
                return format!("base image changed ({old} -> {new})");
            }
        }
        return match changed.first() {
            Some(&"rootfs") => "previous step changed".to_string(),
            Some(role) => format!("input {role} changed"),
            None => "inputs changed".to_string(),
        };
    }
    let mut parts = Vec::new();
    for (path, value) in &now.files {
        match prev.files.get(path) {
            None => parts.push(format!("{path} added")),
            Some(old) if old != value => parts.push(format!("{path} changed")),
            _ => {}
        }
    }
    for path in prev.files.keys() {
        if !now.files.contains_key(path) {
            parts.push(format!("{path} removed"));
        }
    }
    match parts.len() {
        0 => "inputs changed".to_string(),
        1..=3 => parts.join(", "),
        n => format!("{} and {} more", parts[..3].join(", "), n - 3),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_in_words() {
        let base = StepRecord {
            op: serde_json::json!({"args": ["sh"], "env": ["A=1", "V=1"]}),
            inputs: vec![("rootfs".into(), "k1".into())],
            files: BTreeMap::from([("src/main.rs".to_string(), "file 644 aa".to_string())]),
        };
        assert_eq!(miss_reason(None, &base, &[]), "not built before");
        let mut files = base.clone();
        files
            .files
            .insert("src/main.rs".into(), "file 644 bb".into());
        assert_eq!(miss_reason(Some(&base), &files, &[]), "src/main.rs changed");
        assert_ne!(base.key(), files.key());
        // The key and record are the JSON serde gives for the tuple and
        // the struct (keys made before stay valid).
        for record in [&base, &files] {
            let (key, bytes) = record.encode();
            let tuple =
                serde_json::to_vec(&(1u32, &record.op, &record.inputs, &record.files)).unwrap();
            assert_eq!(
                key,
                format!("sha256:{}", hex::encode(Sha256::digest(&tuple)))
            );
            assert_eq!(bytes, serde_json::to_vec(record).unwrap());
            assert_eq!(
                &serde_json::from_slice::<StepRecord>(&bytes).unwrap(),
                record
            );
        }
        let mut arg = base.clone();
        arg.op = serde_json::json!({"args": ["sh"], "env": ["A=1", "V=2"]});
        assert_eq!(
            miss_reason(Some(&base), &arg, &["V".to_string()]),
            "build-arg V changed"
        );
        let mut parent = base.clone();
        parent.inputs[0].1 = "k2".into();
        assert_eq!(
            miss_reason(Some(&base), &parent, &[]),
            "previous step changed"
        );
        let mut from = base.clone();
        from.inputs[0].1 = "image sha256:aa linux/amd64".into();
        let mut moved = base.clone();
        moved.inputs[0].1 = "image sha256:bb linux/amd64".into();
        assert_eq!(
            miss_reason(Some(&from), &moved, &[]),
            "base image changed (sha256:aa -> sha256:bb)"
        );
    }
}
