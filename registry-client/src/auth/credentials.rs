//! Credentials in docker's `config.json`: the `auths` map, `credsStore` and
//! `credHelpers`, the latter two through the docker-credential-helpers
//! protocol (`docker-credential-NAME get|store|erase`, JSON on stdio).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Secret;
use crate::error::{Error, Result};
use crate::reference::DOCKER_HUB;

/// The key docker uses for Docker Hub in `auths` and with helpers.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// A credential for one registry. `Debug` never shows the secret part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// User name and password (or personal access token), sent as HTTP basic
    /// auth to the registry or its token server.
    Basic {
        /// The user name.
        username: String,
        /// The password or access token.
        password: Secret,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json), exchanged
    /// at the token server with `grant_type=refresh_token`.
    IdentityToken(Secret),
}

impl Credential {
    /// A basic credential.
    pub fn basic(username: impl Into<String>, password: impl Into<Secret>) -> Credential {
        Credential::Basic {
            username: username.into(),
            password: password.into(),
        }
    }
}

/// Reads and writes credentials the way the docker CLI does, so `kiln login`
/// and `docker login` share them.
#[derive(Clone, Debug)]
pub struct CredentialStore {
    path: PathBuf,
    helper_dir: Option<PathBuf>,
}

impl CredentialStore {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn from_env() -> CredentialStore {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) => PathBuf::from(dir),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/root"))
                .join(".docker"),
        };
        CredentialStore::at(dir.join("config.json"))
    }

    /// The config file at `path` (it need not exist yet).
    pub fn at(path: impl Into<PathBuf>) -> CredentialStore {
        CredentialStore {
            path: path.into(),
            helper_dir: None,
        }
    }

    /// Looks for `docker-credential-*` helpers in `dir` instead of `$PATH`.
    pub fn with_helper_dir(mut self, dir: impl Into<PathBuf>) -> CredentialStore {
        self.helper_dir = Some(dir.into());
        self
    }

    /// The config file this store uses.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credential for `registry` (`docker.io`, `host:port`), from its
    /// helper if one is configured, else from `auths`. `Ok(None)` when there
    /// is none. Blocks while a helper runs.
    pub fn get(&self, registry: &str) -> Result<Option<Credential>> {
        let config = self.read()?;
        let key = server_key(registry);
        if let Some(helper) = helper_for(&config, registry) {
            if let Some(credential) = self.helper_get(&helper, registry, &key)? {
                return Ok(Some(credential));
            }
        }
        let Some(auths) = config.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        let entry = auths.get(&key).or_else(|| {
            auths
                .iter()
                .find(|(k, _)| host_of(k) == host_of(&key))
                .map(|(_, v)| v)
        });
        match entry {
            Some(entry) => self.parse_entry(entry),
            None => Ok(None),
        }
    }

    /// Saves `credential` for `registry`: to its helper if one is
    /// configured, else base64 in `auths` (the file is written atomically,
    /// mode 0600, other keys kept).
    pub fn store(&self, registry: &str, credential: &Credential) -> Result<()> {
        let mut config = self.read()?;
        let key = server_key(registry);
        if let Some(helper) = helper_for(&config, registry) {
            let (username, secret) = match credential {
                Credential::Basic { username, password } => (username.as_str(), password.expose()),
                Credential::IdentityToken(token) => ("<token>", token.expose()),
            };
            let input = serde_json::to_vec(&HelperCredential {
                server_url: key.clone(),
                username: username.to_owned(),
                secret: secret.to_owned(),
            })
            .expect("a struct of strings serializes");
            self.run_helper(&helper, "store", registry, &input)?;
            return Ok(());
        }
        let entry = match credential {
            Credential::Basic { username, password } => {
                let auth = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()));
                serde_json::json!({ "auth": auth })
            }
            Credential::IdentityToken(token) => {
                serde_json::json!({ "identitytoken": token.expose() })
            }
        };
        let auths = config
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        let Some(auths) = auths.as_object_mut() else {
            return Err(self.config_error("\"auths\" is not an object"));
        };
        auths.retain(|k, _| host_of(k) != host_of(&key));
        auths.insert(key, entry);
        self.write(&config)
    }

    /// Removes the credential for `registry` (from its helper and from
    /// `auths`). Returns whether there was one.
    pub fn erase(&self, registry: &str) -> Result<bool> {
        let mut config = self.read()?;
        let key = server_key(registry);
        let mut found = false;
        if let Some(helper) = helper_for(&config, registry) {
            match self.run_helper(&helper, "erase", registry, key.as_bytes()) {
                Ok(_) => found = true,
                Err(Error::CredentialHelper { detail, .. }) if is_not_found(&detail) => {}
                Err(error) => return Err(error),
            }
        }
        if let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) {
            let before = auths.len();
            auths.retain(|k, _| host_of(k) != host_of(&key));
            if auths.len() != before {
                found = true;
                self.write(&config)?;
            }
        }
        Ok(found)
    }

    fn parse_entry(&self, entry: &Value) -> Result<Option<Credential>> {
        if let Some(token) = entry.get("identitytoken").and_then(Value::as_str) {
            if !token.is_empty() {
                return Ok(Some(Credential::IdentityToken(Secret::new(token))));
            }
        }
        if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
            if auth.is_empty() {
                return Ok(None);
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    self.config_error("an \"auth\" entry is not base64 of user:password")
                })?;
            let (username, password) = decoded.split_once(':').ok_or_else(|| {
                self.config_error("an \"auth\" entry is not base64 of user:password")
            })?;
            return Ok(Some(Credential::basic(username, password)));
        }
        let username = entry.get("username").and_then(Value::as_str);
        let password = entry.get("password").and_then(Value::as_str);
        Ok(match (username, password) {
            (Some(username), Some(password)) => Some(Credential::basic(username, password)),
            _ => None,
        })
    }

    fn helper_get(&self, helper: &str, registry: &str, key: &str) -> Result<Option<Credential>> {
        let output = match self.run_helper(helper, "get", registry, key.as_bytes()) {
            Ok(output) => output,
            Err(Error::CredentialHelper { detail, .. }) if is_not_found(&detail) => {
                return Ok(None)
            }
            Err(error) => return Err(error),
        };
        let answer: HelperCredential =
            serde_json::from_slice(&output).map_err(|_| Error::CredentialHelper {
                helper: helper.to_owned(),
                action: "get",
                registry: registry.to_owned(),
                detail: "answer is not the expected JSON".to_owned(),
            })?;
        if answer.secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(if answer.username == "<token>" {
            Credential::IdentityToken(Secret::new(answer.secret))
        } else {
            Credential::basic(answer.username, answer.secret)
        }))
    }

    /// Runs `docker-credential-HELPER ACTION` with `input` on stdin; returns
    /// stdout. A failure carries the helper's first line of output, which by
    /// the protocol is an error message, not a secret.
    fn run_helper(
        &self,
        helper: &str,
        action: &'static str,
        registry: &str,
        input: &[u8],
    ) -> Result<Vec<u8>> {
        let program = format!("docker-credential-{helper}");
        let program = match &self.helper_dir {
            Some(dir) => dir.join(program),
            None => PathBuf::from(program),
        };
        let fail = |detail: String| Error::CredentialHelper {
            helper: helper.to_owned(),
            action,
            registry: registry.to_owned(),
            detail,
        };
        let mut child = Command::new(&program)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| fail(format!("cannot run it: {error}")))?;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        // A helper that exits early closes its stdin; its exit status tells why.
        let _ = stdin.write_all(input);
        drop(stdin);
        let output = child
            .wait_with_output()
            .map_err(|error| fail(format!("waiting for it: {error}")))?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let message = [&output.stdout, &output.stderr]
            .iter()
            .map(|bytes| String::from_utf8_lossy(bytes).trim().to_owned())
            .find(|text| !text.is_empty())
            .unwrap_or_else(|| output.status.to_string());
        Err(fail(message.lines().next().unwrap_or_default().to_owned()))
    }

    fn read(&self) -> Result<Map<String, Value>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
            Err(source) => {
                return Err(Error::Io {
                    action: "reading",
                    path: self.path.clone(),
                    source,
                })
            }
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Map::new());
        }
        // The serde error would quote the offending text, which may be a secret.
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(self.config_error("not a JSON object")),
            Err(error) => Err(self.config_error(&format!(
                "invalid JSON at line {} column {}",
                error.line(),
                error.column()
            ))),
        }
    }

    fn write(&self, config: &Map<String, Value>) -> Result<()> {
        let io = |action, source| Error::Io {
            action,
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
        let bytes = serde_json::to_vec_pretty(config).expect("a JSON map serializes");
        let temp = dir.join(format!(
            ".{}.tmp{}",
            self.path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("config.json"),
            std::process::id()
        ));
        let result = (|| {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&bytes)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)
        })();
        result.map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            io("writing", e)
        })
    }

    fn config_error(&self, detail: &str) -> Error {
        Error::Config {
            path: self.path.clone(),
            detail: detail.to_owned(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct HelperCredential {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

fn helper_for(config: &Map<String, Value>, registry: &str) -> Option<String> {
    let by_registry = config
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|helpers| {
            helpers
                .iter()
                .find(|(k, _)| {
                    host_of(k) == host_of(&server_key(registry)) || k.as_str() == registry
                })
                .and_then(|(_, v)| v.as_str())
        });
    by_registry
        .or_else(|| config.get("credsStore").and_then(Value::as_str))
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
}

/// The name docker files a registry's credential under.
fn server_key(registry: &str) -> String {
    if registry == DOCKER_HUB || registry == "index.docker.io" || registry == "registry-1.docker.io"
    {
        DOCKER_HUB_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// `https://host:port/v1/` -> `host:port`; Docker Hub's aliases -> `docker.io`.
fn host_of(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
        other => other,
    }
}

fn is_not_found(detail: &str) -> bool {
    detail
        .to_ascii_lowercase()
        .contains("credentials not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_in(dir: &Path) -> CredentialStore {
        CredentialStore::at(dir.join("config.json")).with_helper_dir(dir)
    }

    #[test]
    fn reads_auths_in_docker_spellings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{
                "https://index.docker.io/v1/":{"auth":"dXNlcjpwYTpzcw=="},
                "http://reg.example:5000/v2/":{"username":"u2","password":"p2"},
                "tok.example":{"identitytoken":"refresh"}
            },"other":1}"#,
        )
        .unwrap();
        let store = store_in(dir.path());
        assert_eq!(
            store.get("docker.io").unwrap(),
            Some(Credential::basic("user", "pa:ss"))
        );
        assert_eq!(
            store.get("reg.example:5000").unwrap(),
            Some(Credential::basic("u2", "p2"))
        );
        assert_eq!(
            store.get("tok.example").unwrap(),
            Some(Credential::IdentityToken(Secret::new("refresh")))
        );
        assert_eq!(store.get("nowhere.example").unwrap(), None);
    }

    #[test]
    fn store_and_erase_keep_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths":{"a.example":{"auth":"YTpi"}},"psFormat":"x"}"#,
        )
        .unwrap();
        let store = store_in(dir.path());
        store
            .store("127.0.0.1:5000", &Credential::basic("me", "secret"))
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("psFormat") && text.contains("a.example"));
        assert!(!text.contains("secret"), "stored base64, not plain");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            store.get("127.0.0.1:5000").unwrap(),
            Some(Credential::basic("me", "secret"))
        );
        assert!(store.erase("127.0.0.1:5000").unwrap());
        assert!(!store.erase("127.0.0.1:5000").unwrap());
        assert_eq!(store.get("127.0.0.1:5000").unwrap(), None);
        assert_eq!(
            store.get("a.example").unwrap(),
            Some(Credential::basic("a", "b"))
        );
    }

    #[test]
    fn missing_or_malformed_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path());
        assert_eq!(store.get("x.example").unwrap(), None);
        std::fs::write(
            store.path(),
            r#"{"auths": {"x": {"auth": "hunter2-not-base64!"}}}"#,
        )
        .unwrap();
        let error = store.get("x").unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
        std::fs::write(store.path(), r#"{"auths": "hunter2"#).unwrap();
        let error = store.get("x").unwrap_err().to_string();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn credential_helper_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        // A helper that keeps one credential in a file, as the protocol says.
        let script = format!(
            r#"#!/bin/sh
case "$1" in
  store) cat > {state} ;;
  get) read url; if [ -f {state} ]; then cat {state}; else echo "credentials not found in native keychain"; exit 1; fi ;;
  erase) read url; if [ -f {state} ]; then rm {state}; else echo "credentials not found in native keychain"; exit 1; fi ;;
esac
"#,
            state = state.display()
        );
        let helper = dir.path().join("docker-credential-kilntest");
        std::fs::write(&helper, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"credHelpers":{"reg.example":"kilntest"}}"#,
        )
        .unwrap();
        let store = store_in(dir.path());
        assert_eq!(store.get("reg.example").unwrap(), None);
        store
            .store("reg.example", &Credential::basic("me", "pw"))
            .unwrap();
        let saved = std::fs::read_to_string(&state).unwrap();
        assert!(saved.contains(r#""ServerURL":"reg.example""#), "{saved}");
        assert_eq!(
            store.get("reg.example").unwrap(),
            Some(Credential::basic("me", "pw"))
        );
        assert!(!std::fs::read_to_string(store.path())
            .unwrap()
            .contains("pw"));
        assert!(store.erase("reg.example").unwrap());
        assert_eq!(store.get("reg.example").unwrap(), None);
        // Another registry does not use the helper.
        assert_eq!(store.get("other.example").unwrap(), None);
    }
}
