//! The op graph: what the solver runs. Every node carries everything needed
//! to execute it and a digest of its definition and its inputs' digests.

use serde::Serialize;

use crate::dockerfile::instructions::{Network, Security};
use crate::dockerfile::mounts::{CacheSharing, MountType};
use crate::dockerfile::platform::Platform;
use crate::graph::image::ImageConfig;

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Op {
    /// A base image's root file system. The digest covers the reference
    /// text; the solver pins it by manifest digest.
    Image {
        /// As written after expansion (`alpine:3.20`).
        reference: String,
        /// Which platform to pull.
        platform: Platform,
    },
    /// Files of the build context.
    Context {
        /// `context` for the main context.
        name: String,
        /// Paths the build reads (COPY/ADD sources, bind mount sources,
        /// wildcards allowed), so only those need to be sent or hashed;
        /// empty means everything. Filled after compiling and not part of
        /// the digest (the reading ops' digests cover those paths).
        include: Vec<String>,
        /// `.dockerignore` patterns (docker syntax, `!` re-includes).
        exclude: Vec<String>,
    },
    /// A RUN step.
    Exec(ExecOp),
    /// COPY, ADD, WORKDIR's mkdir, heredoc files.
    File(FileOp),
}

/// A command run in a container whose root is the `rootfs` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecOp {
    /// argv (the shell already prepended for the shell form).
    pub args: Vec<String>,
    /// `KEY=value` environment.
    pub env: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// `user[:group]`, empty for root.
    pub user: String,
    /// Extra mounts.
    pub mounts: Vec<ExecMount>,
    /// `--network`.
    pub network: Network,
    /// `--security`.
    pub security: Security,
    /// Platform the command runs for.
    pub platform: Platform,
}

/// One mount of an exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecMount {
    /// Mount type.
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Path in the container.
    pub target: String,
    /// Index into the node's `inputs` for bind/cache `from` (None: the
    /// context for bind without `from`, or nothing).
    pub input: Option<usize>,
    /// Path inside the input.
    pub source: String,
    /// Read-only.
    pub readonly: bool,
    /// Cache/secret/ssh id.
    pub id: Option<String>,
    /// Cache sharing.
    pub sharing: CacheSharing,
    /// Mode, uid, gid for cache/secret/ssh.
    pub mode: Option<u32>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
    /// Secret/ssh required.
    pub required: bool,
    /// tmpfs size in bytes.
    pub size: Option<u64>,
    /// Secret as environment variable.
    pub env: Option<String>,
    /// A file made from inline text (RUN heredoc with `#!`).
    pub inline: Option<InlineFile>,
}

/// A file with given contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    /// File name.
    pub name: String,
    /// Contents.
    pub data: String,
    /// Mode bits.
    pub mode: u32,
}

/// File actions applied, in order, on top of the `rootfs` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileOp {
    /// The actions.
    pub actions: Vec<FileAction>,
}

/// One file action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum FileAction {
    /// COPY/ADD from an input (context, stage or image).
    Copy {
        /// Index into the node's `inputs` (None: only URLs / git sources).
        input: Option<usize>,
        /// Source paths inside the input (wildcards allowed), or URLs /
        /// git addresses for ADD.
        sources: Vec<String>,
        /// Absolute destination; a trailing `/` means a directory.
        dest: String,
        /// `--chown` (expanded).
        chown: Option<String>,
        /// `--chmod` (expanded).
        chmod: Option<String>,
        /// `--link`.
        link: bool,
        /// `--parents`.
        parents: bool,
        /// `--exclude` patterns.
        exclude: Vec<String>,
        /// ADD semantics (URLs, archive unpacking).
        is_add: bool,
        /// ADD `--unpack`.
        unpack: Option<bool>,
        /// ADD `--checksum`.
        checksum: Option<String>,
        /// ADD `--keep-git-dir`.
        keep_git_dir: bool,
    },
    /// A new file with contents (heredoc source).
    Mkfile {
        /// Absolute path.
        path: String,
        /// Contents.
        data: String,
        /// Mode bits.
        mode: u32,
        /// Owner.
        chown: Option<String>,
    },
    /// A directory (WORKDIR).
    Mkdir {
        /// Absolute path.
        path: String,
        /// Mode bits.
        mode: u32,
        /// Create parents.
        parents: bool,
        /// Owner (the stage's USER).
        chown: Option<String>,
    },
}

