//! Writing image archives.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;

use oci_spec::image::{Descriptor, ImageIndexBuilder, MediaType};
use serde::Serialize;

use crate::images::{
    descriptor_digest, familiar_name, Image, IMAGE_NAME_ANNOTATION, REF_NAME_ANNOTATION,
};
use crate::{Digest, Error, Result, Store};

/// One entry of docker-archive `manifest.json`.
#[derive(Serialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

impl Store {
    /// Writes `images` (each with the names to record for it) as one tar to `out`.
    pub fn save(&self, images: &[(Image, Vec<String>)], out: impl Write) -> Result<()> {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        let mut written: BTreeSet<Digest> = BTreeSet::new();
        let mut docker_manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut index_entries: Vec<Descriptor> = Vec::new();

        for (image, names) in images {
            // Every blob the image needs: its target (manifest or index),
            // the platform manifest, the config, the layers.
            let mut blobs = vec![
                descriptor_digest(&image.target)?,
                image.manifest_digest.clone(),
                image.config_digest.clone(),
            ];
            blobs.extend(image.layer_digests()?);
            for digest in blobs {
                if written.insert(digest.clone()) {
                    self.append_blob(&mut tar, &digest)?;
                }
            }
            let blob_path = |d: &Digest| format!("blobs/sha256/{}", d.hex());
            let tags: Vec<String> = names.iter().map(|n| familiar_name(n).to_string()).collect();
            docker_manifest.push(DockerManifestEntry {
                config: blob_path(&image.config_digest),
                repo_tags: tags.clone(),
                layers: image.layer_digests()?.iter().map(blob_path).collect(),
            });
            for tag in &tags {
                if let Some((repo, t)) = split_tag(tag) {
                    repositories
                        .entry(repo.to_string())
                        .or_default()
                        .insert(t.to_string(), image.config_digest.hex().to_string());
                }
            }
            if names.is_empty() {
                index_entries.push(image.target.clone());
            }
            for name in names {
                let mut desc = image.target.clone();
                let mut annotations: HashMap<String, String> = HashMap::new();
                annotations.insert(IMAGE_NAME_ANNOTATION.to_string(), name.clone());
                // docker writes only the tag here; skopeo and umoci look the
                // image up by this annotation.
                let tag = split_tag(familiar_name(name))
                    .map(|(_, t)| t)
                    .unwrap_or("latest");
                annotations.insert(REF_NAME_ANNOTATION.to_string(), tag.to_string());
                desc.set_annotations(Some(annotations));
                index_entries.push(desc);
            }
        }

        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(index_entries)
            .build()
            .expect("an index with schema version and manifests builds");
        append_file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        append_file(
            &mut tar,
            "index.json",
            &serde_json::to_vec(&index).expect("serializes"),
        )?;
        append_file(
            &mut tar,
            "manifest.json",
            &serde_json::to_vec(&docker_manifest).expect("serializes"),
        )?;
        if !repositories.is_empty() {
            append_file(
                &mut tar,
                "repositories",
                &serde_json::to_vec(&repositories).expect("serializes"),
            )?;
        }
        let mut out = tar
            .into_inner()
            .map_err(|source| Error::LayerWrite { source })?;
        out.flush().map_err(|source| Error::LayerWrite { source })
    }

    fn append_blob<W: Write>(&self, tar: &mut tar::Builder<W>, digest: &Digest) -> Result<()> {
        let mut file = self.content.open(digest)?;
        let size = self.content.size(digest)?;
        let mut header = file_header(size);
        tar.append_data(
            &mut header,
            format!("blobs/sha256/{}", digest.hex()),
            &mut file,
        )
        .map_err(|source| Error::LayerWrite { source })
    }
}

fn append_file<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<()> {
    let mut header = file_header(bytes.len() as u64);
    tar.append_data(&mut header, path, bytes)
        .map_err(|source| Error::LayerWrite { source })
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o444);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// `repo:tag` -> (`repo`, `tag`); a colon inside a registry's port is not a tag.
pub(crate) fn split_tag(name: &str) -> Option<(&str, &str)> {
    let (repo, tag) = name.rsplit_once(':')?;
    if tag.contains('/') {
        return None;
    }
    Some((repo, tag))
}
