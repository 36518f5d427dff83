//! Moving images between the store and registries: the short functions that
//! join `kiln-registry` and `kiln-store` (DESIGN.md, "pull / push").

pub mod pull;
pub mod push;

use anyhow::Result;
use kiln_store::Digest;

/// The store's form of a registry digest.
pub(crate) fn store_digest(digest: &kiln_registry::Digest) -> Result<Digest> {
    Ok(Digest::parse(digest.as_ref())?)
}

/// `registry/repository`, the form blob sources are recorded in.
pub(crate) fn source_name(reference: &kiln_registry::Reference) -> String {
    reference.name()
}
