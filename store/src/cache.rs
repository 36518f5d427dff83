//! Build cache records: a cache key (chosen by the builder) -> the layer
//! stack that step produced. Records are garbage-collection roots: their
//! layer blobs and snapshots stay until the record is removed.

use std::collections::BTreeMap;

use oci_spec::image::Descriptor;
use serde::{Deserialize, Serialize};

use crate::meta::{self, CACHE_RECORDS};
use crate::{Digest, Result, Store};

/// One layer of a cached result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// The layer blob.
    pub descriptor: Descriptor,
    /// Its uncompressed digest.
    pub diff_id: Digest,
}

/// What a build step produced: the whole layer stack of its result, lowest
/// first, and notes only the builder reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The layer stack, lowest first.
    pub layers: Vec<CachedLayer>,
    /// Builder-defined notes.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Unix seconds when the record was written.
    #[serde(default)]
    pub created: i64,
}

impl CacheRecord {
    /// Blob digests and snapshot chain ids this record keeps alive.
    pub(crate) fn roots(&self) -> Vec<Digest> {
        let diff_ids: Vec<Digest> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        let mut roots = crate::snapshot::chain_ids(&diff_ids);
        for layer in &self.layers {
            if let Ok(d) = crate::images::descriptor_digest(&layer.descriptor) {
                roots.push(d);
            }
        }
        roots
    }
}

impl Store {
    /// The record under `key`, if any.
    pub fn cache_record(&self, key: &str) -> Result<Option<CacheRecord>> {
        let bytes = self
            .meta
            .read(|txn| meta::read_one(&self.meta, txn, CACHE_RECORDS, key))?;
        bytes
            .map(|b| crate::images::parse_json("cache record", &b))
            .transpose()
    }

    /// Writes (or replaces) the record under `key`. Its layers and
    /// snapshots must already exist (protected by a lease until now).
    pub fn put_cache_record(&self, key: &str, record: &CacheRecord) -> Result<()> {
        let bytes = serde_json::to_vec(record).expect("a cache record serializes");
        self.meta
            .write(|txn| meta::put(&self.meta, txn, CACHE_RECORDS, key, &bytes))
    }

    /// Every record, by key.
    pub fn cache_records(&self) -> Result<Vec<(String, CacheRecord)>> {
        let all = self
            .meta
            .read(|txn| meta::read_all(&self.meta, txn, CACHE_RECORDS))?;
        all.into_iter()
            .map(|(k, v)| Ok((k, crate::images::parse_json("cache record", &v)?)))
            .collect()
    }

    /// Removes the record under `key`; returns whether it was there.
    pub fn remove_cache_record(&self, key: &str) -> Result<bool> {
        self.meta
            .write(|txn| meta::remove(&self.meta, txn, CACHE_RECORDS, key))
    }
}

pub(crate) fn roots_in(
    meta: &crate::meta::Meta,
    txn: &redb::WriteTransaction,
) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for (_, bytes) in meta::all_in_write(meta, txn, CACHE_RECORDS)? {
        let record: CacheRecord = crate::images::parse_json("cache record", &bytes)?;
        out.extend(record.roots());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_keep_their_layers_in_gc() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store.lease().unwrap();
        let blob = store.write_leased(b"layer bytes", &lease).unwrap();
        let record = CacheRecord {
            layers: vec![CachedLayer {
                descriptor: crate::descriptor(oci_spec::image::MediaType::ImageLayer, &blob, 11),
                diff_id: blob.clone(),
            }],
            ..CacheRecord::default()
        };
        store.put_cache_record("k1", &record).unwrap();
        drop(lease);
        assert_eq!(store.cache_record("k1").unwrap(), Some(record));
        assert_eq!(store.cache_record("nope").unwrap(), None);
        store.prune(&crate::PruneOptions::default()).unwrap();
        assert!(
            store.content().size(&blob).is_ok(),
            "a cache record is a root"
        );
        assert!(store.remove_cache_record("k1").unwrap());
        store.prune(&crate::PruneOptions::default()).unwrap();
        assert!(store.content().size(&blob).is_err());
    }
}
