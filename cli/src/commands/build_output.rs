//! `kiln build --output` / `-o`, spelled as BuildKit and buildx spell it:
//! `type=image[,name=N]`, `type=oci[,dest=FILE][,name=N]`,
//! `type=docker,dest=FILE[,name=N]`, `type=local,dest=DIR`,
//! `type=tar[,dest=FILE]`; `-o DIR` is `type=local,dest=DIR` and `-o -`
//! a tar on stdout. Specs are checked before anything is built; the
//! writers here put the built result where they say.

use std::fs;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use kiln_store::{CachedLayer, Lease, Store};

/// What an output writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The image, named in the store.
    Image,
    /// An OCI image layout tar.
    Oci,
    /// A docker-archive tar (`docker load`).
    Docker,
    /// The final file system, into a directory.
    Local,
    /// The final file system, as one tar.
    Tar,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::Oci => "oci",
            Kind::Docker => "docker",
            Kind::Local => "local",
            Kind::Tar => "tar",
        }
    }

    /// Whether it exports an image (and so fills `containerimage.*`
    /// metadata) rather than a bare file system.
    pub fn is_image(self) -> bool {
        matches!(self, Kind::Image | Kind::Oci | Kind::Docker)
    }
}

/// Where a file output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Nowhere (`type=image`).
    None,
    /// Standard output.
    Stdout,
    /// A file (tars) or a directory (`local`).
    Path(PathBuf),
}

/// One checked `--output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub kind: Kind,
    pub dest: Dest,
    /// `name=`: normalized names (the store's for `image`, the archive's
    /// for `oci`/`docker`); empty when not given.
    pub names: Vec<String>,
}

/// Splits one `--output` value into its CSV fields.
fn csv_fields(text: &str) -> Result<Vec<String>> {
    kiln_builder::dockerfile::mounts::split_csv(text)
        .map_err(|_| anyhow::anyhow!("invalid --output {text:?}: unterminated quote"))
}

/// Parses one `--output` value (no file system checks yet).
pub fn parse(text: &str) -> Result<Output> {
    let fields = csv_fields(text)?;
    if fields.len() == 1 && !text.contains('=') {
        return Ok(if text == "-" {
            Output {
                kind: Kind::Tar,
                dest: Dest::Stdout,
                names: Vec::new(),
            }
        } else if text.is_empty() {
            bail!("invalid --output \"\": give a directory, \"-\" or type=...")
        } else {
            Output {
                kind: Kind::Local,
                dest: Dest::Path(PathBuf::from(text)),
                names: Vec::new(),
            }
        });
    }
    let mut kind = None;
    let mut dest: Option<String> = None;
    let mut names = Vec::new();
    let mut others: Vec<(String, String)> = Vec::new();
    for field in &fields {
        let Some((key, value)) = field.split_once('=') else {
            bail!("invalid --output {text:?}: {field:?} is not KEY=VALUE");
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "type" => {
                kind = Some(match value {
                    "image" => Kind::Image,
                    "oci" => Kind::Oci,
                    "docker" => Kind::Docker,
                    "local" => Kind::Local,
                    "tar" => Kind::Tar,
                    "registry" => bail!(
                        "invalid --output {text:?}: type=registry is not supported; build with -t NAME, then kiln push NAME"
                    ),
                    other => bail!(
                        "invalid --output {text:?}: unknown type {other:?} (expected image, oci, docker, local or tar)"
                    ),
                })
            }
            "dest" => dest = Some(value.to_string()),
            "name" | "names" => {
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    names.push(
                        crate::names::normalize(name)
                            .with_context(|| format!("invalid --output {text:?}: name {name:?}"))?,
                    );
                }
            }
            other => others.push((other.to_string(), value.to_string())),
        }
    }
    let Some(kind) = kind else {
        bail!("invalid --output {text:?}: type=... is required");
    };
    for (key, value) in others {
        let fine = match key.as_str() {
            // A tar is what these write; a directory layout is not offered.
            "tar" if matches!(kind, Kind::Oci | Kind::Docker) => value == "true",
            "push" if kind == Kind::Image => value == "false",
            _ => false,
        };
        if !fine {
            bail!(
                "invalid --output {text:?}: option {key}={value} is not supported for type={}",
                kind.name()
            );
        }
    }
    if !names.is_empty() && !kind.is_image() {
        bail!(
            "invalid --output {text:?}: name= applies to image, oci and docker outputs, not type={}",
            kind.name()
        );
    }
    let dest = match (kind, dest.as_deref()) {
        (Kind::Image, None) => Dest::None,
        (Kind::Image, Some(_)) => {
            bail!("invalid --output {text:?}: type=image takes no dest (it names the image in the store)")
        }
        (Kind::Local, None | Some("")) => {
            bail!("invalid --output {text:?}: type=local needs dest=DIRECTORY")
        }
        (Kind::Local, Some("-")) => {
            bail!("invalid --output {text:?}: type=local cannot write to stdout; use type=tar")
        }
        (Kind::Docker, None | Some("")) => bail!(
            "invalid --output {text:?}: type=docker needs dest=FILE (or dest=- for stdout); type=image puts the image in kiln's store"
        ),
        (Kind::Oci | Kind::Tar, None | Some("-")) | (Kind::Docker, Some("-")) => Dest::Stdout,
        (_, Some("")) => bail!("invalid --output {text:?}: dest is empty"),
        (_, Some(path)) => Dest::Path(PathBuf::from(path)),
    };
    Ok(Output { kind, dest, names })
}

