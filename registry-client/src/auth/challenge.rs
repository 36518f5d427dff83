//! `WWW-Authenticate` parsing (RFC 7235 section 4.1; docker token auth spec).

use std::collections::HashMap;

/// One challenge: an auth scheme and its parameters (names lower-cased).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lower-cased scheme: `bearer`, `basic`, ...
    pub scheme: String,
    pub params: HashMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value, which may hold several challenges:
/// `Bearer realm="https://auth",service="reg",scope="repository:a:pull", Basic realm="x"`.
/// Malformed trailing parts are dropped; an empty result means nothing usable.
pub(crate) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut parser = Parser {
        text: header.as_bytes(),
        at: 0,
    };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        parser.skip(|b| b == b' ' || b == b'\t' || b == b',');
        let Some(scheme) = parser.token() else { break };
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: HashMap::new(),
        };
        loop {
            parser.skip(|b| b == b' ' || b == b'\t' || b == b',');
            let start = parser.at;
            let Some(name) = parser.token() else { break };
            parser.skip(|b| b == b' ' || b == b'\t');
            if !parser.eat(b'=') {
                // Not a parameter: the start of the next challenge.
                parser.at = start;
                break;
            }
            parser.skip(|b| b == b' ' || b == b'\t');
            let value = if parser.peek() == Some(b'"') {
                parser.quoted()
            } else {
                parser.token()
            };
            match value {
                Some(value) => {
                    challenge.params.insert(name.to_ascii_lowercase(), value);
                }
                None => break,
            }
        }
        out.push(challenge);
    }
    out
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn skip(&mut self, what: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&what) {
            self.at += 1;
        }
    }

    /// RFC 7230 token characters (plus `/` and `=` padding of token68 are
    /// not needed for the schemes we handle).
    fn token(&mut self) -> Option<String> {
        let start = self.at;
        self.skip(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
        if self.at == start {
            return None;
        }
        std::str::from_utf8(&self.text[start..self.at])
            .ok()
            .map(str::to_owned)
    }

    fn quoted(&mut self) -> Option<String> {
        self.at += 1; // opening quote
        let mut value = Vec::new();
        loop {
            let byte = self.peek()?;
            self.at += 1;
            match byte {
                b'"' => return String::from_utf8(value).ok(),
                b'\\' => {
                    value.push(self.peek()?);
                    self.at += 1;
                }
                other => value.push(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_scope() {
        let challenges = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(challenges.len(), 1);
        let bearer = &challenges[0];
        assert_eq!(bearer.scheme, "bearer");
        assert_eq!(bearer.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(bearer.param("service"), Some("registry.docker.io"));
        assert_eq!(
            bearer.param("scope"),
            Some("repository:library/busybox:pull,push")
        );
    }

    #[test]
    fn basic_and_several_challenges() {
        let challenges = parse_challenges(
            r#"Basic realm="kiln \"test\"", Bearer realm=https://a/t , service = "s""#,
        );
        assert_eq!(challenges.len(), 2);
        assert_eq!(challenges[0].scheme, "basic");
        assert_eq!(challenges[0].param("realm"), Some(r#"kiln "test""#));
        assert_eq!(challenges[1].scheme, "bearer");
        assert_eq!(challenges[1].param("realm"), Some("https://a/t"));
        assert_eq!(challenges[1].param("service"), Some("s"));
    }

    #[test]
    fn tolerates_garbage() {
        assert!(parse_challenges("").is_empty());
        let challenges = parse_challenges(r#"Bearer realm="unterminated"#);
        assert_eq!(challenges.len(), 1);
        assert_eq!(challenges[0].param("realm"), None);
    }
}
