//! Integration tests of kiln-builder: conformance data, golden files, fuzzing.

mod conformance;
mod fuzz;
mod golden;
