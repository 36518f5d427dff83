//! Integration tests against real `docker-registry` processes on loopback
//! (plain HTTP; TLS + htpasswd; TLS + bearer tokens from a harness token
//! server), a fault-injecting proxy, and skopeo for interop.
//! Compiled only with `--features test-registry`.
#![cfg(feature = "test-registry")]

mod auth;
mod faults;
mod interop;
mod roundtrip;
