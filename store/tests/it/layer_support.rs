//! Helpers for the layer tests: a raw tar writer that can write what a
//! well-behaved one refuses (`..`, absolute names, links anywhere), tree
//! snapshots, and the root gate.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use kiln_store::layer::{self, Compression, DiffOptions, DiffOutput};

/// A tar writer with no safety checks, for hostile and hand-made layers.
#[derive(Default)]
pub struct RawTar {
    buf: Vec<u8>,
}

impl RawTar {
    pub fn new() -> Self {
        RawTar::default()
    }

    fn entry(&mut self, name: &[u8], typeflag: u8, link: &[u8], mode: u32, data: &[u8]) {
        // GNU long name/link members (typeflags L and K) carry what does not
        // fit in 100 bytes.
        if name.len() > 100 {
            self.long(b'L', name);
        }
        if link.len() > 100 {
            self.long(b'K', link);
        }
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            let n = name.len().min(100);
            old.name[..n].copy_from_slice(&name[..n]);
            let l = link.len().min(100);
            old.linkname[..l].copy_from_slice(&link[..l]);
        }
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::new(typeflag));
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.data(data);
    }

    fn long(&mut self, typeflag: u8, value: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_mode(0o644);
        h.set_size(value.len() as u64 + 1);
        h.set_entry_type(tar::EntryType::new(typeflag));
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        let mut v = value.to_vec();
        v.push(0);
        self.data(&v);
    }

    fn data(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.resize(self.buf.len() + pad, 0);
    }

    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        self.entry(name.as_bytes(), b'0', b"", 0o644, data);
        self
    }

    pub fn dir(mut self, name: &str) -> Self {
        self.entry(name.as_bytes(), b'5', b"", 0o755, b"");
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.entry(name.as_bytes(), b'2', target.as_bytes(), 0o777, b"");
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        self.entry(name.as_bytes(), b'1', target.as_bytes(), 0o644, b"");
        self
    }

    /// A character device 0:0 (major and minor fields stay zero).
    pub fn char_device(mut self, name: &str) -> Self {
        self.entry(name.as_bytes(), b'3', b"", 0o600, b"");
        self
    }

    pub fn fifo(mut self, name: &str) -> Self {
        self.entry(name.as_bytes(), b'6', b"", 0o600, b"");
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&[0u8; 1024]);
        self.buf
    }
}

/// Everything under `root` as path -> (type and mode, size, link target,
/// content hash), to compare trees before and after.
pub fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut map = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.unwrap();
        let meta = entry.path().symlink_metadata().unwrap();
        let rel = entry.path().strip_prefix(root).unwrap();
        let mut what = format!(
            "{:o} {}:{} mtime {} rdev {}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            if meta.file_type().is_symlink() {
                0
            } else {
                meta.mtime()
            },
            meta.rdev()
        );
        if meta.file_type().is_symlink() {
            what += &format!(" -> {:?}", fs::read_link(entry.path()).unwrap());
        } else if meta.is_file() {
            what += &format!(
                " {}",
                kiln_store::Digest::of(&fs::read(entry.path()).unwrap())
            );
        }
        map.insert(rel.as_os_str().as_bytes().to_vec(), what);
    }
    map
}

/// Diffs `dir` to memory.
pub fn diff_to_vec(dir: &Path, compression: Compression) -> (DiffOutput, Vec<u8>) {
    let mut blob = Vec::new();
    let opts = DiffOptions {
        compression,
        source_date_epoch: None,
    };
    let out = layer::diff(dir, &mut blob, &opts).unwrap();
    (out, blob)
}

/// Member names of a tar (any compression), in order.
pub fn member_names(blob: &[u8]) -> Vec<String> {
    let plain = decompress(blob);
    let mut archive = tar::Archive::new(&plain[..]);
    archive
        .entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

/// The plain tar inside a blob.
pub fn decompress(blob: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    match Compression::detect(blob) {
        Compression::None => out.extend_from_slice(blob),
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(blob)
                .read_to_end(&mut out)
                .unwrap();
        }
        Compression::Zstd => out = zstd::decode_all(blob).unwrap(),
    }
    out
}

/// For tests behind `test-root`: true when running as root. Otherwise the
/// test is skipped with a message, or fails under CI (env CI=true), where a
/// missing precondition must not pass silently.
#[cfg(feature = "test-root")]
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root (run the test-root suite as root)");
    }
    eprintln!("skipping {test}: needs root");
    false
}