/// Parses and checks every `--output` before the build starts: one
/// writer of stdout, and not a terminal; destinations of the right kind.
pub fn parse_all(texts: &[String]) -> Result<Vec<Output>> {
    let outputs = texts.iter().map(|t| parse(t)).collect::<Result<Vec<_>>>()?;
    let on_stdout = outputs.iter().filter(|o| o.dest == Dest::Stdout).count();
    if on_stdout > 1 {
        bail!("invalid --output: more than one output writes to stdout");
    }
    for output in &outputs {
        match &output.dest {
            Dest::Stdout if std::io::stdout().is_terminal() => bail!(
                "invalid --output: refusing to write a type={} tar to a terminal; give dest=FILE or redirect stdout",
                output.kind.name()
            ),
            Dest::Path(path) => match (output.kind, fs::metadata(path)) {
                (Kind::Local, Ok(meta)) if !meta.is_dir() => {
                    bail!("invalid --output: destination {} is not a directory", path.display())
                }
                (Kind::Local, _) => {}
                (_, Ok(meta)) if meta.is_dir() => {
                    bail!("invalid --output: destination {} is a directory, not a file", path.display())
                }
                _ => {
                    let parent = path
                        .parent()
                        .filter(|p| !p.as_os_str().is_empty())
                        .unwrap_or(Path::new("."));
                    if !parent.is_dir() {
                        bail!(
                            "invalid --output: directory {} of {} does not exist",
                            parent.display(),
                            path.display()
                        );
                    }
                }
            },
            _ => {}
        }
    }
    Ok(outputs)
}

/// Writes a file beside `path` and renames it into place, so a failure
/// leaves no half-written file; `-` (stdout) is written directly.
pub fn write_file_or_stdout(
    dest: &Dest,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    match dest {
        Dest::Stdout => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
            write(&mut out)?;
            out.flush().context("writing to stdout")
        }
        Dest::Path(path) => write_atomic(path, write),
        Dest::None => Ok(()),
    }
}

/// Writes `path` through a temporary file in the same directory, synced
/// and renamed into place.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let temp = path.with_file_name(format!(
        ".{}.{}.partial",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("kiln-output"),
        std::process::id()
    ));
    let result = (|| {
        let file =
            fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        write(&mut writer)?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&temp, path).with_context(|| format!("writing {}", path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Writes a non-image output (`local`, `tar`) of the file system `layers`.
pub fn write_filesystem(
    store: &Store,
    lease: &Lease,
    output: &Output,
    layers: &[CachedLayer],
) -> Result<()> {
    use kiln_builder::export::fs;
    use kiln_builder::solve::error_chain;
    match (&output.kind, &output.dest) {
        (Kind::Local, Dest::Path(dir)) => fs::write_dir(store, lease, layers, dir)
            .map_err(|e| anyhow::anyhow!("writing {}: {}", dir.display(), error_chain(&e))),
        (Kind::Tar, dest) => write_file_or_stdout(dest, |out| {
            fs::write_tar(store, lease, layers, out)
                .map_err(|e| anyhow::anyhow!("writing the tar: {}", error_chain(&e)))
        }),
        _ => unreachable!("checked by parse"),
    }
}

/// Writes an `oci` or `docker` archive of `image` under `names` (the
/// store's one tar serves both: OCI layout plus docker's manifest.json).
pub fn write_archive(
    store: &Store,
    output: &Output,
    image: kiln_store::Image,
    names: Vec<String>,
) -> Result<()> {
    write_file_or_stdout(&output.dest, |out| {
        store
            .save(&[(image, names)], out)
            .context("writing the image archive")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_as_buildx_reads_them() {
        let o = parse("type=oci,dest=out.tar,name=foo:1").unwrap();
        assert_eq!(o.kind, Kind::Oci);
        assert_eq!(o.dest, Dest::Path("out.tar".into()));
        assert_eq!(o.names, vec!["docker.io/library/foo:1".to_string()]);
        let o = parse("type=docker,\"name=a:1,b:2\",dest=x.tar").unwrap();
        assert_eq!(o.names.len(), 2);
        assert_eq!(parse("out").unwrap().kind, Kind::Local);
        assert_eq!(parse("-").unwrap().dest, Dest::Stdout);
        assert_eq!(parse("type=tar").unwrap().dest, Dest::Stdout);
        assert_eq!(parse("type=image").unwrap().dest, Dest::None);
        for bad in [
            "type=bogus",
            "dest=x",
            "type=local",
            "type=local,dest=-",
            "type=docker",
            "type=oci,tar=false,dest=x",
            "type=oci,compression=zstd,dest=x",
            "type=local,dest=d,name=x",
            "type=registry",
            "type=oci,dest",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid --output"), "{bad}: {e}");
        }
    }
}
