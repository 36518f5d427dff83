//! How kiln shows sizes, times and tables, as docker does (go-units
//! HumanSize and HumanDuration; text/tabwriter with three spaces padding).

use std::io::{self, Write};

/// Bytes in decimal units with three significant digits: `4.26MB`.
pub fn human_size(bytes: u64) -> String {
    scaled(bytes, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB", "EB"])
}

/// Bytes in binary units with three significant digits: `1.18MiB` (go-units
/// BytesSize, as `docker stats` shows memory).
pub fn binary_size(bytes: u64) -> String {
    scaled(
        bytes,
        1024.0,
        &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
    )
}

fn scaled(bytes: u64, base: f64, units: &[&str]) -> String {
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= base && unit < units.len() - 1 {
        value /= base;
        unit += 1;
    }
    let text = format!("{value:.3}");
    // Three significant digits, trailing zeros dropped, as Go's %.3g does.
    let digits_before = text.split('.').next().map_or(1, |s| s.len());
    let decimals = 3usize.saturating_sub(digits_before);
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", units[unit])
}

/// `2 days ago`, as `docker images` shows CREATED.
pub fn human_since(seconds_ago: i64) -> String {
    let s = seconds_ago.max(0);
    let text = if s < 1 {
        "Less than a second".to_string()
    } else if s == 1 {
        "1 second".to_string()
    } else if s < 60 {
        format!("{s} seconds")
    } else if s < 90 {
        "About a minute".to_string()
    } else if s < 3600 {
        format!("{} minutes", (s + 30) / 60)
    } else if s < 5400 {
        "About an hour".to_string()
    } else if s < 48 * 3600 {
        format!("{} hours", (s + 1800) / 3600)
    } else if s < 14 * 86400 {
        format!("{} days", s / 86400)
    } else if s < 90 * 86400 {
        format!("{} weeks", s / (7 * 86400))
    } else if s < 2 * 365 * 86400 {
        format!("{} months", s / (30 * 86400))
    } else {
        format!("{} years", s / (365 * 86400))
    };
    format!("{text} ago")
}

/// Writes rows as columns separated by at least three spaces.
pub fn write_table(out: &mut impl Write, rows: &[Vec<String>]) -> io::Result<()> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Seconds since the Unix epoch of an RFC 3339 time, if it parses.
pub fn parse_time(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_550), "4.26MB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(human_size(12_345_678_901), "12.3GB");
    }

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_since(0), "Less than a second ago");
        assert_eq!(human_since(30), "30 seconds ago");
        assert_eq!(human_since(3 * 86400), "3 days ago");
        assert_eq!(human_since(70 * 86400), "10 weeks ago");
    }

    #[test]
    fn tables_align() {
        let mut out = Vec::new();
        write_table(
            &mut out,
            &[
                vec!["A".into(), "BB".into()],
                vec!["CCC".into(), "D".into()],
            ],
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "A     BB\nCCC   D\n");
    }
}
