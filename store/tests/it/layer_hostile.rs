//! Hostile layers (see testdata/hostile/README.md): each one is generated
//! here, applied into `sandbox/a/b/dest`, and must either be refused with
//! `Error::UnsafeEntry` naming the bad member, or be applied with every
//! write kept inside `dest`. Nothing else in the sandbox may change.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_store::{layer, Error};

use crate::layer_support::{snapshot, RawTar};

/// What a hostile layer must lead to.
#[derive(Debug)]
enum Expect {
    /// `Error::UnsafeEntry` for this member name.
    Refused(&'static str),
    /// Any error (the kernel refuses, e.g. a name too long), nothing escapes.
    Failed,
    /// Applied; nothing escapes.
    Contained,
}

struct Case {
    name: &'static str,
    tar: Vec<u8>,
    expect: Expect,
}

/// The sandbox: `outside/` holds a file a layer might try to reach.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dest: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let dest = root.join("a/b/dest");
        let outside = root.join("outside");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"secret").unwrap();
        Sandbox {
            _tmp: tmp,
            root,
            dest,
            outside,
        }
    }

    /// Everything in the sandbox except `dest`'s own contents.
    fn outside_dest(&self) -> Vec<Vec<u8>> {
        let prefix = b"a/b/dest";
        snapshot(&self.root)
            .into_iter()
            .filter(|(path, _)| !path.starts_with(prefix))
            .map(|(path, what)| [path, b" ".to_vec(), what.into_bytes()].concat())
            .collect()
    }
}

