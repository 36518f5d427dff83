//! Bearer tokens (docker token auth spec) and their cache, keyed by registry
//! and scope.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::Secret;

/// The access a request needs, as token scopes
/// (`repository:NAME:pull,push`, `registry:catalog:*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Scope(Vec<String>);

impl Scope {
    /// No scope: `/v2/` pings and login.
    pub fn none() -> Scope {
        Scope(Vec::new())
    }

    pub fn pull(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull")])
    }

    pub fn push(repository: &str) -> Scope {
        Scope(vec![format!("repository:{repository}:pull,push")])
    }

    /// Push to `repository` and read `from`, for cross-repository mounts.
    pub fn push_mounting(repository: &str, from: &str) -> Scope {
        let mut scope = Scope::push(repository);
        if from != repository {
            scope.0.push(format!("repository:{from}:pull"));
        }
        scope
    }

    pub fn catalog() -> Scope {
        Scope(vec!["registry:catalog:*".to_owned()])
    }

    pub fn items(&self) -> &[String] {
        &self.0
    }

    /// For error messages: the repositories or "the registry".
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            "the registry".to_owned()
        } else {
            self.0.join(" ")
        }
    }
}

/// A token server's answer. `token` and `access_token` are synonyms.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and how long it may be used. The spec's default lifetime
    /// is 60 s when `expires_in` is missing.
    pub fn into_token(self) -> Option<(Secret, Duration)> {
        let token = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let lifetime = Duration::from_secs(self.expires_in.unwrap_or(60));
        Some((Secret::new(token), lifetime))
    }
}

/// Tokens by (registry, scope).
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<(String, Scope), (Secret, Instant)>>,
}

impl TokenCache {
    /// A token that still has some life left.
    pub fn get(&self, registry: &str, scope: &Scope) -> Option<Secret> {
        let tokens = self
            .tokens
            .lock()
            .expect("token cache lock is never poisoned");
        let (token, expires) = tokens.get(&(registry.to_owned(), scope.clone()))?;
        (Instant::now() < *expires).then(|| token.clone())
    }

    pub fn insert(&self, registry: &str, scope: &Scope, token: Secret, lifetime: Duration) {
        // Renew a little early so a token does not expire in flight.
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        let expires = Instant::now() + lifetime - margin;
        let mut tokens = self
            .tokens
            .lock()
            .expect("token cache lock is never poisoned");
        tokens.insert((registry.to_owned(), scope.clone()), (token, expires));
    }

    pub fn remove(&self, registry: &str, scope: &Scope) {
        let mut tokens = self
            .tokens
            .lock()
            .expect("token cache lock is never poisoned");
        tokens.remove(&(registry.to_owned(), scope.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(Scope::pull("a/b").items(), ["repository:a/b:pull"]);
        assert_eq!(
            Scope::push_mounting("a", "b").items(),
            ["repository:a:pull,push", "repository:b:pull"]
        );
        assert_eq!(Scope::push_mounting("a", "a"), Scope::push("a"));
    }

    #[test]
    fn token_response_synonyms_and_default_lifetime() {
        let response: TokenResponse = serde_json::from_str(r#"{"access_token":"t"}"#).unwrap();
        let (token, lifetime) = response.into_token().unwrap();
        assert_eq!(token.expose(), "t");
        assert_eq!(lifetime, Duration::from_secs(60));
        let response: TokenResponse = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(response.into_token().is_none());
    }

    #[test]
    fn cache_expires() {
        let cache = TokenCache::default();
        let scope = Scope::pull("x");
        cache.insert("r", &scope, Secret::new("t"), Duration::from_secs(100));
        assert!(cache.get("r", &scope).is_some());
        assert!(cache.get("r", &Scope::push("x")).is_none());
        cache.insert("r", &scope, Secret::new("t"), Duration::ZERO);
        assert!(cache.get("r", &scope).is_none());
    }
}
