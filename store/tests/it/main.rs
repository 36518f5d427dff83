//! Integration tests of kiln-store.
