//! Push and pull against a plain-HTTP registry without auth.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use kiln_registry::{
    BlobSource, Client, Descriptor, Error, Platform, ProgressKind, PushOutcome, Reference,
    DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST,
};

use kiln_testkit::{content, Auth, Blob, Registry, TestImage};

async fn collect(
    client: &Client,
    reference: &Reference,
    descriptor: &Descriptor,
) -> Result<Vec<u8>, Error> {
    let mut stream = client.fetch_blob(reference, descriptor);
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok(bytes)
}

#[tokio::test]
async fn push_then_pull_keeps_every_digest() {
    let Some(registry) = Registry::start(Auth::None).await else {
        return;
    };
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let client = registry
        .client_builder()
        .progress(move |event| {
            sink.lock()
                .unwrap()
                .push((event.digest.to_string(), event.kind))
        })
        .build();
    let image = TestImage::new("amd64", &[1000, 300_000, 2_000_000]);
    let reference = registry.reference("round/trip:v1");
    let outcomes = image.push(&client, &reference).await;
    assert!(
        outcomes.iter().all(|o| *o == PushOutcome::Uploaded),
        "{outcomes:?}"
    );

    let resolved = client
        .resolve(&reference, &Platform::parse("linux/amd64").unwrap())
        .await
        .unwrap();
    assert_eq!(resolved.manifest.bytes, image.manifest);
    assert_eq!(resolved.manifest.digest.to_string(), image.digest());
    assert_eq!(resolved.digest().to_string(), image.digest());
    assert_eq!(resolved.manifest.media_type, OCI_MANIFEST);
    assert!(resolved.index.is_none());
    assert_eq!(resolved.config(), &image.config.descriptor);
    let config = client
        .fetch_blob_bytes(&reference, resolved.config())
        .await
        .unwrap();
    assert_eq!(config, image.config.bytes);
    // All layers at once; the client bounds how many move together.
    let fetches = resolved
        .layers()
        .iter()
        .map(|layer| collect(&client, &reference, layer));
    let layers = futures_util::future::try_join_all(fetches).await.unwrap();
    for (bytes, blob) in layers.iter().zip(&image.layers) {
        assert_eq!(bytes.as_slice(), blob.bytes.as_ref());
    }
    // By digest too.
    let by_digest = reference.with_digest(resolved.manifest.digest.clone());
    let again = client.resolve(&by_digest, &Platform::host()).await.unwrap();
    assert_eq!(again.manifest.bytes, image.manifest);

    let events = events.lock().unwrap();
    for blob in image.blobs() {
        assert!(
            events.contains(&(blob.digest(), ProgressKind::Done)),
            "no Done event for {}",
            blob.digest()
        );
        assert!(events.contains(&(blob.digest(), ProgressKind::Download)));
        assert!(events.contains(&(blob.digest(), ProgressKind::Upload)));
    }
}

#[tokio::test]
async fn head_skips_existing_and_mount_crosses_repositories() {
    let Some(registry) = Registry::start(Auth::None).await else {
        return;
    };
    let client = registry.client();
    let image = TestImage::new("amd64", &[5000, 7000]);
    let first = registry.reference("mount/source:1");
    image.push(&client, &first).await;
    // Again: every blob is there.
    let outcomes = image.push(&client, &first).await;
    assert!(
        outcomes.iter().all(|o| *o == PushOutcome::Existed),
        "{outcomes:?}"
    );
    // Another repository, mounting from the first.
    let second = registry.reference("mount/target:1");
    for blob in image.blobs() {
        let outcome = client
            .push_blob(
                &second,
                &blob.descriptor,
                &BlobSource::Bytes(blob.bytes.clone()),
                Some(first.repository()),
            )
            .await
            .unwrap();
        assert_eq!(outcome, PushOutcome::Mounted);
    }
    client
        .push_manifest(&second, OCI_MANIFEST, image.manifest.clone())
        .await
        .unwrap();
    let resolved = client.resolve(&second, &Platform::host()).await.unwrap();
    assert_eq!(resolved.manifest.digest.to_string(), image.digest());
    // Mounting from a repository that lacks the blob falls back to an upload.
    let fresh = Blob::random(3000);
    let outcome = client
        .push_blob(
            &second,
            &fresh.descriptor,
            &BlobSource::Bytes(fresh.bytes.clone()),
            Some("mount/nothing"),
        )
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
    assert_eq!(
        client
            .blob_exists(&second, fresh.descriptor.digest())
            .await
            .unwrap(),
        Some(3000)
    );
}

