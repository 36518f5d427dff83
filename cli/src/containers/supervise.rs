//! Starting a container's program and seeing it to its end: overlay rootfs,
//! runner spawn, state updates, logs. Used by the foreground `kiln run` and
//! by the per-container monitor process of detached containers.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::Utc;
use kiln_runner::cgroup::PreparedCgroup;
use kiln_runner::overlay::{OverlayMount, Writable};
use kiln_runner::{Child, Stdio};

use super::{process_start_time, Container, State, Status};

/// A running container program with its mounted root filesystem.
#[derive(Debug)]
pub struct Started {
    pub child: Child,
    mount: Option<OverlayMount>,
}

/// The exit code for an error of a container command: the runner's own
/// (126 cannot execute, 127 not found) or 125 for everything else.
pub fn exit_code_of(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|c| c.downcast_ref::<kiln_runner::Error>())
        .map(|e| e.exit_code())
        .unwrap_or(125)
}

/// Whether `target` is a mount point (per /proc/self/mountinfo).
fn is_mounted(target: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Some(target) = target.to_str() else {
        return false;
    };
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(target))
}

/// Unmounts a root filesystem left mounted by a killed monitor.
pub fn unmount_stale(target: &Path) -> Result<()> {
    // What kiln mounts there is an overlay, whose device differs from that
    // of the container directory: two stats spare the mount table's read
    // in the usual case of nothing mounted.
    use std::os::unix::fs::MetadataExt;
    let device = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    match (device(target), target.parent().and_then(device)) {
        (None, _) => return Ok(()),
        (Some(a), Some(b)) if a == b => return Ok(()),
        _ => {}
    }
    let Ok(target) = std::fs::canonicalize(target) else {
        return Ok(());
    };
    while is_mounted(&target) {
        nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", target.display()))?;
    }
    Ok(())
}

/// A network namespace being made (see [`own_network_namespace`]).
pub type PendingNetns = std::thread::JoinHandle<kiln_runner::network::Result<std::fs::File>>;

/// Starts making the network namespace of a container of network mode
/// `mode`, when it gets one of its own that nothing attaches to (`none`):
/// on another thread, while the rest is set up.
pub fn own_network_namespace(mode: &str) -> Option<PendingNetns> {
    (mode == "none")
        .then(kiln_runner::network::spawn_namespace)
        .and_then(Result::ok)
}

/// Mounts the rootfs, starts the program and records it as running. On
/// failure the state says exited (with the runner's exit code) and nothing
/// stays mounted. `netns` is the container's network namespace when made
/// beforehand by [`own_network_namespace`].
pub fn start(
    container: &Container,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    netns: Option<PendingNetns>,
) -> Result<Started> {
    let result = start_inner(container, stdin, stdout, stderr, netns);
    if let Err(err) = &result {
        let state = State {
            status: Status::Exited,
            exit_code: Some(exit_code_of(err) as i32),
            finished_at: Some(Utc::now()),
            error: Some(format!("{err:#}")),
            ..State::default()
        };
        let _ = container.set_state(&state);
    }
    result
}

