//! Opening a store root and laying it out.

use std::fs;
use std::path::{Path, PathBuf};

use crate::content::ContentStore;
use crate::meta::{Meta, MetaHold};
use crate::{Error, Result};

/// The `oci-layout` file every OCI image layout has (image-layout.md).
const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A kiln store root. Cheap to clone; every process may open the same root.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) root: PathBuf,
    pub(crate) content: ContentStore,
    pub(crate) meta: Meta,
}

impl Store {
    /// Opens (creating when missing) the store at `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        for dir in ["blobs/sha256", "ingest", "snapshots", "containers", "cache"] {
            let path = root.join(dir);
            fs::create_dir_all(&path).map_err(Error::io(&path))?;
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            crate::fsutil::write_atomic(&layout, OCI_LAYOUT)?;
        }
        let store = Store {
            content: ContentStore::new(&root),
            meta: Meta::new(&root),
            root,
        };
        if !store.root.join("index.json").exists() {
            store.rewrite_index()?;
        }
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blobs.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The build cache directory (`cache/`), for the builder.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache")
    }

    /// Keeps the metadata database open from the next metadata operation
    /// until the returned hold (and every other hold on this store or its
    /// clones) is dropped, so a command's several operations pay for one
    /// open. Other kiln processes on this root wait meanwhile: hold only
    /// around quick work, never while a container or build step runs.
    pub fn hold_metadata(&self) -> MetaHold {
        self.meta.hold()
    }

    /// The containers directory (`containers/`).
    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }
}
