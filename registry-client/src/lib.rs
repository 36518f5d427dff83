//! kiln-registry: an OCI distribution client (references, auth, manifests, blob streams).
//!
//! It knows nothing of the store; `cli` joins the two. The client arrives with its issue.
#![forbid(unsafe_code)]
