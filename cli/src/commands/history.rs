//! `kiln history`: an image's history entries, newest first, as
//! `docker history` lists them.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use kiln_store::Store;
use serde_json::json;

use crate::output::{human_since, human_size, parse_time, write_table};
use crate::ExitStatus;

// Arguments of `kiln history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Only show image ids (`<missing>` for entries that are no image here).
    #[arg(short, long)]
    pub quiet: bool,
    /// Do not shorten ids and CREATED BY.
    #[arg(long)]
    pub no_trunc: bool,
    /// Sizes and dates in bytes and RFC 3339 instead of human units.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Output format: `table` or `json` (one JSON object a line).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// The image: name or id.
    pub image: String,
}

/// One history entry, oldest first before it is printed.
struct Row {
    id: String,
    created: Option<String>,
    created_by: String,
    size: u64,
    comment: String,
}

pub fn run(store: &Store, args: &HistoryArgs) -> Result<ExitStatus> {
    let image = super::find_image(store, &args.image)?;
    let mut sizes = store.layer_sizes(&image).into_iter();
    let mut rows: Vec<Row> = image
        .config
        .history()
        .iter()
        .flatten()
        .map(|h| Row {
            id: "<missing>".into(),
            created: h.created().clone(),
            created_by: h.created_by().clone().unwrap_or_default(),
            // Entries that made a layer take the layers in order.
            size: if h.empty_layer().unwrap_or(false) {
                0
            } else {
                sizes.next().unwrap_or(0)
            },
            comment: h.comment().clone().unwrap_or_default(),
        })
        .collect();
    rows.reverse();
    // The newest entry is the image itself.
    if let Some(top) = rows.first_mut() {
        top.id = if args.no_trunc {
            image.id().to_string()
        } else {
            image.id().short().to_string()
        };
    }
    let now = chrono::Utc::now().timestamp();
    let mut out = std::io::stdout().lock();
    if args.quiet {
        for row in &rows {
            writeln!(out, "{}", row.id)?;
        }
        return Ok(ExitStatus::SUCCESS);
    }
    let when = |row: &Row| match row.created.as_deref().and_then(parse_time) {
        Some(t) if args.human => human_since(now - t),
        Some(_) => row.created.clone().unwrap_or_default(),
        None => "N/A".into(),
    };
    let size = |row: &Row| {
        if args.human {
            human_size(row.size)
        } else {
            row.size.to_string()
        }
    };
    if args.format == "json" {
        for row in &rows {
            let record = json!({
                "Comment": row.comment,
                "CreatedAt": row.created.clone().unwrap_or_default(),
                "CreatedBy": row.created_by,
                "CreatedSince": when(row),
                "ID": row.id,
                "Size": size(row),
            });
            writeln!(out, "{record}")?;
        }
        return Ok(ExitStatus::SUCCESS);
    }
    let mut table = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
        .map(String::from)
        .to_vec()];
    for row in &rows {
        let created_by = if args.no_trunc {
            row.created_by.clone()
        } else {
            shorten(&row.created_by, 45)
        };
        table.push(vec![
            row.id.clone(),
            when(row),
            created_by,
            size(row),
            row.comment.clone(),
        ]);
    }
    write_table(&mut out, &table)?;
    Ok(ExitStatus::SUCCESS)
}

/// `text` on one line, cut to `width` characters with an ellipsis, as
/// docker shortens CREATED BY.
fn shorten(text: &str, width: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c == '\t' || c == '\n' { ' ' } else { c })
        .collect();
    if flat.chars().count() <= width {
        return flat;
    }
    let mut cut: String = flat.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn created_by_is_cut_like_docker() {
        assert_eq!(shorten("CMD [\"sh\"]", 45), "CMD [\"sh\"]");
        let long = "RUN /bin/sh -c apt-get update && apt-get install -y curl # buildkit";
        let cut = shorten(long, 45);
        assert_eq!(cut.chars().count(), 45);
        assert!(cut.ends_with('…'));
        assert_eq!(shorten("a\tb\nc", 45), "a b c");
    }
}
