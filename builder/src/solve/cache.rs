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

use crate::solve::context::{Entry, Kind};

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

/// A context file's line in a step record: `kind mode digest`.
#[derive(Debug, Clone)]
pub(crate) enum FileValue<'a> {
    /// Written out already (a download's identity).
    Text(String),
    /// A context entry, formatted only when written.
    Entry(&'a Entry),
}

impl FileValue<'_> {
    fn write_to(&self, out: &mut String) {
        use std::fmt::Write as _;
        out.clear();
        match self {
            FileValue::Text(t) => out.push_str(t),
            FileValue::Entry(e) => {
                let kind = match e.kind {
                    Kind::File => "file",
                    Kind::Dir => "dir",
                    Kind::Symlink => "symlink",
                };
                let _ = write!(out, "{kind} {:o} {}", e.mode, e.digest);
            }
        }
    }
}

/// What a step's key covers, before it becomes a [`StepRecord`]: the
/// context files it reads are borrowed from the index, so a rebuild that
/// hits makes no map of formatted strings for a context of many files
/// (only its key, streamed through the hash).
#[derive(Debug, Clone, Default)]
pub(crate) struct StepDef<'a> {
    /// The op, as JSON.
    pub op: serde_json::Value,
    /// (role, key) of each input; a context input shows as its file set.
    pub inputs: Vec<(String, String)>,
    /// Files read, each name once, sorted as [`StepRecord::files`] is.
    files: Vec<(std::borrow::Cow<'a, str>, FileValue<'a>)>,
    sorted: bool,
}

impl<'a> StepDef<'a> {
    /// A step of `op` (as JSON).
    pub fn new(op: serde_json::Value) -> StepDef<'a> {
        StepDef {
            op,
            sorted: true,
            ..StepDef::default()
        }
    }

    /// Adds a file read (a later one of the same name replaces it, as in a map).
    pub fn add_file(&mut self, name: impl Into<std::borrow::Cow<'a, str>>, value: FileValue<'a>) {
        let name = name.into();
        if self.files.last().is_some_and(|(last, _)| *last >= name) {
            self.sorted = false;
        }
        self.files.push((name, value));
    }

    /// Sorts the files by name, each name once (its last value).
    fn settle(&mut self) {
        if self.sorted {
            return;
        }
        // Stable: among equal names, the last added comes first once
        // reversed, and dedup keeps the first.
        self.files.reverse();
        self.files.sort_by(|a, b| a.0.cmp(&b.0));
        self.files.dedup_by(|later, earlier| later.0 == earlier.0);
        self.sorted = true;
    }

    /// The JSON of the files as a map (what serde gives for
    /// [`StepRecord::files`]).
    fn write_files(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        out.write_all(b"{")?;
        let mut value = String::new();
        for (n, (name, v)) in self.files.iter().enumerate() {
            if n > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *out, name.as_ref())?;
            out.write_all(b":")?;
            v.write_to(&mut value);
            serde_json::to_writer(&mut *out, value.as_str())?;
        }
        out.write_all(b"}")
    }

    /// The cache key: sha256 of the JSON of `(1, op, inputs, files)`
    /// (the same bytes serde gives for the tuple, streamed).
    pub fn key(&mut self) -> String {
        self.settle();
        let mut hasher = std::io::BufWriter::with_capacity(
            32 * 1024,
            kiln_store::HashingWriter::new(std::io::sink()),
        );
        let written = (|| -> std::io::Result<()> {
            use std::io::Write as _;
            hasher.write_all(b"[1,")?;
            serde_json::to_writer(&mut hasher, &self.op)?;
            hasher.write_all(b",")?;
            serde_json::to_writer(&mut hasher, &self.inputs)?;
            hasher.write_all(b",")?;
            self.write_files(&mut hasher)?;
            hasher.write_all(b"]")
        })();
        written.expect("hashing does not fail");
        let hasher = hasher
            .into_inner()
            .unwrap_or_else(|_| unreachable!("hashing does not fail"));
        hasher.finish().1.to_string()
    }

    /// The record file's bytes: the JSON of the [`StepRecord`] with the
    /// step's `key` first (so a rebuild that hits reads only that much of
    /// the file to see it is current: [`is_current`]).
    pub fn record_bytes(&mut self, key: &str) -> Vec<u8> {
        self.settle();
        let mut out = Vec::with_capacity(128 + self.files.len() * 120);
        out.extend_from_slice(b"{\"key\":");
        serde_json::to_writer(&mut out, key).expect("writes to memory");
        out.extend_from_slice(b",\"op\":");
        serde_json::to_writer(&mut out, &self.op).expect("writes to memory");
        out.extend_from_slice(b",\"inputs\":");
        serde_json::to_writer(&mut out, &self.inputs).expect("writes to memory");
        out.extend_from_slice(b",\"files\":");
        self.write_files(&mut out).expect("writes to memory");
        out.push(b'}');
        out
    }

    /// The record, for miss reasons.
    pub fn record(&mut self) -> StepRecord {
        self.settle();
        let mut value = String::new();
        StepRecord {
            op: self.op.clone(),
            inputs: self.inputs.clone(),
            files: self
                .files
                .iter()
                .map(|(name, v)| {
                    v.write_to(&mut value);
                    (name.to_string(), value.clone())
                })
                .collect(),
        }
    }
}

