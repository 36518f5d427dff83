//! A parsed Dockerfile as stages: the global ARGs before the first FROM,
//! then each `FROM` with its instructions, names and indexes.

use serde::Serialize;

use crate::dockerfile::directives::Directives;
use crate::dockerfile::instructions::{parse_command, Command, From, Instruction};
use crate::dockerfile::parser::{self, ParseWarning};
use crate::error::{suggest, Error, ErrorKind, Result};

/// One build stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// 0-based position in the file.
    pub index: usize,
    /// `AS name` as written.
    pub name: Option<String>,
    /// The FROM instruction.
    pub from: From,
    /// Line of the FROM, 1-based.
    pub line: usize,
    /// The instructions after FROM.
    pub commands: Vec<Command>,
}

/// A whole Dockerfile, typed.
#[derive(Debug, Clone, Serialize)]
pub struct Dockerfile {
    /// File name as given (for messages).
    pub file: String,
    /// The text.
    #[serde(skip)]
    pub source: String,
    /// Parser directives.
    pub directives: Directives,
    /// Parser warnings.
    pub warnings: Vec<ParseWarning>,
    /// ARG instructions before the first FROM.
    pub global_args: Vec<Command>,
    /// Stages in file order.
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// Parses and types `source`. `file` names it in errors.
    pub fn parse(file: &str, source: &str) -> Result<Dockerfile> {
        let ast = parser::parse(file, source)?;
        let mut global_args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for node in &ast.nodes {
            let command = parse_command(node)
                .map_err(|f| f.error.locate(file, source, f.needle.as_deref()))?;
            match &command.instruction {
                Instruction::From(from) => {
                    if let Some(name) = &from.name {
                        let taken = stages.iter().any(|s| {
                            s.name
                                .as_deref()
                                .is_some_and(|n| n.eq_ignore_ascii_case(name))
                        });
                        if taken {
                            return Err(Error::at(
                                command.line,
                                ErrorKind::DuplicateStageName { name: name.clone() },
                            )
                            .locate(file, source, Some(name)));
                        }
                    }
                    stages.push(Stage {
                        index: stages.len(),
                        name: from.name.clone(),
                        from: from.clone(),
                        line: command.line,
                        commands: Vec::new(),
                    });
                }
                Instruction::Arg { .. } if stages.is_empty() => global_args.push(command),
                _ => match stages.last_mut() {
                    Some(stage) => stage.commands.push(command),
                    None => {
                        return Err(Error::at(
                            command.line,
                            ErrorKind::BeforeFrom {
                                instruction: node.name(),
                            },
                        )
                        .locate(file, source, Some(&node.keyword)))
                    }
                },
            }
        }
        if stages.is_empty() {
            let line = global_args.last().map_or(1, |c| c.line);
            return Err(Error::at(
                line,
                ErrorKind::BeforeFrom {
                    instruction: "ARG".into(),
                },
            )
            .locate(file, source, None));
        }
        Ok(Dockerfile {
            file: file.to_string(),
            source: source.to_string(),
            directives: ast.directives,
            warnings: ast.warnings,
            global_args,
            stages,
        })
    }

    /// The stage a `--from`, `FROM` or `--target` value names: a stage name
    /// (case-insensitive) or a numeric index. Only stages before `before`
    /// count when it is given (a stage can use earlier stages only).
    pub fn find_stage(&self, name: &str, before: Option<usize>) -> Option<usize> {
        let limit = before.unwrap_or(self.stages.len());
        if let Some(s) = self.stages[..limit].iter().find(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        }) {
            return Some(s.index);
        }
        if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
            return name.parse::<usize>().ok().filter(|&i| i < limit);
        }
        None
    }

    /// The index of the `--target` stage (the last stage when `None`).
    pub fn target_index(&self, target: Option<&str>) -> Result<usize> {
        let Some(target) = target else {
            return Ok(self.stages.len() - 1);
        };
        self.stages
            .iter()
            .find(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(target))
            })
            .map(|s| s.index)
            .ok_or_else(|| {
                let names = self.stages.iter().filter_map(|s| s.name.as_deref());
                Error::at(
                    0,
                    ErrorKind::UnknownTarget {
                        name: target.to_string(),
                        suggestion: suggest(target, names),
                    },
                )
                .locate(&self.file, &self.source, None)
            })
    }

    /// Stage names usable in suggestions.
    pub(crate) fn stage_names(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().filter_map(|s| s.name.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_stages() {
        let df = Dockerfile::parse(
            "Dockerfile",
            "ARG V=1\nFROM a AS build\nRUN x\nFROM b\nCOPY --from=build / /\n",
        )
        .unwrap();
        assert_eq!(df.global_args.len(), 1);
        assert_eq!(df.stages.len(), 2);
        assert_eq!(df.stages[0].commands.len(), 1);
        assert_eq!(df.find_stage("BUILD", None), Some(0));
        assert_eq!(df.find_stage("0", Some(1)), Some(0));
        assert_eq!(df.find_stage("1", Some(1)), None);
        assert_eq!(df.target_index(Some("build")).unwrap(), 0);
        let e = df.target_index(Some("buidl")).unwrap_err();
        assert!(e.to_string().contains("did you mean build?"), "{e}");
    }

    #[test]
    fn rejects_misplaced_and_duplicates() {
        assert!(Dockerfile::parse("Dockerfile", "RUN x\nFROM a\n").is_err());
        assert!(Dockerfile::parse("Dockerfile", "ARG x\n").is_err());
        assert!(Dockerfile::parse("Dockerfile", "FROM a AS x\nFROM b AS X\n").is_err());
    }
}
