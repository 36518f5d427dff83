//! TLS with htpasswd basic auth, and TLS with bearer tokens.

use std::sync::atomic::Ordering;
use std::time::Duration;

use kiln_registry::{
    BlobSource, Client, Credential, CredentialStore, Error, Platform, PushOutcome, Secret,
};

use kiln_testkit::registry::{PASSWORD, USER};
use kiln_testkit::token_server::REFRESH_TOKEN;
use kiln_testkit::{Auth, Registry, TestImage};

const WRONG: &str = "wrong-password-d0nt-print";

#[tokio::test]
async fn basic_auth_right_and_wrong_password() {
    let Some(registry) = Registry::start(Auth::Basic).await else {
        return;
    };
    let image = TestImage::new("amd64", &[2000, 3000]);
    let reference = registry.reference("basic/app:1");
    let client = registry.client();
    image.push(&client, &reference).await;
    let resolved = client.resolve(&reference, &Platform::host()).await.unwrap();
    assert_eq!(resolved.manifest.digest.to_string(), image.digest());
    let layer = client
        .fetch_blob_bytes(&reference, &image.layers[1].descriptor)
        .await
        .unwrap();
    assert_eq!(layer, image.layers[1].bytes);

    let wrong = registry
        .client_builder()
        .credential(&registry.host, Credential::basic(USER, WRONG))
        .build();
    let error = wrong
        .resolve(&reference, &Platform::host())
        .await
        .unwrap_err();
    assert!(error.is_unauthorized(), "{error}");
    assert_no_secret(&error);
    let error = wrong
        .login(&registry.host, &Credential::basic(USER, WRONG))
        .await
        .unwrap_err();
    assert!(error.is_unauthorized(), "{error}");
    assert_no_secret(&error);

    let anonymous = registry.client_builder().build();
    let error = anonymous
        .resolve(&reference, &Platform::host())
        .await
        .unwrap_err();
    assert!(error.is_unauthorized(), "{error}");
    assert!(error.to_string().contains("without credentials"), "{error}");
}

#[tokio::test]
async fn login_verifies_then_store_feeds_the_client() {
    let Some(registry) = Registry::start(Auth::Basic).await else {
        return;
    };
    let config = registry.dir.path().join("docker/config.json");
    let store = CredentialStore::at(&config);
    let client = registry
        .client_builder()
        .credential_store(store.clone())
        .build();
    let credential = Credential::basic(USER, PASSWORD);
    client.login(&registry.host, &credential).await.unwrap();
    store.store(&registry.host, &credential).unwrap();
    assert!(!std::fs::read_to_string(&config).unwrap().contains(PASSWORD));

    // A new client reads the saved credential when the registry asks.
    let fresh = registry
        .client_builder()
        .credential_store(store.clone())
        .build();
    let image = TestImage::new("amd64", &[10]);
    image
        .push(&fresh, &registry.reference("stored/creds:1"))
        .await;
    assert!(store.erase(&registry.host).unwrap());
    let after_logout = registry.client_builder().credential_store(store).build();
    let error = after_logout.catalog(&registry.host).await.unwrap_err();
    assert!(error.is_unauthorized(), "{error}");
}

#[tokio::test]
async fn tls_needs_the_registry_ca() {
    let Some(registry) = Registry::start(Auth::Basic).await else {
        return;
    };
    let untrusting = Client::builder()
        .certs_dirs([registry.dir.path().join("empty")])
        .credential(&registry.host, Credential::basic(USER, PASSWORD))
        .retry(1, Duration::from_millis(10))
        .build();
    let error = untrusting.catalog(&registry.host).await.unwrap_err();
    assert!(matches!(error, Error::Transport { .. }), "{error}");
    // Listed as insecure, the certificate is not checked.
    let insecure = Client::builder()
        .certs_dirs([registry.dir.path().join("empty")])
        .insecure_registries([registry.host.clone()])
        .credential(&registry.host, Credential::basic(USER, PASSWORD))
        .build();
    insecure.catalog(&registry.host).await.unwrap();
}

