//! Layer apply and diff (owned by the layer work).
