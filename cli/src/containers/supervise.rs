//! Starting a container's program and seeing it to its end: overlay rootfs,
//! runner spawn, state updates, logs. Used by the foreground `kiln run` and
//! by the per-container monitor process of detached containers.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::Utc;
use kiln_runner::cgroup::PreparedCgroup;
use kiln_runner::cleanup::Janitor;
use kiln_runner::overlay::{OverlayMount, Writable};
use kiln_runner::WhileStarting;
use kiln_runner::{Child, Stdio};

use super::{process_start_time, Container, State, Status};

/// A running container program with its mounted root filesystem.
#[derive(Debug)]
pub struct Started {
    pub child: Child,
    mount: Option<OverlayMount>,
    /// Forwards the caller's signals to the program; stopped as soon as
    /// the program is reaped (see [`finish`]).
    pub forwarder: Option<kiln_runner::SignalForwarder>,
    /// Removes the container's directory once it is handed over (see
    /// [`super::Containers::remove_soon`]); started while the init set up.
    pub janitor: Option<Janitor>,
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
pub type PendingNetns =
    std::thread::JoinHandle<kiln_runner::network::Result<kiln_runner::network::NewNamespace>>;

/// Whether a container of network mode `mode` gets a network namespace of
/// its own (none and the bridge networks; not host or container:).
fn gets_own_namespace(mode: &str) -> bool {
    mode != "host" && !mode.starts_with("container:")
}

/// Starts making the network namespace of a container of network mode
/// `mode`, when it gets one of its own: on another thread, while the rest
/// is set up.
pub fn own_network_namespace(mode: &str) -> Option<PendingNetns> {
    gets_own_namespace(mode)
        .then(kiln_runner::network::spawn_namespace)
        .and_then(Result::ok)
}

/// Mounts the rootfs, starts the program and records it as running. On
/// failure the state says exited (with the runner's exit code) and nothing
/// stays mounted. `stdio` is the program's stdin, stdout and stderr;
/// `netns` is the container's network namespace when made beforehand by
/// [`own_network_namespace`]. With `janitor`, a [`Janitor`] for the
/// container's removal is started while the init sets up, when it can be.
pub fn start(
    container: &Container,
    stdio: [Stdio; 3],
    netns: Option<PendingNetns>,
    janitor: bool,
) -> Result<Started> {
    let result = start_inner(container, stdio, netns, janitor);
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
    [stdin, stdout, stderr]: [Stdio; 3],
    netns: Option<PendingNetns>,
    janitor: bool,
) -> Result<Started> {
    let record = &container.record;
    let rootfs = container.rootfs();
    let starting = || format!("starting container {}", record.name);
    let mut spec = record.spec.clone();
    let attach = prepare_network(container, &mut spec)?;
    let pending = match netns {
        Some(pending) => Some(pending),
        None if gets_own_namespace(&record.net.mode) => {
            Some(kiln_runner::network::spawn_namespace().context("starting a thread")?)
        }
        None => None,
    };
    // The cgroup is made on another thread while the root filesystem is
    // mounted on this one.
    let relative = std::path::PathBuf::from(format!("kiln/{}", record.id));
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
    let (mounted, prepared) = std::thread::scope(|scope| {
        let cgroup = std::thread::Builder::new()
            .name("kiln-cgroup".into())
            .spawn_scoped(scope, || {
                let made = PreparedCgroup::create(&relative, resources.as_ref());
                kiln_runner::timing::mark("cgroup prepared");
                made
            });
        let mounted = mount_root(container, &rootfs);
        let prepared = match cgroup {
            Ok(handle) => handle
                .join()
                .expect("the cgroup thread does not panic")
                .map_err(anyhow::Error::new),
            Err(e) => Err(anyhow::Error::new(e).context("starting a thread")),
        };
        (mounted, prepared)
    });
    // Dropped on error: the mount is unmounted, the cgroup removed.
    let (mount, prepared) = (mounted?, prepared.with_context(starting)?);
    let made = match pending {
        Some(p) => Some(
            p.join()
                .expect("the netns thread does not panic")
                .map_err(anyhow::Error::new)
                .with_context(starting)?,
        ),
        None => None,
    };
    let mut builder = kiln_runner::Container::builder(spec, &rootfs)
        .prepared_cgroup(prepared)
        .init(record.init)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    let mut started_janitor = None;
    let meanwhile =
        janitor.then(|| Box::new(|| started_janitor = Janitor::start()) as Box<dyn FnOnce() + '_>);
    let (child, net) = match (attach, made) {
        (Some(attach), Some(made)) => {
            // A bridge network is attached while the container starts,
            // into the namespace its init joins; its program waits for it.
            builder = builder.network_namespace(made.try_clone_file()?);
            let mut net = None;
            let spawned = builder.spawn_while(WhileStarting {
                gate: Some(Box::new(|| {
                    let up = attach.run(container, Some(made));
                    kiln_runner::timing::mark("net up");
                    let ok = up.is_ok();
                    net = Some(up);
                    ok
                })),
                meanwhile,
            });
            let result = match (spawned, net) {
                (Ok(child), Some(Ok(net))) => Ok((child, net)),
                (_, Some(Err(e))) => Err(e),
                (Err(e), _) => Err(anyhow::Error::new(e)).with_context(starting),
                (Ok(_), None) => unreachable!("a started container passed its gate"),
            };
            match result {
                Ok(started) => started,
                Err(e) => {
                    let _ = super::net::teardown(container);
                    return Err(e);
                }
            }
        }
        (Some(_), None) => unreachable!("bridge networks get a namespace of their own"),
        (None, made) => {
            if let Some(made) = made {
                builder = builder.network_namespace(made.into_file());
            }
            let hooks = WhileStarting {
                gate: None,
                meanwhile,
            };
            (
                builder.spawn_while(hooks).with_context(starting)?,
                super::net::NetUp::default(),
            )
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
        forwarder: None,
        janitor: started_janitor,
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

/// Writes the network's /etc files of `container` and adjusts `spec` to
/// them (see [`super::net::prepare`]); returns the attachments to make.
fn prepare_network(
    container: &Container,
    spec: &mut kiln_runner::Spec,
) -> Result<Option<super::net::Attach>> {
    let containers_dir = container.dir.parent().context("container directory")?;
    let root = containers_dir.parent().context("kiln root")?;
    let containers = super::Containers::new(containers_dir.to_path_buf());
    super::net::prepare(container, &containers, root, spec)
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
    // Its thread ends while the rest is cleaned up; dropping `started`
    // then finds it gone.
    if let Some(forwarder) = &started.forwarder {
        forwarder.stop();
    }
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
