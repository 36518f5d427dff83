//! Integration tests against real `docker-registry` processes on loopback.
//! Compiled only with `--features test-registry`.
#![cfg(feature = "test-registry")]
