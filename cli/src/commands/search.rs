//! `kiln search REGISTRY/QUERY`: the registry's catalog, filtered.

use anyhow::{Context, Result};
use clap::Args;

use crate::args::Cli;
use crate::settings::{normalize_registry, runtime, RegistrySettings};
use crate::ExitStatus;

// Arguments of `kiln search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// `REGISTRY/QUERY`: repositories of REGISTRY whose name contains QUERY
    /// (`localhost:5000/` lists them all).
    pub term: String,
    /// Show at most this many results.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

pub fn run(cli: &Cli, args: &SearchArgs) -> Result<ExitStatus> {
    let settings = RegistrySettings::from_cli(cli);
    let (registry, query) = split_term(&args.term);
    let client = settings.client(None);
    let repositories = runtime()?
        .block_on(client.catalog(&registry))
        .with_context(|| format!("searching {registry}"))?;
    let mut out = std::io::stdout().lock();
    let mut rows = vec![vec!["NAME".to_string()]];
    rows.extend(
        matching(&repositories, &query)
            .take(args.limit)
            .map(|repository| vec![format!("{registry}/{repository}")]),
    );
    crate::output::write_table(&mut out, &rows)?;
    Ok(ExitStatus::SUCCESS)
}

/// `localhost:5000/bu` -> (`localhost:5000`, `bu`); a term without a
/// registry searches Docker Hub.
fn split_term(term: &str) -> (String, String) {
    match term.split_once('/') {
        Some((host, query)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            (normalize_registry(host), query.to_string())
        }
        _ => (kiln_registry::DOCKER_HUB.to_string(), term.to_string()),
    }
}

fn matching<'a>(
    repositories: &'a [String],
    query: &'a str,
) -> impl Iterator<Item = &'a String> + 'a {
    let query = query.to_ascii_lowercase();
    repositories.iter().filter(move |r| r.contains(&query))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_split() {
        assert_eq!(
            split_term("localhost:5000/bu"),
            ("localhost:5000".into(), "bu".into())
        );
        assert_eq!(
            split_term("127.0.0.1:5000/"),
            ("127.0.0.1:5000".into(), "".into())
        );
        assert_eq!(
            split_term("busybox"),
            ("docker.io".into(), "busybox".into())
        );
        let repositories = vec!["a/busybox".to_string(), "alpine".to_string()];
        let found: Vec<&String> = matching(&repositories, "BUSY").collect();
        assert_eq!(found, [&repositories[0]]);
    }
}