#[tokio::test]
async fn chunked_upload_of_a_large_blob_from_a_file() {
    let Some(registry) = Registry::start(Auth::None).await else {
        return;
    };
    let client = registry
        .client_builder()
        .upload_chunking(1024 * 1024, 1024 * 1024)
        .build();
    let blob = Blob::random(12 * 1024 * 1024 + 17);
    let file = registry.dir.path().join("large.blob");
    std::fs::write(&file, &blob.bytes).unwrap();
    let reference = registry.reference("chunked/blob");
    let outcome = client
        .push_blob(&reference, &blob.descriptor, &BlobSource::File(file), None)
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
    let back = collect(&client, &reference, &blob.descriptor)
        .await
        .unwrap();
    assert!(back == blob.bytes.as_ref(), "round-tripped bytes differ");

    // A source that does not match its descriptor is refused and not committed.
    let wrong = Blob::random(2 * 1024 * 1024);
    let mut descriptor = wrong.descriptor.clone();
    descriptor.set_digest(Blob::random(10).descriptor.digest().clone());
    let error = client
        .push_blob(
            &reference,
            &descriptor,
            &BlobSource::Bytes(wrong.bytes.clone()),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::DigestMismatch { .. }), "{error}");
    assert_eq!(
        client
            .blob_exists(&reference, descriptor.digest())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn index_with_two_platforms() {
    let Some(registry) = Registry::start(Auth::None).await else {
        return;
    };
    let client = registry.client();
    let amd64 = TestImage::new("amd64", &[4000]);
    let arm64 = TestImage::new("arm64", &[6000]);
    let reference = registry.reference("multi/arch:1");
    // Children by digest first, then the index under the tag.
    amd64
        .push(
            &client,
            &reference.with_digest(amd64.digest().parse().unwrap()),
        )
        .await;
    arm64
        .push(
            &client,
            &reference.with_digest(arm64.digest().parse().unwrap()),
        )
        .await;
    let index = content::index(&[(&amd64, "amd64"), (&arm64, "arm64")]);
    client
        .push_manifest(&reference, OCI_INDEX, index.clone())
        .await
        .unwrap();

    let top = client.get_manifest(&reference).await.unwrap();
    assert_eq!(top.bytes, index);
    assert_eq!(top.media_type, OCI_INDEX);
    for (platform, image) in [
        ("linux/amd64", &amd64),
        ("linux/arm64/v8", &arm64),
        ("linux/arm64", &arm64),
    ] {
        let resolved = client
            .resolve(&reference, &platform.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(
            resolved.manifest.digest.to_string(),
            image.digest(),
            "{platform}"
        );
        assert_eq!(resolved.index.as_ref().unwrap().bytes, index);
        assert_eq!(resolved.digest(), &top.digest);
        assert_eq!(resolved.layers(), [image.layers[0].descriptor.clone()]);
    }
    let error = client
        .resolve(&reference, &"linux/s390x".parse().unwrap())
        .await
        .unwrap_err();
    assert!(error.is_not_found());
    let message = error.to_string();
    assert!(message.contains("linux/amd64, linux/arm64"), "{message}");
}

#[tokio::test]
async fn unknown_names_and_bad_content_are_clear_errors() {
    let Some(registry) = Registry::start(Auth::None).await else {
        return;
    };
    let client = registry.client();
    let image = TestImage::new("amd64", &[100]);
    let reference = registry.reference("known/repo:1");
    image.push(&client, &reference).await;

    let unknown_tag = client
        .resolve(&registry.reference("known/repo:nope"), &Platform::host())
        .await
        .unwrap_err();
    assert!(unknown_tag.is_not_found(), "{unknown_tag}");
    let unknown_repo = client
        .resolve(&registry.reference("no/such:1"), &Platform::host())
        .await
        .unwrap_err();
    assert!(unknown_repo.is_not_found(), "{unknown_repo}");
    let missing_blob = Blob::random(10);
    let error = collect(&client, &reference, &missing_blob.descriptor)
        .await
        .unwrap_err();
    assert!(error.is_not_found(), "{error}");

    // A descriptor that understates or overstates the size.
    let layer = &image.layers[0];
    let mut shorter = layer.descriptor.clone();
    shorter.set_size(50);
    let error = collect(&client, &reference, &shorter).await.unwrap_err();
    assert!(matches!(error, Error::SizeMismatch { .. }), "{error}");
    let mut longer = layer.descriptor.clone();
    longer.set_size(150);
    let error = collect(&client, &reference, &longer).await.unwrap_err();
    assert!(error.is_corrupt(), "{error}");

    // No registry on that port.
    let port = kiln_testkit::registry::free_port();
    let nowhere = Reference::parse(&format!("127.0.0.1:{port}/x:1")).unwrap();
    let error = client
        .resolve(&nowhere, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Transport { .. }), "{error}");
    for error in [unknown_tag, unknown_repo, error] {
        assert!(!error.to_string().contains('\n'), "{error}");
    }
}

#[tokio::test]
async fn catalog_and_tags() {
    let Some(registry) = Registry::start(Auth::None).await else {
        return;
    };
    let client = registry.client();
    let image = TestImage::new("amd64", &[10]);
    for name in ["cat/alpha:1", "cat/alpha:2", "cat/beta:1"] {
        image.push(&client, &registry.reference(name)).await;
    }
    let mut repositories = client.catalog(&registry.host).await.unwrap();
    repositories.sort();
    assert_eq!(repositories, ["cat/alpha", "cat/beta"]);
    assert_eq!(
        client.search(&registry.host, "ALPH").await.unwrap(),
        ["cat/alpha"]
    );
    assert!(client
        .search(&registry.host, "zeta")
        .await
        .unwrap()
        .is_empty());
    let mut tags = client.tags(&registry.reference("cat/alpha")).await.unwrap();
    tags.sort();
    assert_eq!(tags, ["1", "2"]);
}

#[tokio::test]
async fn docker_schema2_and_manifest_list() {
    let Some(registry) = Registry::start(Auth::None).await else {
        return;
    };
    let client = registry.client();
    let layer = Blob::new(
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        vec![7u8; 4321],
    );
    let config = Blob::new(
        "application/vnd.docker.container.image.v1+json",
        br#"{"architecture":"arm","os":"linux","variant":"v7","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec(),
    );
    let reference = registry.reference("docker/types:1");
    for blob in [&layer, &config] {
        client
            .push_blob(
                &reference,
                &blob.descriptor,
                &BlobSource::Bytes(blob.bytes.clone()),
                None,
            )
            .await
            .unwrap();
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.descriptor,
        "layers": [layer.descriptor],
    }))
    .unwrap();
    let manifest_digest = kiln_registry::sha256_digest(&manifest);
    let child = reference.with_digest(manifest_digest.clone());
    client
        .push_manifest(&child, DOCKER_MANIFEST, manifest.clone().into())
        .await
        .unwrap();
    let list = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [{
            "mediaType": DOCKER_MANIFEST,
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
            "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
        }],
    }))
    .unwrap();
    client
        .push_manifest(&reference, DOCKER_MANIFEST_LIST, list.clone().into())
        .await
        .unwrap();

    let resolved = client
        .resolve(&reference, &"linux/arm/v7".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resolved.manifest.media_type, DOCKER_MANIFEST);
    assert_eq!(
        resolved.index.as_ref().unwrap().media_type,
        DOCKER_MANIFEST_LIST
    );
    assert_eq!(
        resolved.index.as_ref().unwrap().bytes.as_ref(),
        list.as_slice()
    );
    assert_eq!(resolved.manifest.bytes.as_ref(), manifest.as_slice());
    assert_eq!(resolved.layers(), std::slice::from_ref(&layer.descriptor));
    let error = client
        .resolve(&reference, &"linux/arm/v6".parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PlatformNotFound { .. }), "{error}");
}