fn start_inner(
    container: &Container,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    netns: Option<PendingNetns>,
) -> Result<Started> {
    let record = &container.record;
    let rootfs = container.rootfs();
    let netns = netns.or_else(|| own_network_namespace(&record.net.mode));
    // Two halves of the set-up that touch different things run at once: the
    // network (namespace, veth, /etc files) on another thread, the root
    // filesystem on this one; the cgroup goes with the shorter half (the
    // network of a bridge takes milliseconds, that of none a few files).
    // Both are joined before the container is cloned.
    let relative = std::path::PathBuf::from(format!("kiln/{}", record.id));
    let resources = record
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone());
    let make_cgroup = || {
        let made = PreparedCgroup::create(&relative, resources.as_ref());
        kiln_runner::timing::mark("cgroup prepared");
        made
    };
    let cgroup_with_network = !record.net.is_bridge();
    let mut spec = record.spec.clone();
    let (mounted, net, prepared) = std::thread::scope(|scope| {
        let spec = &mut spec;
        let network = std::thread::Builder::new()
            .name("kiln-net".into())
            .spawn_scoped(scope, || {
                let prepared = cgroup_with_network.then(make_cgroup);
                (set_up_network(container, spec), prepared)
            });
        let mounted = mount_root(container, &rootfs);
        let prepared = (!cgroup_with_network && mounted.is_ok()).then(make_cgroup);
        let (net, other) = match network {
            Ok(handle) => handle.join().expect("the network thread does not panic"),
            Err(e) => (
                Err(anyhow::Error::new(e).context("starting a thread")),
                None,
            ),
        };
        (mounted, net, prepared.or(other))
    });
    // On error from here what was made is given back: the mount and the
    // prepared cgroup when dropped, the network by its teardown.
    let teardown = |net: &super::net::NetUp| {
        if net.attached {
            let _ = super::net::teardown(container);
        }
    };
    let net = net?;
    let mount = match mounted {
        Ok(mount) => mount,
        Err(e) => {
            teardown(&net);
            return Err(e);
        }
    };
    let prepared = match prepared.transpose() {
        Ok(p) => p,
        Err(e) => {
            teardown(&net);
            drop(mount);
            return Err(anyhow::Error::new(e))
                .with_context(|| format!("starting container {}", record.name));
        }
    };
    let netns = match netns.map(|h| h.join().expect("the netns thread does not panic")) {
        Some(Err(e)) => {
            teardown(&net);
            drop((mount, prepared));
            return Err(anyhow::Error::new(e))
                .with_context(|| format!("starting container {}", record.name));
        }
        made => made.and_then(Result::ok),
    };
    let mut builder = kiln_runner::Container::builder(spec, &rootfs);
    if let Some(ns) = netns {
        builder = builder.network_namespace(ns);
    }
    builder = match prepared {
        Some(cgroup) => builder.prepared_cgroup(cgroup),
        None => builder.cgroup(relative),
    };
    let spawned = builder
        .init(record.init)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting container {}", record.name));
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            teardown(&net);
            drop(mount);
            return Err(e);
        }
    };
    if net.attached {
        let _ = kiln_runner::network::set_pid(&record.id, child.pid());
    }
    let me = std::process::id() as i32;
    let state = State {
        status: Status::Running,
        pid: child.pid(),
        pid_start: process_start_time(child.pid()).unwrap_or(0),
        monitor_pid: me,
        monitor_start: process_start_time(me).unwrap_or(0),
        started_at: Some(Utc::now()),
        cgroup_dirs: child.cgroup_dirs(),
        addresses: net.addresses,
        ports: net.ports,
        ..State::default()
    };
    container.set_state(&state)?;
    kiln_runner::timing::mark("state running");
    Ok(Started {
        child,
        mount: Some(mount),
    })
}

/// Mounts the root filesystem of `container` at `rootfs`, copies volumes
/// up and makes the working directory. On error nothing stays mounted.
fn mount_root(container: &Container, rootfs: &Path) -> Result<OverlayMount> {
    let record = &container.record;
    unmount_stale(rootfs)?;
    // overlayfs wants the topmost lower first; the record keeps lowest first.
    let lowers: Vec<_> = record.lowers.iter().rev().cloned().collect();
    let upper = container.dir.join("upper");
    let work = container.dir.join("work");
    let mount = OverlayMount::mount(
        &lowers,
        Some(Writable {
            upper: &upper,
            work: &work,
            volatile: record.auto_remove,
        }),
        rootfs,
    )
    .with_context(|| format!("mounting the root filesystem of {}", record.name))?;
    kiln_runner::timing::mark("overlay mounted");
    copy_up_volumes(container, rootfs)?;
    // docker creates a missing working directory.
    if let Some(process) = record.spec.process() {
        let cwd = rootfs.join(process.cwd().strip_prefix("/").unwrap_or(process.cwd()));
        let _ = std::fs::create_dir_all(cwd);
    }
    Ok(mount)
}

