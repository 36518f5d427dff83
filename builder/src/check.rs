//! `kiln build --check`: lint rules over a parsed Dockerfile, named as
//! BuildKit's checks name them where they overlap
//! (docs.docker.com/reference/build-checks/).

use std::fmt;

use serde::Serialize;

use crate::dockerfile::instructions::{CommandLine, Instruction};
use crate::dockerfile::stages::Dockerfile;

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Reported; the build goes on.
    Warning,
    /// The build cannot go on.
    Error,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// BuildKit's rule name (`JSONArgsRecommended`).
    pub rule: &'static str,
    /// Warning or error.
    pub level: Level,
    /// What was found.
    pub message: String,
    /// 1-based line.
    pub line: usize,
}

impl fmt::Display for Problem {
    /// `WARN: StageNameCasing - Stage name 'Build' should be lowercase (line 1)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Warning => "WARN",
            Level::Error => "ERROR",
        };
        write!(
            f,
            "{level}: {} - {} (line {})",
            self.rule, self.message, self.line
        )
    }
}

/// The rules that need no expansion, over every stage.
pub fn lint(dockerfile: &Dockerfile) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut warn = |rule: &'static str, line: usize, message: String| {
        out.push(Problem {
            rule,
            level: Level::Warning,
            message,
            line,
        })
    };
    for w in &dockerfile.warnings {
        warn(w.rule, w.line, "Empty continuation line".to_string());
    }
    let mut upper = 0usize;
    let mut lower = 0usize;
    let all_commands = dockerfile
        .global_args
        .iter()
        .chain(dockerfile.stages.iter().flat_map(|s| s.commands.iter()));
    for c in all_commands.clone() {
        count_case(&c.keyword, &mut upper, &mut lower);
    }
    for stage in &dockerfile.stages {
        let from_keyword = first_word(&dockerfile.source, stage.line);
        count_case(&from_keyword, &mut upper, &mut lower);
    }
    let majority_upper = upper >= lower;
    let check_case =
        |keyword: &str, line: usize, warn: &mut dyn FnMut(&'static str, usize, String)| {
            let is_upper = keyword == keyword.to_ascii_uppercase();
            let is_lower = keyword == keyword.to_ascii_lowercase();
            if (majority_upper && !is_upper) || (!majority_upper && !is_lower) {
                let want = if majority_upper {
                    "uppercase"
                } else {
                    "lowercase"
                };
                warn(
                    "ConsistentInstructionCasing",
                    line,
                    format!(
                    "Command '{keyword}' should match the case of the command majority ({want})"
                ),
                );
            }
        };
    for c in &dockerfile.global_args {
        check_case(&c.keyword, c.line, &mut warn);
        secrets(&c.instruction, c.line, &mut warn);
    }
    for stage in &dockerfile.stages {
        let from_keyword = first_word(&dockerfile.source, stage.line);
        check_case(&from_keyword, stage.line, &mut warn);
        if let Some(name) = &stage.name {
            if name.to_ascii_lowercase() != *name {
                warn(
                    "StageNameCasing",
                    stage.line,
                    format!("Stage name '{name}' should be lowercase"),
                );
            }
            if matches!(name.to_ascii_lowercase().as_str(), "scratch" | "context") {
                warn(
                    "ReservedStageName",
                    stage.line,
                    format!(
                        "Stage name should not use the same name as reserved stage '{}'",
                        name.to_ascii_lowercase()
                    ),
                );
            }
        }
        if let Some(as_keyword) = &stage.from.as_keyword {
            let from_upper = from_keyword == from_keyword.to_ascii_uppercase();
            let as_upper = as_keyword == &as_keyword.to_ascii_uppercase();
            if from_upper != as_upper {
                warn(
                    "FromAsCasing",
                    stage.line,
                    format!("'{as_keyword}' and '{from_keyword}' keywords' casing do not match"),
                );
            }
        }
        if let Some(platform) = &stage.from.platform {
            if platform == "$TARGETPLATFORM" || platform == "${TARGETPLATFORM}" {
                warn(
                    "RedundantTargetPlatform",
                    stage.line,
                    "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior".into(),
                );
            } else if !platform.contains('$') {
                warn(
                    "FromPlatformFlagConstDisallowed",
                    stage.line,
                    format!("FROM --platform flag should not use constant value \"{platform}\""),
                );
            }
        }
        let mut seen_cmd = None;
        let mut seen_entrypoint = None;
        let mut seen_healthcheck = None;
        for c in &stage.commands {
            check_case(&c.keyword, c.line, &mut warn);
            secrets(&c.instruction, c.line, &mut warn);
            match &c.instruction {
                Instruction::Cmd { command } | Instruction::Entrypoint { command } => {
                    let name = c.keyword.to_ascii_uppercase();
                    if let CommandLine::Shell(_) = command {
                        warn(
                            "JSONArgsRecommended",
                            c.line,
                            format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
                        );
                    }
                    let seen = if name == "CMD" {
                        &mut seen_cmd
                    } else {
                        &mut seen_entrypoint
                    };
                    if seen.replace(c.line).is_some() {
                        warn(
                            "MultipleInstructionsDisallowed",
                            c.line,
                            format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
                        );
                    }
                }
                Instruction::Healthcheck(_) if seen_healthcheck.replace(c.line).is_some() => {
                    warn(
                            "MultipleInstructionsDisallowed",
                            c.line,
                            "Multiple HEALTHCHECK instructions should not be used in the same stage because only the last one will be used".into(),
                        );
                }
                Instruction::Maintainer { .. } => warn(
                    "MaintainerDeprecated",
                    c.line,
                    "Maintainer instruction is deprecated in favor of using label".into(),
                ),
                Instruction::Workdir { path }
                    if !path.starts_with('/') && !path.starts_with('$') =>
                {
                    warn(
                            "WorkdirRelativePath",
                            c.line,
                            format!("Relative workdir \"{path}\" can have unexpected results if the base image changes"),
                        );
                }
                Instruction::Env { pairs } | Instruction::Label { pairs }
                    if pairs.iter().any(|p| p.legacy) =>
                {
                    let name = c.keyword.to_ascii_uppercase();
                    warn(
                            "LegacyKeyValueFormat",
                            c.line,
                            format!("\"{name} key=value\" should be used instead of legacy \"{name} key value\" format"),
                        );
                }
                _ => {}
            }
        }
    }
    out.sort_by_key(|p| p.line);
    out
}

