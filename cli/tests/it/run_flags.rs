//! `kiln run`/`create` flags beyond the basics, as root, each checked from
//! inside a real busybox container: `--mount`, labels, the stop signal and
//! timeout, ulimits and the /dev/shm size. Bad values: one clear line and
//! no container left.
//!
//! Needs: root, overlayfs, cgroups, Debian's busybox-static.

use crate::containers::{root, text, Root};

/// Runs `kiln` expecting failure: returns stderr, checks nothing was made.
fn refused(r: &Root, args: &[&str]) -> String {
    let before = r.ids();
    let out = r.run(args);
    assert_ne!(out.status.code(), Some(0), "{args:?} succeeded");
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert_eq!(r.ids(), before, "{args:?} left a container");
    err
}

#[test]
fn mount_bind_volume_tmpfs() {
    let r = root!();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("f"), "from-host\n").unwrap();
    let dir = host.path().to_str().unwrap();

    // A read-only bind: readable, not writable.
    let out = r.ok(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,source={dir},target=/data,readonly"),
        "busybox",
        "sh",
        "-c",
        "cat /data/f; touch /data/x 2>/dev/null && echo writable || echo read-only",
    ]);
    assert_eq!(out, "from-host\nread-only\n");
    assert!(!host.path().join("x").exists());
    // A CSV-quoted field keeps the comma in a path, as docker reads it.
    let comma = host.path().join("a,b");
    std::fs::create_dir(&comma).unwrap();
    std::fs::write(comma.join("g"), "comma\n").unwrap();
    let out = r.ok(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,\"source={}\",target=/c", comma.display()),
        "busybox",
        "cat",
        "/c/g",
    ]);
    assert_eq!(out, "comma\n");
    let err = refused(
        &r,
        &["run", "--rm", "--mount", "\"type=bind", "busybox", "true"],
    );
    assert!(err.contains("unterminated quote"), "{err}");
    // ro=false and the dst/src spellings: writable, reaches the host.
    r.ok(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,src={dir},dst=/data,ro=false,bind-propagation=rslave"),
        "busybox",
        "sh",
        "-c",
        "echo made > /data/new",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("new")).unwrap(),
        "made\n"
    );
    // bind-propagation reaches the spec.
    r.ok(&[
        "create",
        "--name",
        "prop",
        "--mount",
        &format!("type=bind,src={dir},destination=/p,bind-propagation=rshared"),
        "busybox",
        "true",
    ]);
    let mounts = r.inspect("prop")["Mounts"].clone();
    let p = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/p")
        .expect("the /p mount");
    assert!(p["options"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o == "rshared"));

    // A named volume (the default type) outlives the container.
    r.ok(&[
        "run",
        "--rm",
        "--mount",
        "source=mvol,target=/v",
        "busybox",
        "sh",
        "-c",
        "echo kept > /v/k",
    ]);
    assert!(r.ok(&["volume", "ls", "-q"]).lines().any(|l| l == "mvol"));
    let out = r.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=mvol,dst=/w,volume-nocopy,readonly",
        "busybox",
        "sh",
        "-c",
        "cat /w/k; touch /w/y 2>/dev/null && echo writable || echo read-only",
    ]);
    assert_eq!(out, "kept\nread-only\n");

    // volume-nocopy: the image's /usr/sbin is not copied into the new volume.
    let out = r.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=nc1,dst=/usr/sbin,volume-nocopy",
        "--mount",
        "type=volume,src=nc2,dst=/usr/bin",
        "busybox",
        "sh",
        "-c",
        "ls /usr/sbin | wc -l; ls /usr/bin | wc -l",
    ]);
    let counts: Vec<u32> = out.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(counts[0], 0, "{out}");
    assert!(counts[1] > 0, "{out}");
    let volumes = r.path().join("volumes");
    assert_eq!(
        std::fs::read_dir(volumes.join("nc1/_data"))
            .unwrap()
            .count(),
        0
    );
    assert!(
        std::fs::read_dir(volumes.join("nc2/_data"))
            .unwrap()
            .count()
            > 0
    );

    // tmpfs with size and mode.
    let out = r.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,destination=/t,tmpfs-size=1m,tmpfs-mode=1770",
        "busybox",
        "sh",
        "-c",
        "stat -c %a /t; grep ' /t ' /proc/mounts",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1770"));
    let line = lines.next().unwrap();
    assert!(line.starts_with("tmpfs /t tmpfs "), "{line}");
    assert!(line.contains("size=1024k"), "{line}");
    assert!(line.contains("noexec"), "{line}");

    // --tmpfs PATH:OPTIONS, as docker's.
    let out = r.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/x:size=2m,mode=700,exec,uid=33",
        "--tmpfs",
        "/y:ro",
        "busybox",
        "sh",
        "-c",
        "stat -c '%a %u' /x; grep -E ' /(x|y) ' /proc/mounts",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("700 33"));
    let x = lines.next().unwrap();
    assert!(
        x.contains("size=2048k") && !x.contains("noexec") && x.contains("nosuid"),
        "{x}"
    );
    let y = lines.next().unwrap();
    assert!(y.contains(" ro,") && y.contains("noexec"), "{y}");
    for bad in [
        "/t:size=big",
        "/t:colour=red",
        "/t:mode=999",
        "t",
        "/t:uid=me",
    ] {
        let err = refused(&r, &["run", "--tmpfs", bad, "busybox", "true"]);
        assert!(
            err.contains("invalid tmpfs") || err.contains("invalid size"),
            "{bad}: {err}"
        );
    }

    // Bad values: one line, nothing made.
    let err = refused(
        &r,
        &[
            "run",
            "--mount",
            "type=bind,src=/no/such/dir,dst=/d",
            "busybox",
            "true",
        ],
    );
    assert!(
        err.contains("bind source path does not exist: /no/such/dir"),
        "{err}"
    );
    let err = refused(&r, &["create", "--mount", "type=bind,src=/tmp", "busybox"]);
    assert!(err.contains("target is required"), "{err}");
    let err = refused(
        &r,
        &[
            "run",
            "--mount",
            "type=tmpfs,src=x,dst=/t",
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("source is not supported for tmpfs"), "{err}");
    let err = refused(
        &r,
        &["run", "--mount", "type=nfs,dst=/t", "busybox", "true"],
    );
    assert!(err.contains("unknown type"), "{err}");
    let err = refused(
        &r,
        &[
            "run",
            "--mount",
            "type=tmpfs,dst=/t,colour=red",
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("unexpected key 'colour'"), "{err}");
    let err = refused(
        &r,
        &[
            "run",
            "--mount",
            "type=tmpfs,dst=/t,tmpfs-size=lots",
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("invalid size"), "{err}");
    let err = refused(
        &r,
        &[
            "run",
            "--mount",
            &format!("type=bind,src={dir},dst=/t,tmpfs-mode=700"),
            "busybox",
            "true",
        ],
    );
    assert!(
        err.contains("tmpfs-mode cannot be used with type bind"),
        "{err}"
    );
    let err = refused(
        &r,
        &[
            "run",
            "--mount",
            "type=tmpfs,dst=/t",
            "--tmpfs",
            "/t",
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("duplicate mount point"), "{err}");
    r.ok(&["rm", "prop"]);
}

#[test]
fn labels_inspect_and_ps_filter() {
    let r = root!();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "# team labels\n\ntier=back\nowner=ops\n").unwrap();
    r.ok(&[
        "create",
        "--name",
        "lab",
        "--label-file",
        file.path().to_str().unwrap(),
        "-l",
        "owner=dev",
        "--label",
        "flag",
        "busybox",
        "true",
    ]);
    r.ok(&[
        "create",
        "--name",
        "other",
        "-l",
        "tier=front",
        "busybox",
        "true",
    ]);
    let labels = r.inspect("lab")["Config"]["Labels"].clone();
    assert_eq!(labels["tier"], "back");
    assert_eq!(labels["owner"], "dev", "--label wins over --label-file");
    assert_eq!(labels["flag"], "");
    let names = |filters: &[&str]| {
        let mut args = vec!["ps", "-a", "--format", "json"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        let mut out: Vec<String> = r
            .ok(&args)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["Names"].as_str().unwrap().to_string()
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(names(&["label=tier"]), ["lab", "other"]);
    assert_eq!(names(&["label=tier=back"]), ["lab"]);
    assert_eq!(names(&["label=tier=front"]), ["other"]);
    assert_eq!(names(&["label=tier", "label=flag"]), ["lab"]);
    assert!(names(&["label=nosuch"]).is_empty());
    let err = refused(&r, &["create", "-l", "=x", "busybox", "true"]);
    assert!(err.contains("invalid label"), "{err}");
    let err = refused(
        &r,
        &[
            "create",
            "--label-file",
            "/no/such/labels",
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("label file /no/such/labels"), "{err}");
    r.ok(&["rm", "lab", "other"]);
}

/// Waits until the logs of container `name` contain `marker`.
fn wait_for_log(r: &Root, name: &str, marker: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !r.ok(&["logs", name]).contains(marker) {
        assert!(
            std::time::Instant::now() < deadline,
            "{marker:?} never logged"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn stop_signal_and_stop_timeout() {
    let r = root!();
    // --stop-signal: stop sends USR1 first.
    r.ok(&[
        "run",
        "-d",
        "--name",
        "sig",
        "--stop-signal",
        "USR1",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got-usr1; exit 7' USR1; echo ready; while :; do sleep 0.1; done",
    ]);
    wait_for_log(&r, "sig", "ready");
    assert_eq!(r.inspect("sig")["Config"]["StopSignal"], "USR1");
    r.ok(&["stop", "sig"]);
    assert_eq!(r.inspect("sig")["State"]["ExitCode"], 7);
    assert!(r.ok(&["logs", "sig"]).contains("got-usr1"));

    // --stop-timeout: the program needs 3 s to exit after SIGTERM; with a
    // 1 s timeout stop kills it, `stop -t 60` lets it finish.
    let slow = "trap 'sleep 3; exit 5' TERM; echo ready; while :; do sleep 0.1; done";
    r.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--stop-timeout",
        "1",
        "busybox",
        "sh",
        "-c",
        slow,
    ]);
    wait_for_log(&r, "slow", "ready");
    assert_eq!(r.inspect("slow")["Config"]["StopTimeout"], 1);
    r.ok(&["stop", "slow"]);
    assert_eq!(r.inspect("slow")["State"]["ExitCode"], 137);
    r.ok(&["start", "slow"]);
    wait_for_log(&r, "slow", "ready\nready");
    r.ok(&["stop", "-t", "60", "slow"]);
    assert_eq!(r.inspect("slow")["State"]["ExitCode"], 5);
    // restart uses it too.
    r.ok(&["start", "slow"]);
    r.ok(&["restart", "slow"]);
    assert_eq!(r.inspect("slow")["State"]["Running"], true);
    r.ok(&["stop", "slow"]);
    assert_eq!(r.inspect("slow")["State"]["ExitCode"], 137);

    let err = refused(&r, &["run", "--stop-signal", "SIGNOPE", "busybox", "true"]);
    assert!(err.contains("invalid --stop-signal"), "{err}");
    let err = refused(&r, &["run", "--stop-timeout", "-5", "busybox", "true"]);
    assert!(err.contains("invalid --stop-timeout"), "{err}");
    r.ok(&["rm", "sig", "slow"]);
}

#[test]
fn ulimits_and_shm_size() {
    let r = root!();
    let out = r.ok(&[
        "run",
        "--rm",
        "--ulimit",
        "nofile=100:200",
        "--ulimit",
        "core=-1",
        "--ulimit",
        "nproc=50",
        "--shm-size",
        "32m",
        "busybox",
        "sh",
        "-c",
        "cat /proc/self/limits; grep ' /dev/shm ' /proc/mounts",
    ]);
    let limit = |name: &str| -> Vec<String> {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"));
        line[name.len()..]
            .split_whitespace()
            .take(2)
            .map(String::from)
            .collect()
    };
    assert_eq!(limit("Max open files"), ["100", "200"]);
    assert_eq!(limit("Max core file size"), ["unlimited", "unlimited"]);
    assert_eq!(limit("Max processes"), ["50", "50"]);
    let shm = out.lines().find(|l| l.contains(" /dev/shm ")).unwrap();
    assert!(shm.contains("size=32768k"), "{shm}");

    for (args, message) in [
        (&["--ulimit", "bogus=1"][..], "unknown name"),
        (&["--ulimit", "nofile=200:100"][..], "soft limit is above"),
        (&["--ulimit", "nofile"][..], "NAME=SOFT[:HARD]"),
        (&["--ulimit", "nofile=x"][..], "is not a limit"),
        (&["--shm-size", "0"][..], "invalid --shm-size"),
        (&["--shm-size", "lots"][..], "invalid --shm-size"),
    ] {
        let mut all = vec!["run"];
        all.extend(args);
        all.extend(["busybox", "true"]);
        let err = refused(&r, &all);
        assert!(err.contains(message), "{args:?}: {err}");
    }
}

/// The `Key:` line of /proc/self/status in a container run with `flags`.
fn status_field(r: &Root, flags: &[&str], key: &str) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend(flags);
    args.extend(["busybox", "grep", key, "/proc/self/status"]);
    let out = r.ok(&args);
    out.trim_end()
        .strip_prefix(key)
        .unwrap_or_else(|| panic!("no {key} in {out}"))
        .trim()
        .to_string()
}

#[test]
fn security_opts() {
    let r = root!();
    // kiln's default spec sets no_new_privs (docker's leaves it off).
    assert_eq!(status_field(&r, &[], "NoNewPrivs:"), "1");
    assert_eq!(
        status_field(&r, &["--security-opt", "no-new-privileges"], "NoNewPrivs:"),
        "1"
    );
    assert_eq!(
        status_field(
            &r,
            &["--security-opt", "no-new-privileges:true"],
            "NoNewPrivs:"
        ),
        "1"
    );
    assert_eq!(
        status_field(
            &r,
            &["--security-opt", "no-new-privileges=false"],
            "NoNewPrivs:"
        ),
        "0"
    );
    assert_eq!(status_field(&r, &[], "Seccomp:"), "2");
    assert_eq!(
        status_field(&r, &["--security-opt", "seccomp=unconfined"], "Seccomp:"),
        "0"
    );

    // A docker-format profile: mkdir fails with EPERM; chmod fails only
    // for a container holding CAP_SYS_ADMIN (includes.caps).
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    std::fs::write(
        &profile,
        r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "archMap": [
    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
  ],
  "syscalls": [
    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
    {"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO",
     "includes": {"caps": ["CAP_SYS_ADMIN"]}}
  ]
}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let script = "mkdir /made && echo mkdir-ok; touch /f; chmod 600 /f && echo chmod-ok; grep Seccomp: /proc/self/status";
    let out = r.ok(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(!out.contains("mkdir-ok"), "{out}");
    assert!(out.contains("chmod-ok"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    let out = r.ok(&[
        "run",
        "--rm",
        "--cap-add",
        "SYS_ADMIN",
        "--security-opt",
        &opt,
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(!out.contains("chmod-ok"), "{out}");
    // Without the profile both work.
    let out = r.ok(&["run", "--rm", "busybox", "sh", "-c", script]);
    assert!(
        out.contains("mkdir-ok") && out.contains("chmod-ok"),
        "{out}"
    );

    // No LSM on this host: apparmor and label are accepted with a warning.
    let lsm = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    if !lsm.contains("apparmor") && !lsm.contains("selinux") {
        for opt in ["apparmor=docker-default", "label=disable"] {
            let out = r.run(&["run", "--rm", "--security-opt", opt, "busybox", "true"]);
            assert!(out.status.success());
            let err = text(&out.stderr);
            assert!(err.contains("warning") && err.contains("ignored"), "{err}");
        }
    }

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction": "SCMP_ACT_SOMETIMES"}"#).unwrap();
    let notjson = dir.path().join("not.json");
    std::fs::write(&notjson, "defaultAction: allow").unwrap();
    for (opt, message) in [
        ("bogus".to_string(), "invalid --security-opt"),
        ("no-new-privileges=maybe".into(), "true or false"),
        ("seccomp=/no/such.json".into(), "reading /no/such.json"),
        (
            format!("seccomp={}", bad.display()),
            "seccomp profile is not valid",
        ),
        (format!("seccomp={}", notjson.display()), "is not JSON"),
        ("label=colour:red".into(), "invalid --security-opt"),
    ] {
        let err = refused(&r, &["run", "--security-opt", &opt, "busybox", "true"]);
        assert!(err.contains(message), "{opt}: {err}");
    }
}

#[test]
fn sysctls_and_group_add() {
    let r = root!();
    let out = r.ok(&[
        "run",
        "--rm",
        "--sysctl",
        "net.ipv4.ip_forward=1",
        "--sysctl",
        "kernel.shmmax=123456789",
        "busybox",
        "cat",
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/kernel/shmmax",
    ]);
    assert_eq!(out, "1\n123456789\n");
    let out = r.ok(&[
        "run",
        "--rm",
        "--group-add",
        "1234",
        "--group-add",
        "nogroup",
        "busybox",
        "id",
        "-G",
    ]);
    let groups: Vec<&str> = out.split_whitespace().collect();
    assert!(
        groups.contains(&"1234") && groups.contains(&"65534"),
        "{out}"
    );

    let err = refused(
        &r,
        &["run", "--sysctl", "vm.swappiness=1", "busybox", "true"],
    );
    assert!(err.contains("not allowed"), "{err}");
    let err = refused(
        &r,
        &[
            "run",
            "--network",
            "host",
            "--sysctl",
            "net.ipv4.ip_forward=1",
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("host's network namespace"), "{err}");
    let err = refused(&r, &["run", "--sysctl", "kernel.sem", "busybox", "true"]);
    assert!(err.contains("KEY=VALUE"), "{err}");
    let err = refused(&r, &["run", "--group-add", "nosuch", "busybox", "true"]);
    assert!(err.contains("no such group"), "{err}");
}

#[test]
fn pull_platform_expose() {
    let r = root!();
    let host = match std::env::consts::ARCH {
        "x86_64" => "linux/amd64",
        "aarch64" => "linux/arm64",
        other => panic!("no platform name for {other}"),
    };
    let out = r.ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--platform",
        host,
        "busybox",
        "echo",
        "ran",
    ]);
    assert_eq!(out, "ran\n");
    assert_eq!(
        r.ok(&["run", "--rm", "--pull", "missing", "busybox", "echo", "ran"]),
        "ran\n"
    );
    let err = refused(&r, &["run", "--pull", "never", "nosuch:1", "true"]);
    assert!(err.contains("not in the store"), "{err}");
    let err = refused(&r, &["run", "--pull", "sometimes", "busybox", "true"]);
    assert!(err.contains("invalid --pull"), "{err}");
    let err = refused(
        &r,
        &["run", "--platform", "linux/riscv64", "busybox", "true"],
    );
    assert!(err.contains("only this host's platform"), "{err}");
    let err = refused(&r, &["run", "--platform", "linux", "busybox", "true"]);
    assert!(err.contains("invalid --platform"), "{err}");

    // --expose adds ports that -P publishes.
    r.ok(&[
        "run",
        "-d",
        "-P",
        "--name",
        "ex",
        "--expose",
        "7000",
        "--expose",
        "7100-7101/udp",
        "busybox",
        "sleep",
        "600",
    ]);
    let ports = r.inspect("ex")["NetworkSettings"]["Ports"].clone();
    let mut published: Vec<String> = ports
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ContainerPort"].as_str().unwrap().to_string())
        .collect();
    published.sort();
    assert_eq!(published, ["7000/tcp", "7100/udp", "7101/udp"]);
    assert!(ports.as_array().unwrap().iter().all(|p| p["HostPort"]
        .as_str()
        .unwrap()
        .parse::<u16>()
        .unwrap()
        > 0));
    r.ok(&["rm", "-f", "ex"]);
    for bad in ["0", "80/icmp", "90-80", "http"] {
        let err = refused(&r, &["run", "--expose", bad, "busybox", "true"]);
        assert!(err.contains("invalid --expose"), "{bad}: {err}");
    }
}

/// Waits until the monitor of container `name` has ended; returns its inspect.
fn wait_monitor_gone(r: &Root, name: &str) -> serde_json::Value {
    let id = r.inspect(name)["Id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let pid = r.state(&id)["monitor_pid"].as_i64().unwrap();
        if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return r.inspect(name);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the monitor of {name} never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn restart_policies() {
    let r = root!();
    // on-failure:2 — two restarts, then it stays exited.
    r.ok(&[
        "run",
        "-d",
        "--name",
        "fail",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 3",
    ]);
    let v = wait_monitor_gone(&r, "fail");
    assert_eq!(v["RestartCount"], 2);
    assert_eq!(v["State"]["Running"], false);
    assert_eq!(v["State"]["ExitCode"], 3);
    assert_eq!(v["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(v["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 2);
    assert_eq!(r.ok(&["logs", "fail"]).matches("run\n").count(), 3);
    // on-failure does not restart a success.
    r.ok(&[
        "run",
        "-d",
        "--name",
        "fine",
        "--restart",
        "on-failure",
        "busybox",
        "true",
    ]);
    assert_eq!(wait_monitor_gone(&r, "fine")["RestartCount"], 0);

    // always: restarts after a success too, until stop.
    r.ok(&[
        "run",
        "-d",
        "--name",
        "loop",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "echo tick; sleep 0.3",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while r.inspect("loop")["RestartCount"].as_u64().unwrap() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "never restarted twice"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    r.ok(&["stop", "loop"]);
    let v = wait_monitor_gone(&r, "loop");
    assert_eq!(v["State"]["Running"], false);
    let count = v["RestartCount"].as_u64().unwrap();
    assert!(count >= 2);
    assert!(r.ok(&["logs", "loop"]).matches("tick\n").count() as u64 > count);
    // kill (SIGKILL) turns the policy off until the next start, as in docker.
    r.ok(&[
        "run",
        "-d",
        "--name",
        "killed",
        "--restart",
        "always",
        "busybox",
        "sleep",
        "600",
    ]);
    r.ok(&["kill", "killed"]);
    let v = wait_monitor_gone(&r, "killed");
    assert_eq!(v["State"]["Running"], false);
    assert_eq!(v["RestartCount"], 0);
    assert_eq!(v["State"]["ExitCode"], 137);
    // unless-stopped, ended by rm -f.
    r.ok(&[
        "run",
        "-d",
        "--name",
        "us",
        "--restart",
        "unless-stopped",
        "busybox",
        "sh",
        "-c",
        "sleep 0.2",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while r.inspect("us")["RestartCount"].as_u64().unwrap() < 1 {
        assert!(std::time::Instant::now() < deadline, "never restarted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    r.ok(&["rm", "-f", "us"]);
    assert!(!r.ok(&["ps", "-a", "--format", "json"]).contains("\"us\""));

    let err = refused(
        &r,
        &[
            "run",
            "-d",
            "--restart",
            "always",
            "--rm",
            "busybox",
            "true",
        ],
    );
    assert!(err.contains("conflicting options"), "{err}");
    let err = refused(
        &r,
        &["run", "-d", "--restart", "sometimes", "busybox", "true"],
    );
    assert!(err.contains("invalid --restart"), "{err}");
    let err = refused(
        &r,
        &["run", "-d", "--restart", "on-failure:x", "busybox", "true"],
    );
    assert!(err.contains("invalid --restart"), "{err}");
    let err = refused(
        &r,
        &["run", "-d", "--restart", "always:3", "busybox", "true"],
    );
    assert!(err.contains("only on-failure"), "{err}");
    // Between runs, during the backoff: "Restarting (code) ... ago".
    let id = r.ok(&[
        "run",
        "-d",
        "--name",
        "rs",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "exit 3",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v = r.inspect("rs");
        if v["State"]["Restarting"] == true {
            assert_eq!(v["State"]["Status"], "restarting", "{v}");
            assert_eq!(v["State"]["Running"], false, "{v}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never restarting: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The backoff has grown past a second by the fourth restart.
    while r.inspect("rs")["RestartCount"].as_u64().unwrap() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "never restarted 4 times"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut seen = false;
    while !seen && std::time::Instant::now() < deadline {
        let table = r.ok(&["ps", "--filter", "status=restarting"]);
        seen = table.contains("Restarting (3)") && table.contains(&id.trim()[..12]);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(seen, "ps never showed it restarting");
    r.ok(&["rm", "-f", "rs"]);

    // Attached, as docker's client: the first run's output and exit code,
    // then the monitor keeps restarting it.
    let out = r.run(&[
        "run",
        "--name",
        "fg",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo attached; exit 5",
    ]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "attached\n");
    let v = wait_monitor_gone(&r, "fg");
    assert_eq!(v["RestartCount"], 2);
    assert_eq!(r.ok(&["logs", "fg"]).matches("attached\n").count(), 3);
    r.ok(&["rm", "fail", "fine", "loop", "killed", "fg"]);
}

#[test]
fn records_keep_capability_sets_in_order() {
    let r = root!();
    let id = r.ok(&[
        "create",
        "--cap-add",
        "net_admin",
        "--cap-drop",
        "chown",
        "busybox",
        "true",
    ]);
    let config = std::fs::read(
        r.path()
            .join("containers")
            .join(id.trim())
            .join("config.json"),
    )
    .expect("the container's record");
    let record: serde_json::Value = serde_json::from_slice(&config).unwrap();
    let caps = &record["spec"]["process"]["capabilities"];
    for set in ["bounding", "effective", "permitted"] {
        let list: Vec<&str> = caps[set]
            .as_array()
            .unwrap_or_else(|| panic!("no {set} set: {caps}"))
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let mut sorted = list.clone();
        sorted.sort_unstable();
        assert_eq!(list, sorted, "{set}");
        assert!(list.contains(&"CAP_NET_ADMIN"), "{set}: {list:?}");
        assert!(!list.contains(&"CAP_CHOWN"), "{set}: {list:?}");
    }
    r.ok(&["rm", id.trim()]);
}
