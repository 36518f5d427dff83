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
    /// A network namespace of its own on the default bridge network (kiln0),
    /// NAT out, as BuildKit's default.
    Bridge,
}

/// The network a RUN gets: its `--network`, else the build's `--network`.
/// `default` is the default bridge network.
pub(crate) fn network_setup(step: Network, build: Network) -> NetworkSetup {
    let chosen = if step == Network::Default {
        build
    } else {
        step
    };
    match chosen {
        Network::None => NetworkSetup::Isolated,
        Network::Host => NetworkSetup::Host,
        Network::Default => NetworkSetup::Bridge,
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
        // --network=host: RUN shares the host's network namespace.
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
    pool: &NetPool,
) -> Result<(), SolveError> {
    check_supported(op)?;
    let prepared = mounts::prepare(mount_env, &op.mounts)?;
    let mut spec = spec_for(op, root, network, &prepared)?;
    // Given back to the pool once the container is gone; released when
    // dropped before that (a failed start, an interrupted build).
    let bridged = match network {
        NetworkSetup::Bridge => {
            let b = match pool.take() {
                Some(b) => b,
                None => bridge_setup(mount_env)?,
            };
            b.apply(&mut spec);
            Some(b)
        }
        _ => None,
    };
    crate::timing::mark("network attached");
    let stubs = mounts::stubs(root, &prepared.mounts);
    let missing: Vec<&str> = MOUNT_STUBS
        .iter()
        .copied()
        .filter(|p| std::fs::symlink_metadata(root.join(p)).is_err())
        .collect();
    // Directories of the upper layer that only the stubs would make (etc/ of
    // an image without /etc/hosts): removed with them when left empty, so a
    // RUN that changes nothing makes no layer.
    let stub_parents: Vec<PathBuf> = missing
        .iter()
        .filter_map(|p| Path::new(p).parent())
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| upper.join(p))
        .filter(|p| std::fs::symlink_metadata(p).is_err())
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
    if let Some(b) = &bridged {
        // Keeps the attachment while the container lives, even if this
        // process is killed (and lets the next reap take it once both are gone).
        let _ = kiln_runner::network::set_pid(&b.id, child.pid());
    }
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
    if let Some(b) = bridged {
        pool.give(b);
    }
    crate::timing::mark("network given back");
    mounts::remove_stubs(&stubs);
    for stub in missing {
        remove_stub(&upper.join(stub));
    }
    for dir in stub_parents {
        let _ = std::fs::remove_dir(dir);
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

/// The /etc/hosts of a RUN step (as BuildKit writes it).
const HOSTS: &str =
    "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// A RUN step's place on the default bridge network: its attachment and the
/// scratch directory holding its /etc/hosts and /etc/resolv.conf. Dropping
/// it gives both back.
struct Bridged {
    id: String,
    dir: PathBuf,
    netns: PathBuf,
}

impl Drop for Bridged {
    fn drop(&mut self) {
        if !self.id.is_empty() {
            let _ = kiln_runner::network::release(&self.id);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bridged {
    /// Points `spec` at the network namespace, /etc/hosts and /etc/resolv.conf.
    fn apply(&self, spec: &mut Spec) {
        if let Some(linux) = spec.linux_mut().as_mut() {
            if let Some(namespaces) = linux.namespaces_mut().as_mut() {
                for ns in namespaces.iter_mut() {
                    if ns.typ() == LinuxNamespaceType::Network {
                        ns.set_path(Some(self.netns.clone()));
                    }
                }
            }
        }
        let mut all = spec.mounts().clone().unwrap_or_default();
        for (name, target) in [("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")] {
            all.retain(|m| m.destination() != Path::new(target));
            all.push(
                MountBuilder::default()
                    .destination(target)
                    .typ("bind")
                    .source(self.dir.join(name))
                    .options(vec!["rbind".to_string(), "ro".to_string()])
                    .build()
                    .expect("a bind mount builds"),
            );
        }
        spec.set_mounts(Some(all));
    }
}

/// The build's places on the default bridge network that no RUN step uses
/// now. A RUN step takes one (or attaches a new one) and gives it back once
/// its container is gone, so a build attaches as many as it runs RUN steps
/// at once, not one per step (BuildKit, too, keeps a pool of network
/// namespaces). A RUN step cannot change its namespace (it has no
/// CAP_NET_ADMIN and /proc/sys is read-only), and its processes die with
/// its PID namespace, so the next step finds the namespace as it was made.
/// Dropping the pool (the build's end) releases them all.
#[derive(Default)]
pub(crate) struct NetPool {
    free: std::sync::Mutex<Vec<Bridged>>,
}

impl NetPool {
    fn take(&self) -> Option<Bridged> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn give(&self, bridged: Bridged) {
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(bridged);
    }

    /// Releases every place kept (the build's steps are done).
    pub(crate) fn release_all(&self) {
        let all = std::mem::take(&mut *self.free.lock().unwrap_or_else(|e| e.into_inner()));
        drop(all);
    }
}

/// Attaches a fresh network namespace to the default bridge network, with
/// its own /etc/hosts and /etc/resolv.conf.
fn bridge_setup(env: &mounts::MountEnv) -> Result<Bridged, SolveError> {
    let token = rand::random::<u64>();
    // The scratch name starts with the pid: a killed build's directory is
    // removed by the next build ([`mounts::remove_stale`]).
    let dir = env
        .store
        .cache_dir()
        .join("run")
        .join(format!("{}-net{token:016x}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(SolveError::io("create directory", &dir))?;
    let mut bridged = Bridged {
        id: format!("build{}x{token:016x}", std::process::id()),
        dir,
        netns: PathBuf::new(),
    };
    let hosts = bridged.dir.join("hosts");
    let resolv = bridged.dir.join("resolv.conf");
    std::fs::write(&hosts, HOSTS).map_err(SolveError::io("write", &hosts))?;
    std::fs::write(&resolv, kiln_runner::network::resolv_conf(&[]))
        .map_err(SolveError::io("write", &resolv))?;
    let networks = env.store.root().join("networks");
    match kiln_runner::network::attach_default(&networks, &bridged.id) {
        Ok(a) => bridged.netns = a.netns,
        Err(e) => {
            // Nothing is attached: only the directory goes.
            bridged.id.clear();
            return Err(SolveError::Network {
                message: format!("attaching the RUN step to the default network: {e}"),
            });
        }
    }
    Ok(bridged)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_network_falls_back_to_the_builds_and_default_is_the_bridge() {
        let cases = [
            (Network::Default, Network::Default, NetworkSetup::Bridge),
            (Network::Default, Network::Host, NetworkSetup::Host),
            (Network::Default, Network::None, NetworkSetup::Isolated),
            (Network::None, Network::Default, NetworkSetup::Isolated),
            (Network::Host, Network::None, NetworkSetup::Host),
        ];
        for (step, build, want) in cases {
            assert_eq!(
                network_setup(step, build),
                want,
                "{step:?} in a {build:?} build"
            );
        }
    }
}