/// Sets up the network of `container` and adjusts `spec` to it (see
/// [`super::net::setup`]). On error nothing stays attached.
fn set_up_network(
    container: &Container,
    spec: &mut kiln_runner::Spec,
) -> Result<super::net::NetUp> {
    let containers_dir = container.dir.parent().context("container directory")?;
    let root = containers_dir.parent().context("kiln root")?;
    let containers = super::Containers::new(containers_dir.to_path_buf());
    let t = std::time::Instant::now();
    let net = super::net::setup(container, &containers, root, spec)?;
    tracing::debug!("network set up in {:?}", t.elapsed());
    kiln_runner::timing::mark("net up");
    Ok(net)
}

/// docker's copy-up: an empty volume (named or anonymous) mounted where the
/// image has a directory gets that directory's contents first, owners and
/// modes kept.
fn copy_up_volumes(container: &Container, rootfs: &Path) -> Result<()> {
    let Some(volumes_dir) = container
        .dir
        .parent()
        .and_then(Path::parent)
        .map(|root| root.join("volumes"))
    else {
        return Ok(());
    };
    for mount in container.record.spec.mounts().iter().flatten() {
        let Some(source) = mount.source() else {
            continue;
        };
        if mount.typ().as_deref() != Some("bind") || !source.starts_with(&volumes_dir) {
            continue;
        }
        let is_empty = std::fs::read_dir(source).is_ok_and(|mut d| d.next().is_none());
        let image = super::copy::Root::open(rootfs)?;
        let target = mount.destination().to_string_lossy().into_owned();
        if container.record.volume_nocopy.contains(&target) {
            continue;
        }
        if !is_empty || image.kind(Path::new(&target), true)? != super::copy::Kind::Dir {
            continue;
        }
        let volume = super::copy::Root::open(source)?;
        super::copy::copy(
            image,
            &format!("{}/.", target.trim_end_matches('/')),
            true,
            volume,
            "/",
            super::copy::Owner::Keep,
        )
        .with_context(|| format!("copying the image's {target} into its volume"))?;
    }
    Ok(())
}

/// Waits for the program, unmounts the rootfs and records the exit.
/// Returns the exit code (128+N for signal N).
pub fn finish(container: &Container, started: Started) -> Result<u8> {
    finish_with(container, started, true)
}

/// [`finish`] for a container removed right after: its exit is not
/// written (a state still saying "running" whose program and runner are
/// gone reads as exited, see [`State::effective`]).
pub fn finish_for_removal(container: &Container, started: Started) -> Result<u8> {
    finish_with(container, started, false)
}

fn finish_with(container: &Container, mut started: Started, record_exit: bool) -> Result<u8> {
    let status = started.child.wait();
    kiln_runner::timing::mark("waited");
    let mount = started.mount.take();
    // Only bridge networks attach anything (none, host and container:
    // modes hold nothing to give back); that teardown (netlink, the
    // network's state) runs beside the unmount.
    let (unmounted, released) = std::thread::scope(|scope| {
        let teardown = || {
            let released = super::net::teardown(container);
            kiln_runner::timing::mark("net down");
            released
        };
        let network = container.record.net.is_bridge().then(|| {
            std::thread::Builder::new()
                .name("kiln-net".into())
                .spawn_scoped(scope, teardown)
        });
        let unmounted = mount.map(|m| m.unmount());
        kiln_runner::timing::mark("unmounted");
        let released = match network {
            Some(Ok(handle)) => handle.join().expect("the network thread does not panic"),
            Some(Err(_)) => teardown(),
            None => Ok(()),
        };
        (unmounted, released)
    });
    let code = match &status {
        Ok(s) => s.code(),
        Err(_) => 125,
    };
    if record_exit {
        let mut state = container.state().unwrap_or_default();
        state.status = Status::Exited;
        state.finished_at = Some(Utc::now());
        state.oom_killed = started.child.oom_killed();
        state.exit_code = Some(code as i32);
        state.ports.clear();
        state.addresses.clear();
        container.set_state(&state)?;
        kiln_runner::timing::mark("state exited");
    }
    released?;
    status.with_context(|| format!("waiting for container {}", container.record.name))?;
    if let Some(result) = unmounted {
        result.context("unmounting the container's root filesystem")?;
    }
    Ok(code)
}
