//! A small driver for the layer code, for benchmarks (bench/layers.sh) and
//! for poking at layers by hand:
//!
//! ```text
//! layer-tool apply FILE DIR        extract a layer (plain, gzip or zstd) into DIR
//! layer-tool diff DIR FILE [--compression none|gzip|zstd] [--source-date-epoch SECS]
//! ```
//!
//! FILE may be `-` for stdin or stdout. `diff` prints the diff_id, the blob
//! digest and the blob size; `apply` prints what it applied.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use kiln_store::layer::{self, Compression, DiffOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("layer-tool: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    match args {
        [cmd, file, dir] if cmd == "apply" => {
            let input: Box<dyn Read> = if file == "-" {
                Box::new(io::stdin().lock())
            } else {
                Box::new(File::open(file).map_err(|e| format!("{file}: {e}"))?)
            };
            let stats = layer::apply(input, Path::new(dir)).map_err(|e| format!("{e:#}"))?;
            println!(
                "{:?}: {} entries, {} bytes, {} whiteouts",
                stats.compression, stats.entries, stats.bytes, stats.whiteouts
            );
            Ok(())
        }
        [cmd, dir, file, rest @ ..] if cmd == "diff" => {
            let mut opts = DiffOptions::default();
            let mut rest = rest.iter();
            while let Some(flag) = rest.next() {
                let value = rest.next().ok_or(format!("{flag} needs a value"))?;
                match flag.as_str() {
                    "--compression" => {
                        opts.compression = match value.as_str() {
                            "none" => Compression::None,
                            "gzip" => Compression::Gzip,
                            "zstd" => Compression::Zstd,
                            other => return Err(format!("unknown compression {other:?}")),
                        }
                    }
                    "--source-date-epoch" => {
                        opts.source_date_epoch =
                            Some(value.parse().map_err(|e| format!("{value:?}: {e}"))?)
                    }
                    other => return Err(format!("unknown flag {other:?}")),
                }
            }
            let output: Box<dyn Write> = if file == "-" {
                Box::new(io::stdout().lock())
            } else {
                Box::new(File::create(file).map_err(|e| format!("{file}: {e}"))?)
            };
            let out = layer::diff(Path::new(dir), output, &opts).map_err(|e| format!("{e:#}"))?;
            let summary = format!(
                "diff_id {}\ndigest  {}\nsize    {}",
                out.diff_id, out.digest, out.size
            );
            // Keep stdout for the layer when it goes there.
            if file == "-" {
                eprintln!("{summary}");
            } else {
                println!("{summary}");
            }
            Ok(())
        }
        _ => Err(
            "usage: layer-tool apply FILE DIR | layer-tool diff DIR FILE \
                  [--compression none|gzip|zstd] [--source-date-epoch SECS]"
                .to_string(),
        ),
    }
}