/// Whether the record file at `path` is the record of `key` (written by
/// [`StepDef::record_bytes`]).
pub(crate) fn is_current(path: &Path, key: &str) -> bool {
    use std::io::Read as _;
    let want = format!("{{\"key\":\"{key}\",");
    let mut have = vec![0u8; want.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut have))
        .is_ok_and(|()| have == want.as_bytes())
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

/// Keeps `def`'s record (of key `key`) at `path`, unless it is there already.
pub(crate) fn save(path: &Path, key: &str, def: &mut StepDef) {
    // Advisory only (miss reasons): a failed or lost write costs nothing.
    // A rebuild of an unchanged step finds the same record: no new file.
    if is_current(path, key) {
        return;
    }
    let _ = crate::solve::context::write_atomic(path, &def.record_bytes(key));
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
        let entry = |digest: &str| Entry {
            kind: Kind::File,
            mode: 0o644,
            digest: digest.to_string(),
        };
        let (aa, bb) = (&entry("aa"), &entry("bb"));
        fn def<'a>(base: &StepRecord, e: &'a Entry) -> StepDef<'a> {
            let mut d = StepDef::new(base.op.clone());
            d.inputs = base.inputs.clone();
            d.add_file("src/main.rs", FileValue::Entry(e));
            d
        }
        let def = |e| def(&base, e);
        assert_ne!(def(aa).key(), def(bb).key());
        // The key is the sha256 of the JSON serde gives for the tuple (keys
        // made before stay valid); the record file is the struct's JSON
        // with the key first, and reads back as the record.
        for (mut d, record) in [(def(aa), &base), (def(bb), &files)] {
            assert_eq!(&d.record(), record);
            let key = d.key();
            let tuple =
                serde_json::to_vec(&(1u32, &record.op, &record.inputs, &record.files)).unwrap();
            assert_eq!(
                key,
                format!("sha256:{}", hex::encode(Sha256::digest(&tuple)))
            );
            let bytes = d.record_bytes(&key);
            assert_eq!(
                &serde_json::from_slice::<StepRecord>(&bytes).unwrap(),
                record
            );
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("r.json");
            assert!(!is_current(&path, &key));
            save(&path, &key, &mut d);
            assert_eq!(std::fs::read(&path).unwrap(), bytes);
            assert!(is_current(&path, &key));
            assert!(!is_current(&path, "sha256:00"));
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

    #[test]
    fn files_are_sorted_once_each_as_in_a_map() {
        let e = |d: &str| Entry {
            kind: if d.is_empty() {
                Kind::Dir
            } else {
                Kind::Symlink
            },
            mode: 0o755,
            digest: d.to_string(),
        };
        let (x, y, z) = (e("x\"y"), e("y"), e(""));
        let mut def = StepDef::new(serde_json::json!({"args": ["sh"]}));
        def.add_file("url http://h/a", FileValue::Text("sha256:1 a 0".into()));
        def.add_file("b", FileValue::Entry(&x));
        def.add_file("a/\u{e9}", FileValue::Entry(&z));
        def.add_file("b", FileValue::Entry(&y));
        let mut map = BTreeMap::new();
        map.insert("url http://h/a".to_string(), "sha256:1 a 0".to_string());
        map.insert("b".to_string(), "symlink 755 x\"y".to_string());
        map.insert("a/\u{e9}".to_string(), "dir 755 ".to_string());
        map.insert("b".to_string(), "symlink 755 y".to_string());
        let record = StepRecord {
            op: def.op.clone(),
            inputs: Vec::new(),
            files: map,
        };
        assert_eq!(def.record(), record);
        let tuple = serde_json::to_vec(&(1u32, &record.op, &record.inputs, &record.files)).unwrap();
        assert_eq!(
            def.key(),
            format!("sha256:{}", hex::encode(Sha256::digest(&tuple)))
        );
    }
}