fn count_case(keyword: &str, upper: &mut usize, lower: &mut usize) {
    if keyword == keyword.to_ascii_uppercase() {
        *upper += 1;
    } else if keyword == keyword.to_ascii_lowercase() {
        *lower += 1;
    }
}

/// The keyword of the instruction starting at `line`.
fn first_word(source: &str, line: usize) -> String {
    source
        .lines()
        .nth(line.saturating_sub(1))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("FROM")
        .to_string()
}

/// SecretsUsedInArgOrEnv: names that look like credentials.
fn secrets(
    instruction: &Instruction,
    line: usize,
    warn: &mut dyn FnMut(&'static str, usize, String),
) {
    let (kind, names): (&str, Vec<&str>) = match instruction {
        Instruction::Arg { args } => ("ARG", args.iter().map(|a| a.key.as_str()).collect()),
        Instruction::Env { pairs } => ("ENV", pairs.iter().map(|p| p.key.as_str()).collect()),
        _ => return,
    };
    const WORDS: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    for name in names {
        let lower = name.to_ascii_lowercase();
        if lower.split('_').any(|part| WORDS.contains(&part)) {
            warn(
                "SecretsUsedInArgOrEnv",
                line,
                format!(
                    "Do not use ARG or ENV instructions for sensitive data ({kind} \"{name}\")"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Vec<&'static str> {
        lint(&Dockerfile::parse("Dockerfile", text).unwrap())
            .iter()
            .map(|p| p.rule)
            .collect()
    }

    #[test]
    fn finds_the_usual_suspects() {
        assert_eq!(
            rules("FROM a AS Build\nCMD echo hi\n"),
            ["StageNameCasing", "JSONArgsRecommended"]
        );
        assert_eq!(rules("FROM a as b\n"), ["FromAsCasing"]);
        assert_eq!(rules("FROM a\nMAINTAINER me\n"), ["MaintainerDeprecated"]);
        assert_eq!(rules("FROM a\nENV A b\n"), ["LegacyKeyValueFormat"]);
        assert_eq!(rules("FROM a\nARG API_TOKEN\n"), ["SecretsUsedInArgOrEnv"]);
        assert_eq!(
            rules("FROM a\nrun x\nRUN y\nRUN z\n"),
            ["ConsistentInstructionCasing"]
        );
        assert!(rules("FROM a\nCMD [\"x\"]\n").is_empty());
    }
}