#[tokio::test]
async fn bearer_tokens_with_pull_and_push_scopes() {
    let Some(registry) = Registry::start(Auth::Token).await else {
        return;
    };
    let stats = registry.token_server.as_ref().unwrap().stats.clone();
    let image = TestImage::new("amd64", &[4000, 5000]);
    let reference = registry.reference("token/app:1");
    let client = registry.client();
    image.push(&client, &reference).await;
    {
        let scopes = stats.scopes.lock().unwrap();
        let push_tokens = scopes
            .iter()
            .filter(|s| *s == "repository:token/app:pull,push")
            .count();
        assert_eq!(
            push_tokens, 1,
            "parallel blob pushes share one token: {scopes:?}"
        );
    }
    let pulled = client.resolve(&reference, &Platform::host()).await.unwrap();
    assert_eq!(pulled.manifest.digest.to_string(), image.digest());
    let before = stats.requests.load(Ordering::SeqCst);
    // Tokens are cached per scope: more pulls ask the token server no more.
    for layer in &image.layers {
        client
            .fetch_blob_bytes(&reference, &layer.descriptor)
            .await
            .unwrap();
    }
    assert_eq!(
        stats.requests.load(Ordering::SeqCst),
        before,
        "the pull token is reused"
    );

    // Anonymous: pull works, push is refused.
    let anonymous = registry.client_builder().build();
    let resolved = anonymous
        .resolve(&reference, &Platform::host())
        .await
        .unwrap();
    assert_eq!(resolved.manifest.digest.to_string(), image.digest());
    let other = TestImage::new("amd64", &[10]);
    let blob = &other.layers[0];
    let error = anonymous
        .push_blob(
            &reference,
            &blob.descriptor,
            &kiln_registry::BlobSource::Bytes(blob.bytes.clone()),
            None,
        )
        .await
        .unwrap_err();
    assert!(error.is_unauthorized(), "{error}");

    // Wrong password: the token server refuses, the message has no secret.
    let wrong = registry
        .client_builder()
        .credential(&registry.host, Credential::basic(USER, WRONG))
        .build();
    let error = wrong
        .resolve(&reference, &Platform::host())
        .await
        .unwrap_err();
    assert!(error.is_unauthorized(), "{error}");
    assert_no_secret(&error);
    let error = wrong
        .login(&registry.host, &Credential::basic(USER, WRONG))
        .await
        .unwrap_err();
    assert!(error.is_unauthorized(), "{error}");
    client
        .login(&registry.host, &Credential::basic(USER, PASSWORD))
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_tokens_are_refreshed() {
    let Some(registry) = Registry::start(Auth::Token).await else {
        return;
    };
    let stats = registry.token_server.as_ref().unwrap().stats.clone();
    stats.expires_in.store(1, Ordering::SeqCst);
    let client = registry.client();
    let image = TestImage::new("amd64", &[10]);
    let reference = registry.reference("refresh/app:1");
    image.push(&client, &reference).await;
    client.resolve(&reference, &Platform::host()).await.unwrap();
    let before = stats.requests.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.resolve(&reference, &Platform::host()).await.unwrap();
    assert!(
        stats.requests.load(Ordering::SeqCst) > before,
        "a new token after expiry"
    );
}

fn assert_no_secret(error: &Error) {
    let text = format!("{error} {error:?}");
    assert!(
        !text.contains(WRONG) && !text.contains(PASSWORD),
        "secret in {text}"
    );
    assert!(!error.to_string().contains('\n'));
}

#[tokio::test]
async fn identity_token_and_mount_under_token_auth() {
    let Some(registry) = Registry::start(Auth::Token).await else {
        return;
    };
    let refresh = Credential::IdentityToken(Secret::new(REFRESH_TOKEN));
    let client = registry
        .client_builder()
        .credential(&registry.host, refresh.clone())
        .build();
    client.login(&registry.host, &refresh).await.unwrap();
    let image = TestImage::new("amd64", &[3000]);
    let source = registry.reference("token/source:1");
    image.push(&client, &source).await;
    // Mount into another repository: the token covers both repositories.
    let target = registry.reference("token/target:1");
    let layer = &image.layers[0];
    let outcome = client
        .push_blob(
            &target,
            &layer.descriptor,
            &BlobSource::Bytes(layer.bytes.clone()),
            Some(source.repository()),
        )
        .await
        .unwrap();
    assert_eq!(outcome, PushOutcome::Mounted);
    let stats = registry.token_server.as_ref().unwrap().stats.clone();
    let scopes = stats.scopes.lock().unwrap().clone();
    assert!(
        scopes
            .iter()
            .any(|s| s == "repository:token/target:pull,push repository:token/source:pull"),
        "{scopes:?}"
    );

    let wrong = Credential::IdentityToken(Secret::new("not-the-refresh-token"));
    let error = client.login(&registry.host, &wrong).await.unwrap_err();
    assert!(error.is_unauthorized(), "{error}");
    assert!(!format!("{error} {error:?}").contains("not-the-refresh-token"));
}

#[tokio::test]
async fn client_certificate_from_certs_dir() {
    let Some(registry) = Registry::start(Auth::MutualTls).await else {
        return;
    };
    let without = registry
        .client_builder()
        .retry(1, Duration::from_millis(1))
        .build();
    let error = without.catalog(&registry.host).await.unwrap_err();
    assert!(matches!(error, Error::Transport { .. }), "{error}");
    let (cert, key) = registry.client_pki.clone().unwrap();
    let host_dir = registry.certs_dir.join(&registry.host);
    std::fs::copy(cert, host_dir.join("client.cert")).unwrap();
    std::fs::copy(key, host_dir.join("client.key")).unwrap();
    let with = registry.client_builder().build();
    let image = TestImage::new("amd64", &[100]);
    image.push(&with, &registry.reference("mtls/app:1")).await;
    assert_eq!(with.catalog(&registry.host).await.unwrap(), ["mtls/app"]);
}
