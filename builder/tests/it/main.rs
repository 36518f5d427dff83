//! Integration tests of kiln-builder: conformance data, golden files, fuzzing.

mod conformance;