/// A named edge: which node feeds this one, in which role (`rootfs`,
/// `source`, `mount:/target`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Input {
    /// Role of the input.
    pub role: String,
    /// The node.
    pub node: NodeId,
}

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// `sha256:<hex>` of the op and its inputs' digests.
    pub digest: String,
    /// The op.
    pub op: Op,
    /// Inputs, in slot order.
    pub inputs: Vec<Input>,
    /// `[build 2/4] RUN make`, for progress output.
    pub description: String,
    /// 1-based Dockerfile line, when an instruction made it.
    pub line: Option<usize>,
}

/// One compiled stage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageOutput {
    /// Index in the Dockerfile.
    pub index: usize,
    /// Name, when the stage has one.
    pub name: Option<String>,
    /// Platform of the stage.
    pub platform: Platform,
    /// The final file system (None: scratch with no changes).
    pub root: Option<NodeId>,
    /// The resulting image config (history included).
    pub config: ImageConfig,
    /// ARGs declared in the stage with their values: a stage built FROM
    /// it sees them too, as in BuildKit.
    #[serde(skip)]
    pub args: Vec<(String, Option<String>)>,
}

/// A compiled build: the nodes the target needs, in dependency order
/// (inputs before users), and the stages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Graph {
    /// Nodes; every input points to an earlier node.
    pub nodes: Vec<Node>,
    /// Compiled stages (only those the target needs, unless all asked).
    pub stages: Vec<StageOutput>,
    /// Index of the target stage in the Dockerfile.
    pub target: usize,
}

impl Graph {
    /// The target stage's output.
    pub fn target_stage(&self) -> &StageOutput {
        self.stages
            .iter()
            .find(|s| s.index == self.target)
            .expect("the target stage is always compiled")
    }

    /// Adds a node, or returns the existing identical one.
    pub(crate) fn add(
        &mut self,
        index: &mut std::collections::HashMap<String, NodeId>,
        op: Op,
        inputs: Vec<Input>,
        description: String,
        line: Option<usize>,
    ) -> NodeId {
        let digest = digest_of(&op, &inputs, &self.nodes);
        if let Some(&id) = index.get(&digest) {
            return id;
        }
        self.nodes.push(Node {
            digest: digest.clone(),
            op,
            inputs,
            description,
            line,
        });
        index.insert(digest, self.nodes.len() - 1);
        self.nodes.len() - 1
    }
}

impl Graph {
    /// What the build reads from the context node `context`.
    pub(crate) fn context_paths(&self, context: NodeId) -> Vec<String> {
        let mut paths: Vec<String> = Vec::new();
        let mut everything = false;
        let mut add = |path: &str, everything: &mut bool| {
            let cleaned = crate::dockerfile::dockerignore::clean(path.trim_start_matches('/'));
            if cleaned == "." || cleaned.starts_with("..") {
                *everything = true;
            } else if !paths.contains(&cleaned) {
                paths.push(cleaned);
            }
        };
        for node in &self.nodes {
            let slot_is_context =
                |slot: Option<usize>| slot.is_some_and(|s| node.inputs[s].node == context);
            match &node.op {
                Op::File(f) => {
                    for action in &f.actions {
                        if let FileAction::Copy { input, sources, .. } = action {
                            if slot_is_context(*input) {
                                sources.iter().for_each(|s| add(s, &mut everything));
                            }
                        }
                    }
                }
                Op::Exec(e) => {
                    for mount in &e.mounts {
                        if slot_is_context(mount.input) {
                            add(&mount.source, &mut everything);
                        }
                    }
                }
                _ => {}
            }
        }
        if everything {
            return Vec::new();
        }
        paths.sort();
        paths
    }
}

/// sha256 over the canonical JSON of the op and its inputs' (role, digest)
/// pairs. serde writes struct fields in declaration order, so the bytes are
/// stable.
fn digest_of(op: &Op, inputs: &[Input], nodes: &[Node]) -> String {
    #[derive(Serialize)]
    struct Definition<'a> {
        op: &'a Op,
        inputs: Vec<(&'a str, &'a str)>,
    }
    let definition = Definition {
        op,
        inputs: inputs
            .iter()
            .map(|i| (i.role.as_str(), nodes[i.node].digest.as_str()))
            .collect(),
    };
    let mut writer =
        std::io::BufWriter::with_capacity(4096, kiln_store::HashingWriter::new(std::io::sink()));
    serde_json::to_writer(&mut writer, &definition).expect("ops serialize to JSON");
    let hasher = writer
        .into_inner()
        .unwrap_or_else(|_| unreachable!("hashing never fails"));
    hasher.finish().1.to_string()
}
