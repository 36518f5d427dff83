//! Random container names in docker's style: `adjective_scientist`.

const ADJECTIVES: &[&str] = &[
    "amber", "brave", "calm", "clever", "dazzling", "eager", "fervent", "gentle", "happy", "jolly",
    "keen", "lucid", "merry", "nimble", "patient", "quiet", "quirky", "serene", "sharp", "stoic",
    "tender", "upbeat", "vivid", "wise", "zealous",
];

const SURNAMES: &[&str] = &[
    "agnesi", "babbage", "curie", "dijkstra", "euler", "faraday", "gauss", "hopper", "hypatia",
    "kepler", "lamarr", "lovelace", "meitner", "noether", "pascal", "ritchie", "shannon",
    "thompson", "turing", "volta", "wozniak", "yalow",
];

/// A random `adjective_surname`; `attempt` > 0 adds a digit, as docker does
/// after a collision.
pub fn random_name(attempt: usize) -> String {
    let a = ADJECTIVES[rand::random_range(0..ADJECTIVES.len())];
    let s = SURNAMES[rand::random_range(0..SURNAMES.len())];
    if attempt == 0 {
        format!("{a}_{s}")
    } else {
        format!("{a}_{s}{}", rand::random_range(0..10))
    }
}

/// Whether `name` is a valid container name (docker: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn is_valid(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid() {
        for i in 0..20 {
            assert!(is_valid(&random_name(i % 2)));
        }
        assert!(!is_valid("-x"));
        assert!(!is_valid("a"));
        assert!(!is_valid("a b"));
    }
}
