//! Integration tests of kiln-store.

mod content;