#[tokio::test]
async fn foreign_layers_are_fetched_from_their_urls_and_never_pushed() {
    let Some(registry) = Registry::start(Auth::None).await else {
        return;
    };
    let client = registry.client();
    let elsewhere = registry.reference("foreign/storage");
    let blob = Blob::random(2000);
    client
        .push_blob(
            &elsewhere,
            &blob.descriptor,
            &BlobSource::Bytes(blob.bytes.clone()),
            None,
        )
        .await
        .unwrap();
    let mut foreign = Descriptor::new(
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into(),
        blob.descriptor.size(),
        blob.descriptor.digest().clone(),
    );
    foreign.set_urls(Some(vec![format!(
        "http://{}/v2/foreign/storage/blobs/{}",
        registry.host,
        blob.digest()
    )]));
    let image = registry.reference("foreign/image");
    let outcome = client
        .push_blob(
            &image,
            &foreign,
            &BlobSource::Bytes(blob.bytes.clone()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::SkippedNonDistributable);
    assert_eq!(
        client.blob_exists(&image, foreign.digest()).await.unwrap(),
        None
    );
    let bytes = collect(&client, &image, &foreign).await.unwrap();
    assert!(bytes == blob.bytes.as_ref(), "foreign layer bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reader_for_synchronous_consumers() {
    let Some(registry) = Registry::start(Auth::None).await else {
        return;
    };
    let client = registry.client();
    let image = TestImage::new("amd64", &[700_000]);
    let reference = registry.reference("blocking/reader:1");
    image.push(&client, &reference).await;
    let layer = image.layers[0].clone();
    let handle = tokio::runtime::Handle::current();
    let reader = client
        .fetch_blob(&reference, &layer.descriptor)
        .into_blocking_reader(handle.clone());
    let bytes = tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut bytes)?;
        // regression: reading on after the end (an unpacker, then a drain)
        // gives end of file again instead of polling the finished stream.
        assert_eq!(std::io::Read::read(&mut reader, &mut [0u8; 16])?, 0);
        Ok::<_, std::io::Error>(bytes)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(
        bytes == layer.bytes.as_ref(),
        "blocking reader bytes differ"
    );

    // A corrupt blob surfaces as an io::Error carrying the crate's error.
    let mut wrong = layer.descriptor.clone();
    wrong.set_size(layer.descriptor.size() - 1);
    let reader = client
        .fetch_blob(&reference, &wrong)
        .into_blocking_reader(handle);
    let error =
        tokio::task::spawn_blocking(move || std::io::copy(&mut { reader }, &mut std::io::sink()))
            .await
            .unwrap()
            .unwrap_err();
    let inner = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<Error>())
        .unwrap();
    assert!(inner.is_corrupt(), "{inner}");
}
