//! RUN: the command runs in a container whose root is an overlay of the
//! parent stack plus a fresh upper directory; the upper directory becomes
//! the step's layer.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_runner::oci_spec::runtime::{LinuxNamespaceType, MountBuilder, Spec};
use kiln_runner::{default_spec, Container, Stdio};

use crate::dockerfile::instructions::{Network, Security};
use crate::graph::ops::ExecOp;
use crate::solve::error::SolveError;
use crate::solve::mounts;
use crate::solve::paths::resolve_in_root;
use crate::solve::progress::StepEvent;
use crate::solve::users::{resolve_in, Purpose};

/// Lines of output kept for the error message of a failed RUN.
const TAIL_LINES: usize = 10;

/// Mount points the runtime creates if missing; removed again from the
/// upper directory when they were made only for the run (as BuildKit does).
const MOUNT_STUBS: &[&str] = &[
    "proc",
    "dev",
    "sys",
    "etc/resolv.conf",
    "etc/hosts",
    "etc/hostname",
];

/// Why a RUN cannot run; checked before anything is prepared.
pub(crate) fn check_supported(op: &ExecOp) -> Result<(), SolveError> {
    if op.security == Security::Insecure {
        return Err(SolveError::Entitlement {
            name: "security.insecure",
        });
    }
    Ok(())
}

/// How a RUN's network is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NetworkSetup {
    /// The host's network namespace.
    Host,
    /// A network namespace of its own with only loopback.
    Isolated,
}

/// The network a RUN gets: its `--network`, else the build's `--network`.
/// `default` is the host's network for now (no bridge yet).
pub(crate) fn network_setup(step: Network, build: Network) -> NetworkSetup {
    let chosen = if step == Network::Default {
        build
    } else {
        step
    };
    match chosen {
        Network::None => NetworkSetup::Isolated,
        Network::Host | Network::Default => NetworkSetup::Host,
    }
}

/// Builds the runtime spec of a RUN step.
pub(crate) fn spec_for(
    op: &ExecOp,
    root: &Path,
    network: NetworkSetup,
    mounts: &mounts::Prepared,
) -> Result<Spec, SolveError> {
    let ids = resolve_in(root, &op.user, Purpose::Process)?;
    let mut spec = default_spec();
    spec.set_hostname(Some("buildkitsandbox".to_string()));
    let process = spec
        .process_mut()
        .as_mut()
        .expect("the default spec has a process");
    process.set_args(Some(op.args.clone()));
    let mut env = op.env.clone();
    env.extend(mounts.env.iter().cloned());
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(if op.cwd.is_empty() { "/" } else { &op.cwd }));
    process.user_mut().set_uid(ids.uid);
    process.user_mut().set_gid(ids.gid);
    // docker build lets RUN use setuid programs (sudo, su).
    process.set_no_new_privileges(Some(false));
    if network == NetworkSetup::Host {
        // No network namespace yet: RUN shares the host's network.
        if let Some(linux) = spec.linux_mut().as_mut() {
            if let Some(namespaces) = linux.namespaces_mut().as_mut() {
                namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
            }
        }
        let mut extra = spec.mounts().clone().unwrap_or_default();
        for file in ["/etc/resolv.conf", "/etc/hosts"] {
            let inside = resolve_in_root(root, file).ok();
            if Path::new(file).is_file() && inside.is_some_and(|p| p.is_file()) {
                extra.push(
                    MountBuilder::default()
                        .destination(file)
                        .typ("bind")
                        .source(file)
                        .options(vec!["rbind".to_string(), "ro".to_string()])
                        .build()
                        .expect("a bind mount builds"),
                );
            }
        }
        spec.set_mounts(Some(extra));
    }
    let mut all = spec.mounts().clone().unwrap_or_default();
    all.extend(mounts.mounts.iter().cloned());
    spec.set_mounts(Some(all));
    Ok(spec)
}

/// Runs the command on the prepared `root` (an overlay whose upper dir is
/// `upper`), streaming its output as events. `cgroup` is relative to the
/// cgroup root.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    op: &ExecOp,
    root: &Path,
    upper: &Path,
    cgroup: &str,
    emit: &dyn Fn(StepEvent),
    running: &std::sync::Mutex<Vec<i32>>,
    network: NetworkSetup,
    mount_env: &mounts::MountEnv,
) -> Result<(), SolveError> {
    check_supported(op)?;
    let prepared = mounts::prepare(mount_env, &op.mounts)?;
    let spec = spec_for(op, root, network, &prepared)?;
    let stubs = mounts::stubs(root, &prepared.mounts);
    let missing: Vec<&str> = MOUNT_STUBS
        .iter()
        .copied()
        .filter(|p| std::fs::symlink_metadata(root.join(p)).is_err())
        .collect();
    // BuildKit creates the working directory when it is missing.
    let cwd =
        resolve_in_root(root, &op.cwd).map_err(SolveError::io("resolve", root.join(&op.cwd)))?;
    if !cwd.exists() {
        std::fs::create_dir_all(&cwd).map_err(SolveError::io("create directory", &cwd))?;
    }
    let (read, write) =
        nix::unistd::pipe().map_err(|e| SolveError::io("create pipe for", root)(e.into()))?;
    let write2 = write
        .try_clone()
        .map_err(SolveError::io("duplicate pipe for", root))?;
    let started = Instant::now();
    let mut child = Container::builder(spec, root)
        .cgroup(cgroup)
        .stdin(Stdio::Null)
        .stdout(Stdio::Fd(write))
        .stderr(Stdio::Fd(write2))
        .kill_with_parent(true)
        .spawn()
        .map_err(|source| SolveError::Runner { source })?;
    // Registered so an interrupted build can kill it.
    running.lock().expect("not poisoned").push(child.pid());
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut reader = BufReader::new(std::fs::File::from(read));
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                emit(StepEvent::Log {
                    elapsed: started.elapsed(),
                    line: line.clone(),
                });
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|source| SolveError::Runner { source })?;
    drop(prepared);
    mounts::remove_stubs(&stubs);
    for stub in missing {
        remove_stub(&upper.join(stub));
    }
    if status.code() != 0 {
        return Err(SolveError::ExecFailed {
            command: op.args.join(" "),
            code: i32::from(status.code()),
            output_tail: tail.into(),
        });
    }
    Ok(())
}

/// Removes an empty directory or empty file the runtime made as a mount
/// point (and nothing with content).
fn remove_stub(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir(path);
        }
        Ok(m) if m.is_file() && m.len() == 0 => {
            let _ = std::fs::remove_file(path);
        }
        _ => {}
    }
}
