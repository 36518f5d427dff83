//! Authentication: `WWW-Authenticate` challenges, bearer tokens cached per
//! scope, and credentials from docker's `config.json` and credential helpers.

mod challenge;
mod credentials;
mod secret;
mod token;

pub use credentials::{Credential, CredentialStore};
pub use secret::Secret;

pub(crate) use challenge::parse_challenges;
pub(crate) use token::{Scope, TokenCache, TokenResponse};
