//! Parses and compiles a generated 1,000-instruction Dockerfile many times
//! and prints the median; the target is well under 10 ms.
//!
//! Run with `bench/dockerfile-parse.sh` (release build).

use std::time::{Duration, Instant};

use kiln_builder::{compile, lint, CompileOptions, Dockerfile, NoImages};

/// A realistic mix: several stages, ARG/ENV expansion, RUN with mounts and
/// continuations, COPY --from, heredocs, config instructions.
fn generate(instructions: usize) -> String {
    let mut out =
        String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:12\nARG VERSION=1.2.3\n");
    let mut count = 2;
    let mut stage = 0;
    while count < instructions {
        out.push_str(&format!("FROM ${{BASE}} AS stage{stage}\nARG VERSION\nENV APP_HOME=/opt/app{stage} PATH=/opt/bin:$PATH\nWORKDIR $APP_HOME\n"));
        count += 4;
        for i in 0..40 {
            if count >= instructions {
                break;
            }
            let line = match i % 10 {
                0 => format!("RUN --mount=type=cache,target=/var/cache/apt{i} apt-get update \\\n    && apt-get install -y pkg{i} \\\n    && rm -rf /var/lib/apt/lists/*\n"),
                1 => format!("COPY --chown=1000:1000 --chmod=0644 src/{i}/ ./src/{i}/\n"),
                2 => format!("ENV STEP_{i}=\"value ${{VERSION}} {i}\" OTHER_{i}=${{APP_HOME:-/x}}/{i}\n"),
                3 => format!("RUN <<EOF\nset -e\necho step {i} $VERSION\nEOF\n"),
                4 => format!("LABEL org.example.step{i}=\"{i}\" version=$VERSION\n"),
                5 if stage > 0 => format!("COPY --from=stage{} /opt/app{}/out{i} /in/{i}\n", stage - 1, stage - 1),
                5 => format!("ADD --checksum=sha256:{} https://example.com/{i}.tgz /tmp/\n", "a".repeat(64)),
                6 => format!("RUN [\"/bin/sh\", \"-c\", \"echo {i} > out{i}\"]\n"),
                7 => format!("EXPOSE {}\n", 8000 + i),
                8 => format!("USER {}\n", 1000 + i),
                _ => format!("ARG OPT_{i}=${{VERSION%.*}}\n"),
            };
            out.push_str(&line);
            count += 1;
        }
        stage += 1;
    }
    out.push_str("CMD [\"/opt/app/run\"]\n");
    out
}

fn main() {
    let text = generate(1000);
    let instructions = Dockerfile::parse("Dockerfile", &text)
        .map(|df| {
            df.global_args.len()
                + df.stages
                    .iter()
                    .map(|s| s.commands.len() + 1)
                    .sum::<usize>()
        })
        .expect("the generated Dockerfile parses");
    let options = CompileOptions {
        all_stages: true,
        ..Default::default()
    };
    let run = || {
        let df = Dockerfile::parse("Dockerfile", &text).expect("parses");
        let graph = compile(&df, &options, &NoImages).expect("compiles");
        let problems = lint(&df);
        std::hint::black_box((graph.nodes.len(), problems.len()));
    };
    for _ in 0..5 {
        run();
    }
    if std::env::var_os("BENCH_SPLIT").is_some() {
        let df = Dockerfile::parse("Dockerfile", &text).expect("parses");
        let t = Instant::now();
        for _ in 0..50 {
            std::hint::black_box(Dockerfile::parse("Dockerfile", &text).unwrap());
        }
        println!("parse {:?}", t.elapsed() / 50);
        let t = Instant::now();
        for _ in 0..50 {
            std::hint::black_box(compile(&df, &options, &NoImages).unwrap());
        }
        println!("compile {:?}", t.elapsed() / 50);
        let t = Instant::now();
        for _ in 0..50 {
            std::hint::black_box(lint(&df));
        }
        println!("lint {:?}", t.elapsed() / 50);
    }
    let mut samples: Vec<Duration> = (0..200)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed()
        })
        .collect();
    samples.sort();
    let median = samples[samples.len() / 2];
    println!(
        "dockerfile parse+compile+lint: {instructions} instructions, {} bytes: median {:.3} ms, p90 {:.3} ms (target < 10 ms)",
        text.len(),
        median.as_secs_f64() * 1e3,
        samples[samples.len() * 9 / 10].as_secs_f64() * 1e3
    );
    if median >= Duration::from_millis(10) {
        eprintln!("slower than the 10 ms target");
        std::process::exit(1);
    }
}
