//! RUN and COPY/ADD: the two instructions that make exec and file ops.

use crate::dockerfile::heredoc::chomp;
use crate::dockerfile::instructions::{Command, CommandLine, Copy, Run};
use crate::dockerfile::mounts::{parse_mount, CacheSharing, MountType};
use crate::dockerfile::shell::Lexer;
use crate::error::{ErrorKind, Result};
use crate::graph::compile::{Compiler, StageState, PROXY_ARGS};
use crate::graph::ops::{ExecMount, ExecOp, FileAction, FileOp, InlineFile, Input, Op};

impl Compiler<'_> {
    /// CopyIgnoredFile: a COPY/ADD source the ignore file excludes.
    fn check_ignored(&mut self, sources: &[String], keyword: &str, line: usize) {
        let Some(ignore) = &self.ignore else { return };
        let verb = if keyword == "ADD" { "Add" } else { "Copy" };
        for source in sources {
            if source.contains(['*', '?', '[']) || source.contains("://") {
                continue;
            }
            let path = crate::dockerfile::dockerignore::clean(source.trim_start_matches('/'));
            if path != "." && ignore.matches(&path) {
                self.problems.push(crate::check::Problem {
                    rule: "CopyIgnoredFile",
                    level: crate::check::Level::Warning,
                    message: format!(
                        "Attempting to {verb} file \"{source}\" that is excluded by .dockerignore"
                    ),
                    line,
                });
            }
        }
    }

    pub(super) fn run(
        &mut self,
        state: &mut StageState,
        command: &Command,
        run: &Run,
        env: &[(String, String)],
        depth: usize,
    ) -> Result<()> {
        let line = command.line;
        let mut inputs: Vec<Input> = state
            .root
            .map(|r| Input {
                role: "rootfs".into(),
                node: r,
            })
            .into_iter()
            .collect();
        let mut mounts = Vec::new();
        for text in &run.mounts {
            let mut expand = |v: &str| -> std::result::Result<String, ErrorKind> {
                self.lexer.process_word(v, env).map_err(ErrorKind::from)
            };
            let mount =
                parse_mount(text, &mut expand).map_err(|k| self.error(line, k, Some("--mount")))?;
            let target = mount.target.clone().unwrap_or_else(|| match mount.kind {
                MountType::Ssh => "/run/buildkit/ssh_agent.0".to_string(),
                _ => String::new(),
            });
            let target = if target.is_empty() || target.starts_with('/') {
                target
            } else {
                format!("{}/{}", state.workdir().trim_end_matches('/'), target)
            };
            let input = match (mount.kind, &mount.from) {
                (MountType::Bind | MountType::Cache, Some(from)) => {
                    let platform = state.platform.clone();
                    self.resolve_from(from, line, depth, &platform)?
                }
                (MountType::Bind, None) => Some(self.context_node()),
                _ => None,
            };
            let slot = input.map(|node| {
                inputs.push(Input {
                    role: format!("mount:{target}"),
                    node,
                });
                inputs.len() - 1
            });
            mounts.push(ExecMount {
                kind: mount.kind,
                target,
                input: slot,
                source: mount.source.clone().unwrap_or_else(|| "/".into()),
                readonly: mount.readonly,
                id: mount.id.clone(),
                sharing: mount.sharing,
                mode: mount.mode,
                uid: mount.uid,
                gid: mount.gid,
                required: mount.required,
                size: mount.size,
                env: mount.env.clone(),
                inline: None,
            });
        }
        let mut args = match &run.command {
            CommandLine::Exec(args) => args.clone(),
            CommandLine::Shell(text) => vec![text.clone()],
        };
        let prepend_shell = !run.command.is_exec();
        if !run.heredocs.is_empty() && prepend_shell {
            let simple = crate::dockerfile::heredoc::parse_heredoc(&args[0])
                .ok()
                .flatten();
            let first = &run.heredocs[0];
            if simple.is_some() {
                let data = if first.chomp {
                    chomp(&first.content)
                } else {
                    first.content.clone()
                };
                if data.starts_with("#!") {
                    mounts.push(ExecMount {
                        kind: MountType::Bind,
                        target: "/dev/pipes/".to_string(),
                        input: None,
                        source: "/".to_string(),
                        readonly: true,
                        id: None,
                        sharing: CacheSharing::Shared,
                        mode: None,
                        uid: None,
                        gid: None,
                        required: false,
                        size: None,
                        env: None,
                        inline: Some(InlineFile {
                            name: first.name.clone(),
                            data,
                            mode: 0o755,
                        }),
                    });
                    args = vec![format!("/dev/pipes/{}", first.name)];
                } else {
                    args = vec![data];
                }
            } else {
                let mut full = args[0].clone();
                for doc in &run.heredocs {
                    full.push('\n');
                    full.push_str(&doc.content);
                    full.push_str(&doc.name);
                }
                args = vec![full];
            }
        }
        if prepend_shell {
            let mut shell = state.shell();
            shell.extend(args);
            args = shell;
        }
        // Environment: ENV, then ARG values ENV does not override, then
        // undeclared proxy build args (not recorded in history; a declared
        // one is an ARG like any other, as in BuildKit).
        let mut exec_env = state.config.env.clone();
        let mut history_args = Vec::new();
        for (key, value) in &state.args {
            // History lists every declared ARG, one without a value as
            // `KEY=` (BuildKit's runCommandString); only valued ones reach
            // the environment.
            let effective = state
                .env_value(key)
                .or_else(|| value.clone())
                .unwrap_or_default();
            history_args.push(format!("{key}={effective}"));
            if let (Some(value), None) = (value, state.env_value(key)) {
                exec_env.push(format!("{key}={value}"));
            }
        }
        for (key, value) in &state.inherited {
            let own = state.args.iter().any(|(k, v)| k == key && v.is_some());
            if state.env_value(key).is_none() && !own {
                exec_env.push(format!("{key}={value}"));
            }
        }
        for proxy in PROXY_ARGS {
            if state.args.iter().any(|(k, _)| k == proxy) {
                continue;
            }
            if let Some(v) = self.build_args.get(*proxy).cloned() {
                exec_env.push(format!("{proxy}={v}"));
            }
        }
        let mut created_by = String::from("RUN ");
        if !history_args.is_empty() {
            created_by.push_str(&format!(
                "|{} {} ",
                history_args.len(),
                history_args.join(" ")
            ));
        }
        created_by.push_str(&args.join(" "));
        created_by.push_str(" # buildkit");
        let op = Op::Exec(ExecOp {
            args,
            env: exec_env,
            cwd: state.workdir(),
            user: state.config.user.clone(),
            mounts,
            network: run.network,
            security: run.security,
            platform: state.platform.clone(),
        });
        state.root = Some(self.add(state, op, inputs, command));
        state.history(created_by, false);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy(
        &mut self,
        state: &mut StageState,
        command: &Command,
        copy: &Copy,
        env: &[(String, String)],
        declared: &dyn Fn(&str) -> bool,
        depth: usize,
    ) -> Result<()> {
        let line = command.line;
        let keyword = if copy.is_add { "ADD" } else { "COPY" };
        let mut sources = Vec::new();
        for s in &copy.sources {
            sources.push(self.expand(s, env, declared, line)?);
        }
        let raw_dest = self.expand(&copy.dest, env, declared, line)?;
        let dest = if raw_dest.starts_with('/') {
            raw_dest.clone()
        } else {
            let joined = crate::dockerfile::dockerignore::clean(&format!(
                "{}/{}",
                state.workdir(),
                raw_dest
            ));
            if raw_dest.ends_with('/') || raw_dest == "." || raw_dest.is_empty() {
                format!("{}/", joined.trim_end_matches('/'))
            } else {
                joined
            }
        };
        let chown = match &copy.chown {
            Some(c) => Some(self.expand(c, env, declared, line)?),
            None => None,
        };
        // A flag value after expansion, checked against its syntax.
        let mut checked = |value: &Option<String>,
                           flag: &'static str,
                           valid: fn(&str) -> bool,
                           hint: &'static str| {
            match value {
                Some(c) => {
                    let v = self.expand(c, env, declared, line)?;
                    if !valid(&v) {
                        return Err(self.flag_error(line, flag, v, hint));
                    }
                    Ok(Some(v))
                }
                None => Ok(None),
            }
        };
        let chmod = checked(
            &copy.chmod,
            "chmod",
            is_valid_chmod,
            "octal bits like 0755 or symbolic like u+x",
        )?;
        let checksum = checked(
            &copy.checksum,
            "checksum",
            is_valid_checksum,
            "sha256:<64 hex>, sha384:, sha512: or a git commit",
        )?;
        if checksum.is_some() {
            // As BuildKit: one URL (git sources are not supported here).
            let reason = if sources.len() + copy.inline_sources.len() != 1 {
                Some("it can't be specified for multiple sources")
            } else if !sources
                .first()
                .is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"))
            {
                Some("it requires an HTTP(S) source")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(self.error(
                    line,
                    ErrorKind::FlagNotAllowed {
                        flag: "checksum".into(),
                        reason,
                    },
                    Some("--checksum"),
                ));
            }
        }
        let mut exclude = Vec::new();
        for e in &copy.exclude {
            exclude.push(self.expand(e, env, declared, line)?);
        }
        let mut inputs: Vec<Input> = state
            .root
            .map(|r| Input {
                role: "rootfs".into(),
                node: r,
            })
            .into_iter()
            .collect();
        let mut actions = Vec::new();
        let remote = |s: &str| {
            s.starts_with("http://")
                || s.starts_with("https://")
                || s.starts_with("git@")
                || s.starts_with("git://")
        };
        let needs_input = sources.iter().any(|s| !(copy.is_add && remote(s)));
        let input = if !needs_input {
            None
        } else {
            let node = match &copy.from {
                Some(from) => {
                    let from = self.expand(from, env, declared, line)?;
                    let platform = state.platform.clone();
                    self.resolve_from(&from, line, depth, &platform)?
                }
                None => {
                    self.check_ignored(&sources, keyword, line);
                    Some(self.context_node())
                }
            };
            node.map(|node| {
                inputs.push(Input {
                    role: "source".into(),
                    node,
                });
                inputs.len() - 1
            })
        };
        let mode = chmod
            .as_deref()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .unwrap_or(0o644);
        let several = copy.inline_sources.len() + sources.len() > 1;
        for inline in &copy.inline_sources {
            let data = if inline.expand {
                let mut raw = Lexer::new('\\');
                raw.skip_process_quotes = true;
                raw.process_word(&inline.data, env)
                    .map_err(|e| self.error(line, e.into(), None))?
            } else {
                inline.data.clone()
            };
            let path = if dest.ends_with('/') || several {
                format!("{}/{}", dest.trim_end_matches('/'), inline.path)
            } else {
                dest.clone()
            };
            actions.push(FileAction::Mkfile {
                path,
                data,
                mode,
                chown: chown.clone(),
            });
        }
        if !sources.is_empty() {
            actions.push(FileAction::Copy {
                input,
                sources: sources.clone(),
                dest: dest.clone(),
                chown: chown.clone(),
                chmod: chmod.clone(),
                link: copy.link,
                parents: copy.parents,
                exclude,
                is_add: copy.is_add,
                unpack: copy.unpack,
                checksum,
                keep_git_dir: copy.keep_git_dir,
            });
        }
        let op = Op::File(FileOp { actions });
        state.root = Some(self.add(state, op, inputs, command));
        let mut created_by = keyword.to_string();
        for s in &sources {
            created_by.push(' ');
            created_by.push_str(s);
        }
        for inline in &copy.inline_sources {
            created_by.push_str(&format!(" <<{}", inline.path));
        }
        created_by.push_str(&format!(" {raw_dest} # buildkit"));
        state.history(created_by, false);
        Ok(())
    }
}

fn is_valid_chmod(text: &str) -> bool {
    if !text.is_empty() && text.len() <= 4 && text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return true;
    }
    !text.is_empty()
        && text.split(',').all(|clause| {
            let who = clause.bytes().take_while(|b| b"ugoa".contains(b)).count();
            let rest = &clause[who..];
            !rest.is_empty()
                && rest.as_bytes()[0].is_ascii()
                && b"+-=".contains(&rest.as_bytes()[0])
                && rest[1..].bytes().all(|b| b"rwxXst".contains(&b))
        })
}

fn is_valid_checksum(text: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match text.split_once(':') {
        Some(("sha256", h)) => hex(h, 64),
        Some(("sha384", h)) => hex(h, 96),
        Some(("sha512", h)) => hex(h, 128),
        None => hex(text, 40) || hex(text, 64),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_and_checksum() {
        assert!(is_valid_chmod("0755") && is_valid_chmod("u+x,go-w") && !is_valid_chmod("999"));
        assert!(is_valid_checksum(&format!("sha256:{}", "a".repeat(64))));
        assert!(!is_valid_checksum("sha256:abc"));
    }
}
