//! How each instruction's text is split into arguments at the AST level
//! (BuildKit `parser/line_parsers.go` and `split_command.go`): exec (JSON)
//! form with its fallback to shell form, whitespace lists, `name=value`
//! pairs, the legacy `ENV k v` form, and the generic `--flag` prefix.

use crate::error::ErrorKind;

/// What a line parser produces.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub args: Vec<String>,
    pub json: bool,
}

/// `[\t\v\f\r ]` as in BuildKit's `reWhitespace`.
fn is_split_space(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Splits on runs of `[\t\v\f\r ]`, at most `limit` parts (0 = no limit),
/// as Go's `regexp.Split`.
pub(crate) fn split_whitespace(text: &str, limit: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        if limit != 0 && parts.len() + 1 == limit {
            parts.push(rest.to_string());
            return parts;
        }
        match rest.find(is_split_space) {
            None => {
                parts.push(rest.to_string());
                return parts;
            }
            Some(start) => {
                parts.push(rest[..start].to_string());
                rest = rest[start..].trim_start_matches(is_split_space);
            }
        }
    }
}

/// Splits `KEYWORD [--flags] rest` (BuildKit `splitCommand`).
pub(crate) fn split_command(line: &str) -> (String, Vec<String>, String) {
    let trimmed = line.trim();
    let parts = split_whitespace(trimmed, 2);
    let keyword = parts[0].clone();
    let (rest, flags) = match parts.get(1) {
        Some(rest) => extract_flags(rest),
        None => (String::new(), Vec::new()),
    };
    (keyword, flags, rest.trim().to_string())
}

/// Takes the leading `--name[=value]` words off `line`; a bare `--` ends them.
fn extract_flags(line: &str) -> (String, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let (byte, mut ch) = if at_end {
            (line.len(), '\0')
        } else {
            chars[pos]
        };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            if ch != '-' || chars.get(pos + 1).map(|c| c.1) != Some('-') {
                return (line[byte..].to_string(), words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (line[byte..].to_string(), words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                pos += 1;
                continue;
            }
            if ch == '\\' {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                pos += 1;
                ch = chars[pos].1;
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            pos += 1;
            continue;
        }
        if ch == '\\' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            ch = chars[pos].1;
        }
        word.push(ch);
        pos += 1;
    }
    (String::new(), words)
}

/// Words separated by white space, quotes and escapes kept as written
/// (BuildKit `parseWords`); an unclosed quote runs to the end.
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let mut pos = 0;
    while pos <= chars.len() {
        let at_end = pos == chars.len();
        let mut ch = if at_end { '\0' } else { chars[pos] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                pos += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            // An unclosed quote still ends the word.
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                pos += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if ch == escape {
                if pos + 1 == chars.len() {
                    pos += 1;
                    continue;
                }
                word.push(ch);
                pos += 1;
                ch = chars[pos];
            }
            word.push(ch);
            pos += 1;
            continue;
        }
        if ch == quote {
            phase = Phase::Word;
        }
        if ch == escape && quote != '\'' {
            if pos + 1 == chars.len() {
                phase = Phase::Word;
                pos += 1;
                continue;
            }
            pos += 1;
            word.push(ch);
            ch = chars[pos];
        }
        word.push(ch);
        pos += 1;
    }
    words
}

/// `ENV`/`LABEL`: `k v` (legacy) or `k=v k2=v2`; triples `k v sep`.
pub(crate) fn parse_name_val(
    rest: &str,
    instruction: &str,
    escape: char,
) -> Result<Parsed, ErrorKind> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Parsed::default());
    }
    if !words[0].contains('=') {
        let parts = split_whitespace(rest, 2);
        if parts.len() < 2 {
            return Err(ErrorKind::MissingValue {
                instruction: instruction.to_string(),
            });
        }
        return Ok(Parsed {
            args: vec![parts[0].clone(), parts[1].clone(), String::new()],
            json: false,
        });
    }
    let mut args = Vec::with_capacity(words.len() * 3);
    for word in words {
        let Some((key, value)) = word.split_once('=') else {
            return Err(ErrorKind::MissingEquals { word });
        };
        args.extend([key.to_string(), value.to_string(), "=".to_string()]);
    }
    Ok(Parsed { args, json: false })
}

