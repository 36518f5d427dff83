//! A fault-injecting proxy between the client and a plain-HTTP registry:
//! the client resumes, retries, or fails cleanly.

use futures_util::StreamExt;
use kiln_registry::{BlobSource, Error, Platform, PushOutcome, OCI_MANIFEST};

use kiln_testkit::{Auth, Blob, Fault, FaultProxy, Registry, TestImage};

async fn setup() -> Option<(Registry, FaultProxy, TestImage)> {
    let registry = Registry::start(Auth::None).await?;
    let proxy = FaultProxy::start(&registry.host).await;
    let image = TestImage::new("amd64", &[3 * 1024 * 1024, 1000]);
    image
        .push(&registry.client(), &registry.reference("fault/app:1"))
        .await;
    Some((registry, proxy, image))
}

#[tokio::test]
async fn cut_stream_resumes_with_range() {
    let Some((registry, proxy, image)) = setup().await else {
        return;
    };
    let client = registry.client();
    let reference = proxy.reference("fault/app:1");
    let layer = &image.layers[0];
    proxy.inject("GET", &layer.digest(), Fault::Cut, 2);
    let mut stream = client.fetch_blob(&reference, &layer.descriptor);
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    assert!(bytes == layer.bytes.as_ref(), "resumed bytes differ");
    let ranges: Vec<String> = proxy
        .seen()
        .into_iter()
        .filter(|seen| seen.method == "GET" && seen.path.contains(&layer.digest()))
        .filter_map(|seen| seen.range)
        .collect();
    assert_eq!(ranges.len(), 2, "two resumes: {ranges:?}");
    assert!(
        ranges
            .iter()
            .all(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "{ranges:?}"
    );
}

#[tokio::test]
async fn resume_from_a_server_that_ignores_range() {
    let Some((registry, proxy, image)) = setup().await else {
        return;
    };
    let client = registry.client();
    let reference = proxy.reference("fault/app:1");
    let layer = &image.layers[0];
    proxy.inject("GET", &layer.digest(), Fault::Cut, 1);
    proxy.inject("GET", &layer.digest(), Fault::IgnoreRange, 1);
    let bytes = client
        .fetch_blob_bytes(&reference, &layer.descriptor)
        .await
        .unwrap();
    assert!(
        bytes == layer.bytes,
        "bytes after a full-body resume differ"
    );
}

#[tokio::test]
async fn too_many_requests_and_unavailable_are_retried() {
    let Some((registry, proxy, image)) = setup().await else {
        return;
    };
    let client = registry.client();
    let reference = proxy.reference("fault/app:1");
    proxy.inject(
        "GET",
        "/manifests/1",
        Fault::Status {
            code: 429,
            retry_after: Some(1),
        },
        1,
    );
    proxy.inject(
        "GET",
        &image.layers[1].digest(),
        Fault::Status {
            code: 503,
            retry_after: Some(0),
        },
        2,
    );
    let resolved = client.resolve(&reference, &Platform::host()).await.unwrap();
    assert_eq!(resolved.manifest.digest.to_string(), image.digest());
    let layer = client
        .fetch_blob_bytes(&reference, &image.layers[1].descriptor)
        .await
        .unwrap();
    assert_eq!(layer, image.layers[1].bytes);

    // Pushing through failures: the upload POST and PUT fail once each.
    let blob = Blob::random(5000);
    proxy.inject(
        "POST",
        "/blobs/uploads/",
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        1,
    );
    proxy.inject(
        "PUT",
        &blob.digest(),
        Fault::Status {
            code: 502,
            retry_after: None,
        },
        1,
    );
    let outcome = client
        .push_blob(
            &reference,
            &blob.descriptor,
            &BlobSource::Bytes(blob.bytes.clone()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
    // A manifest whose blobs the repository lacks: the registry's 400, not a retry.
    let error = client
        .push_manifest(
            &proxy.reference("fault/other:1"),
            OCI_MANIFEST,
            image.manifest.clone(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Status { status: 400, .. }),
        "{error}"
    );

    // Unavailable for good: a clean error after the retries.
    proxy.inject(
        "GET",
        "/manifests/1",
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        100,
    );
    let error = client
        .resolve(&reference, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::RetriesExhausted { .. }), "{error}");
    assert!(!error.to_string().contains('\n'));
}

#[tokio::test]
async fn chunked_push_survives_a_failed_patch() {
    let Some((registry, proxy, _)) = setup().await else {
        return;
    };
    let client = registry
        .client_builder()
        .upload_chunking(256 * 1024, 256 * 1024)
        .build();
    let reference = proxy.reference("fault/chunks");
    let blob = Blob::random(1024 * 1024);
    proxy.inject(
        "PATCH",
        "/blobs/uploads/",
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        1,
    );
    proxy.inject(
        "PUT",
        &blob.digest(),
        Fault::Status {
            code: 503,
            retry_after: None,
        },
        1,
    );
    let outcome = client
        .push_blob(
            &reference,
            &blob.descriptor,
            &BlobSource::Bytes(blob.bytes.clone()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
    let back = client
        .fetch_blob_bytes(&reference, &blob.descriptor)
        .await
        .unwrap();
    assert!(back == blob.bytes, "pushed bytes differ");
}

#[tokio::test]
async fn flipped_byte_is_a_digest_mismatch() {
    let Some((registry, proxy, image)) = setup().await else {
        return;
    };
    let client = registry.client();
    let reference = proxy.reference("fault/app:1");
    let layer = &image.layers[1];
    proxy.inject("GET", &layer.digest(), Fault::FlipByte, 1);
    let mut stream = client.fetch_blob(&reference, &layer.descriptor);
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    let error = items.pop().unwrap().unwrap_err();
    assert!(matches!(error, Error::DigestMismatch { .. }), "{error}");
    assert!(error.is_corrupt());
    assert!(
        items.iter().all(Result::is_ok),
        "the error is the last item"
    );

    // A manifest whose bytes do not match the digest the registry announced.
    proxy.inject("GET", "/manifests/1", Fault::FlipByte, 1);
    let error = client
        .resolve(&reference, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::DigestMismatch { .. }), "{error}");
    // Malformed JSON where a manifest should be.
    proxy.inject(
        "GET",
        "/manifests/1",
        Fault::ReplaceBody(b"{\"schemaVersion\": 2, \"layers\": 7".to_vec()),
        1,
    );
    let error = client
        .resolve(&reference, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::MalformedManifest { .. }), "{error}");
    assert!(!error.to_string().contains('\n'));
    // By digest, a replaced body cannot pass.
    let pinned = reference.with_digest(image.digest().parse().unwrap());
    proxy.inject(
        "GET",
        &image.digest(),
        Fault::ReplaceBody(b"{}".to_vec()),
        1,
    );
    let error = client
        .resolve(&pinned, &Platform::host())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::DigestMismatch { .. }), "{error}");
}

#[tokio::test]
async fn redirects_to_blob_storage_are_followed() {
    let Some((registry, proxy, image)) = setup().await else {
        return;
    };
    let client = registry.client();
    let reference = proxy.reference("fault/app:1");
    let layer = &image.layers[0];
    proxy.inject("GET", &layer.digest(), Fault::Redirect, 1);
    let bytes = client
        .fetch_blob_bytes(&reference, &layer.descriptor)
        .await
        .unwrap();
    assert!(bytes == layer.bytes, "redirected bytes differ");
    let through_proxy = proxy
        .seen()
        .iter()
        .filter(|s| s.path.contains(&layer.digest()))
        .count();
    assert_eq!(through_proxy, 1, "the body came from the redirect target");
}