/// The hostile layers. `outside` is the absolute path of the sandbox's
/// `outside/` directory; `dest` sits three levels below the sandbox root.
fn cases(outside: &Path) -> Vec<Case> {
    let out = outside.to_str().unwrap();
    let huge = "d/".repeat(2100) + "f"; // 4201 bytes: beyond PATH_MAX
    let long_component = "x".repeat(300); // beyond NAME_MAX (255)
    vec![
        Case {
            name: "dotdot",
            tar: RawTar::new().file("../escape", b"x").finish(),
            expect: Expect::Refused("../escape"),
        },
        Case {
            name: "dotdot-nested",
            tar: RawTar::new()
                .dir("a/")
                .file("a/../../../escape", b"x")
                .finish(),
            expect: Expect::Refused("a/../../../escape"),
        },
        Case {
            name: "absolute",
            tar: RawTar::new()
                .file(&format!("{out}/absolute"), b"x")
                .finish(),
            expect: Expect::Refused(leak(format!("{out}/absolute"))),
        },
        Case {
            name: "symlink-then-write-through",
            tar: RawTar::new()
                .symlink("link", out)
                .file("link/secret", b"overwritten")
                .finish(),
            expect: Expect::Refused("link/secret"),
        },
        Case {
            name: "symlink-relative-then-write-through",
            tar: RawTar::new()
                .symlink("up", "../../..")
                .file("up/outside/new", b"x")
                .finish(),
            expect: Expect::Refused("up/outside/new"),
        },
        Case {
            name: "symlink-dir-chain",
            tar: RawTar::new()
                .dir("d/")
                .symlink("d/one", "two")
                .symlink("d/two", "../../../../outside")
                .file("d/one/secret", b"overwritten")
                .finish(),
            expect: Expect::Refused("d/one/secret"),
        },
        Case {
            name: "dir-replaced-by-symlink",
            tar: RawTar::new()
                .dir("d/")
                .file("d/ok", b"fine")
                .symlink("d", out)
                .file("d/secret", b"overwritten")
                .finish(),
            expect: Expect::Refused("d/secret"),
        },
        Case {
            name: "symlink-replaced-by-file",
            tar: RawTar::new()
                .symlink("f", &format!("{out}/secret"))
                .file("f", b"mine")
                .finish(),
            expect: Expect::Contained,
        },
        Case {
            name: "hardlink-outside-relative",
            tar: RawTar::new()
                .hardlink("h", "../../../outside/secret")
                .finish(),
            expect: Expect::Refused("h"),
        },
        Case {
            name: "hardlink-outside-absolute",
            tar: RawTar::new()
                .hardlink("h", &format!("{out}/secret"))
                .finish(),
            expect: Expect::Refused("h"),
        },
        Case {
            name: "hardlink-through-symlink",
            tar: RawTar::new()
                .symlink("s", out)
                .hardlink("h", "s/secret")
                .finish(),
            expect: Expect::Refused("h"),
        },
        Case {
            // A hardlink to a symlink is a second name of the symlink;
            // writing to that name replaces it and never follows it.
            name: "hardlink-to-symlink-then-write",
            tar: RawTar::new()
                .symlink("s", &format!("{out}/secret"))
                .hardlink("h", "s")
                .file("h", b"mine")
                .finish(),
            expect: Expect::Contained,
        },
        Case {
            name: "whiteout-dotdot",
            tar: RawTar::new().file("a/../../.wh.secret", b"").finish(),
            expect: Expect::Refused("a/../../.wh.secret"),
        },
        Case {
            name: "whiteout-of-parent",
            tar: RawTar::new().dir("a/").file("a/.wh...", b"").finish(),
            expect: Expect::Refused("a/.wh..."),
        },
        Case {
            name: "whiteout-through-symlink",
            tar: RawTar::new()
                .symlink("s", out)
                .file("s/.wh.secret", b"")
                .finish(),
            expect: Expect::Refused("s/.wh.secret"),
        },
        Case {
            name: "opaque-through-symlink",
            tar: RawTar::new()
                .symlink("s", out)
                .file("s/.wh..wh..opq", b"")
                .finish(),
            expect: Expect::Refused("s/.wh..wh..opq"),
        },
        Case {
            name: "device-outside",
            tar: RawTar::new().char_device("../../../outside/null").finish(),
            expect: Expect::Refused("../../../outside/null"),
        },
        Case {
            name: "fifo-through-symlink",
            tar: RawTar::new().symlink("s", out).fifo("s/fifo").finish(),
            expect: Expect::Refused("s/fifo"),
        },
        Case {
            name: "huge-path",
            tar: RawTar::new().file(&huge, b"x").finish(),
            expect: Expect::Refused(leak(huge.clone())),
        },
        Case {
            name: "long-component",
            tar: RawTar::new().file(&long_component, b"x").finish(),
            expect: Expect::Failed,
        },
        Case {
            name: "root-replaced-by-file",
            tar: RawTar::new().file("./", b"x").finish(),
            expect: Expect::Refused("./"),
        },
    ]
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

#[test]
fn hostile_layers_are_refused_or_contained() {
    // One sandbox to name the `outside` path in the layers; each case gets
    // a fresh one with the same layout.
    let names: Vec<&str> = cases(Path::new("/x")).iter().map(|c| c.name).collect();
    for (i, name) in names.iter().enumerate() {
        let sandbox = Sandbox::new();
        let case = cases(&sandbox.outside).swap_remove(i);
        assert_eq!(case.name, *name);
        let before = sandbox.outside_dest();
        let result = layer::apply(&case.tar[..], &sandbox.dest);
        match (&case.expect, &result) {
            (Expect::Refused(entry), Err(Error::UnsafeEntry { entry: got, .. })) => {
                assert_eq!(got, entry, "{name}: wrong entry named");
            }
            (Expect::Failed, Err(_)) | (Expect::Contained, Ok(_)) => {}
            (expect, result) => panic!("{name}: expected {expect:?}, got {result:?}"),
        }
        assert_eq!(
            before,
            sandbox.outside_dest(),
            "{name}: something outside dest changed"
        );
        assert_eq!(
            fs::read(sandbox.outside.join("secret")).unwrap(),
            b"secret",
            "{name}"
        );
    }
}

#[test]
fn refusal_message_names_the_entry() {
    let tar = RawTar::new()
        .file("ok", b"1")
        .file("../evil", b"2")
        .finish();
    let dest = tempfile::tempdir().unwrap();
    let err = layer::apply(&tar[..], dest.path()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("../evil"), "{text}");
    assert!(text.contains(".."), "{text}");
}

#[test]
fn contained_cases_replace_the_link_itself() {
    let sandbox = Sandbox::new();
    let tar = RawTar::new()
        .symlink("f", &format!("{}/secret", sandbox.outside.display()))
        .file("f", b"mine")
        .finish();
    layer::apply(&tar[..], &sandbox.dest).unwrap();
    let f = sandbox.dest.join("f");
    assert!(f.symlink_metadata().unwrap().is_file());
    assert_eq!(fs::read(f).unwrap(), b"mine");
}