/// `ARG a b=c`: each word.
pub(crate) fn parse_name_or_name_val(rest: &str, escape: char) -> Parsed {
    Parsed {
        args: parse_words(rest, escape),
        json: false,
    }
}

/// `FROM`, `EXPOSE`: whitespace-separated.
pub(crate) fn parse_whitespace_list(rest: &str) -> Parsed {
    if rest.is_empty() {
        return Parsed::default();
    }
    Parsed {
        args: split_whitespace(rest, 0),
        json: false,
    }
}

/// The text as one argument.
pub(crate) fn parse_string(rest: &str) -> Parsed {
    if rest.is_empty() {
        return Parsed::default();
    }
    Parsed {
        args: vec![rest.to_string()],
        json: false,
    }
}

enum JsonOutcome {
    Strings(Vec<String>),
    NotStrings,
    Invalid,
}

fn parse_json(rest: &str) -> JsonOutcome {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return JsonOutcome::Invalid;
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(rest) {
        Err(_) => JsonOutcome::Invalid,
        Ok(values) => {
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                match v {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return JsonOutcome::NotStrings,
                }
            }
            JsonOutcome::Strings(out)
        }
    }
}

/// `RUN`, `CMD`, `ENTRYPOINT`, `SHELL`: a JSON string array, or else the
/// whole text as one shell-form argument.
pub(crate) fn parse_maybe_json(rest: &str) -> Result<Parsed, ErrorKind> {
    if rest.is_empty() {
        return Ok(Parsed::default());
    }
    match parse_json(rest) {
        JsonOutcome::Strings(args) => Ok(Parsed { args, json: true }),
        JsonOutcome::NotStrings => Err(ErrorKind::NotStringArray),
        JsonOutcome::Invalid => Ok(parse_string(rest)),
    }
}

/// `ADD`, `COPY`, `VOLUME`: a JSON string array, or else whitespace-separated.
pub(crate) fn parse_maybe_json_to_list(rest: &str) -> Result<Parsed, ErrorKind> {
    match parse_json(rest) {
        JsonOutcome::Strings(args) => Ok(Parsed { args, json: true }),
        JsonOutcome::NotStrings => Err(ErrorKind::NotStringArray),
        JsonOutcome::Invalid => Ok(parse_whitespace_list(rest)),
    }
}

/// `HEALTHCHECK [--flags] TYPE cmd`: the type word, then the command.
pub(crate) fn parse_health_config(rest: &str) -> Result<Parsed, ErrorKind> {
    let sep = rest.find(char::is_whitespace).unwrap_or(rest.len());
    if sep == 0 {
        return Ok(Parsed::default());
    }
    let kind = &rest[..sep];
    let command = rest[sep..].trim_start();
    let parsed = parse_maybe_json(command)?;
    let mut args = vec![kind.to_string()];
    args.extend(parsed.args);
    Ok(Parsed {
        args,
        json: parsed.json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_split_off() {
        let (k, f, r) = split_command("COPY --from=a --chown=\"x y\" -- src dst");
        assert_eq!(k, "COPY");
        assert_eq!(f, ["--from=a", "--chown=x y"]);
        assert_eq!(r, "src dst");
        let (_, f, r) = split_command("CMD --doit");
        assert_eq!((f, r), (vec!["--doit".to_string()], String::new()));
    }

    #[test]
    fn words_keep_quotes() {
        assert_eq!(
            parse_words(r#"abc="123 456" def"#, '\\'),
            [r#"abc="123 456""#, "def"]
        );
        assert_eq!(parse_words(r#"a="open"#, '\\'), [r#"a="open"#]);
    }

    #[test]
    fn json_fallback() {
        assert!(parse_maybe_json("[\"a\"]").unwrap().json);
        assert!(!parse_maybe_json("['a']").unwrap().json);
        assert!(parse_maybe_json("[\"a\", [\"b\"]]").is_err());
    }
}
