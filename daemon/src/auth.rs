//! Bearer-token auth: JWT verification with one pinned algorithm, the scopes a request needs,
//! and minting for `taskd token issue`. No HTTP here: `http::guard` applies it to requests.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What auth is set up with: taskd's `--jwt-*` flags (`config::AuthArgs::config`), or a
/// test's own values. With neither a secret nor a public key, auth is off.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// A file holding the HS256 secret.
    pub jwt_secret_file: Option<std::path::PathBuf>,
    /// The HS256 secret itself (TASKD_JWT_SECRET).
    pub jwt_secret: Option<String>,
    /// The RS256 or EdDSA public key (PEM) tokens are checked with.
    pub jwt_public_key_file: Option<std::path::PathBuf>,
    /// The private key (PEM) `taskd token issue` signs with.
    pub jwt_private_key_file: Option<std::path::PathBuf>,
    /// The `iss` accepted and minted.
    pub jwt_issuer: Option<String>,
    /// The `aud` accepted and minted.
    pub jwt_audience: Option<String>,
}

/// What a token allows. `admin` includes the other two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Reads and streams: tasks, logs, events, queues, workers.
    Read,
    /// Submit, cancel, retry (tasks of the unprivileged kinds), dead-letter retry.
    Write,
    /// Everything, including the shell, salt and kubectl kinds and dead-letter purge.
    Admin,
    /// The lease protocol only: lease tasks of declared kinds, report on them (heartbeat,
    /// complete, fail, logs). Neither submits nor reads other data.
    Worker,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Write, Scope::Admin, Scope::Worker];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "tasks.read",
            Scope::Write => "tasks.write",
            Scope::Admin => "admin",
            Scope::Worker => "worker",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The kinds only an admin token may submit: they run programs on the workers.
pub fn kind_needs_admin(kind: &str) -> bool {
    crate::domain::kinds::needs_admin(kind)
}

/// Who made a request, from a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub scopes: BTreeSet<Scope>,
    /// Identifies the token itself (a piece of its signature), for per-token limits.
    pub token_key: String,
}

impl Principal {
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&needed)
    }
}

/// Why a token was refused (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error(
        "this taskd requires a bearer token (Authorization: Bearer …); mint one with `taskd token issue`"
    )]
    Missing,
    #[error("the Authorization header must be `Bearer <token>`")]
    NotBearer,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token's audience is not the one this taskd accepts")]
    WrongAudience,
    #[error("the token's issuer is not the one this taskd accepts")]
    WrongIssuer,
    #[error("the token's algorithm is not the one this taskd accepts ({0})")]
    WrongAlgorithm(&'static str),
    #[error("the token is malformed: {0}")]
    Malformed(String),
}

/// The claims taskd reads and writes. `scope` is space-separated, as in OAuth 2.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    scope: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    /// A string or a list of strings (RFC 7519); jsonwebtoken checks it against the
    /// configured audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
}

/// Checks tokens. Built once from the flags; the algorithm follows the key and is the only
/// one accepted, so `alg: none` and HS/RS confusion cannot pass.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    algorithm: Algorithm,
}

impl Verifier {
    /// The one algorithm it accepts (`HS256`, `RS256`, `EdDSA`, …), for the log.
    pub fn algorithm(&self) -> String {
        format!("{:?}", self.algorithm)
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Reads the HS256 secret: the file's contents (trailing newline removed) or the variable.
fn secret(args: &AuthConfig) -> Result<Option<Vec<u8>>, String> {
    let secret = match (&args.jwt_secret_file, &args.jwt_secret) {
        (Some(path), _) => {
            std::fs::read(path).map_err(|e| format!("--jwt-secret-file {}: {e}", path.display()))?
        }
        (None, Some(value)) => value.as_bytes().to_vec(),
        (None, None) => return Ok(None),
    };
    let trimmed = secret.trim_ascii_end().to_vec();
    if String::from_utf8_lossy(&trimmed)
        .to_ascii_lowercase()
        .contains("change-me")
    {
        return Err(
            "the JWT secret is an example placeholder; generate one with `openssl rand -hex 32`"
                .to_owned(),
        );
    }
    if trimmed.len() < 32 {
        return Err(format!(
            "the JWT secret is {} bytes; use at least 32 random bytes (e.g. `openssl rand -hex 32`)",
            trimmed.len()
        ));
    }
    Ok(Some(trimmed))
}

fn algorithm_name(algorithm: Algorithm) -> &'static str {
    match algorithm {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::EdDSA => "EdDSA",
        _ => "other",
    }
}

impl Verifier {
    /// The verifier the flags describe, or `None` when auth is off.
    pub fn from_config(args: &AuthConfig) -> Result<Option<Verifier>, String> {
        let (key, algorithm) = match (secret(args)?, &args.jwt_public_key_file) {
            (Some(_), Some(_)) => {
                return Err(
                    "give either a JWT secret (HS256) or --jwt-public-key-file (RS256/EdDSA), not both"
                        .to_owned(),
                );
            }
            (Some(secret), None) => (DecodingKey::from_secret(&secret), Algorithm::HS256),
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("--jwt-public-key-file {}: {e}", path.display()))?;
                if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
                    (key, Algorithm::EdDSA)
                } else if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
                    (key, Algorithm::RS256)
                } else {
                    return Err(format!(
                        "--jwt-public-key-file {}: not an RSA or Ed25519 public key in PEM",
                        path.display()
                    ));
                }
            }
            (None, None) => return Ok(None),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = 30;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not only right when present.
        let mut required = vec!["exp"];
        match &args.jwt_issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &args.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(Verifier {
            key,
            validation,
            algorithm,
        }))
    }

    /// Checks a token and reads its subject and scopes (unknown scopes are ignored).
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        // RFC 7515: a token naming critical header parameters must be refused by a verifier
        // that does not understand them, and this one understands none.
        let header = token.split('.').next().unwrap_or_default();
        let header: Option<serde_json::Value> =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if header.as_ref().is_some_and(|h| h.get("crit").is_some()) {
            return Err(AuthError::Malformed(
                "it names critical header parameters this taskd does not support".to_owned(),
            ));
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::WrongAlgorithm(algorithm_name(self.algorithm))
                }
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                    AuthError::WrongAudience
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Malformed(format!("the {claim} claim is missing"))
                }
                // Decoding details (serde's messages) help no one and tell too much.
                _ => AuthError::Malformed("not a JWT this taskd can read".to_owned()),
            },
        )?;
        let signature = token.rsplit('.').next().unwrap_or_default();
        Ok(Principal {
            token_key: signature.chars().take(32).collect(),
            subject: data.claims.sub,
            scopes: data
                .claims
                .scope
                .split_whitespace()
                .filter_map(Scope::parse)
                .collect(),
        })
    }
}

/// What `taskd token issue` mints.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub scopes: Vec<Scope>,
    pub ttl: Duration,
    pub subject: String,
}

/// Mints a token with the flags' key: the HS256 secret, or `--jwt-private-key-file`
/// (RS256 or EdDSA, PEM).
pub fn issue(args: &AuthConfig, request: &TokenRequest) -> Result<String, String> {
    let (key, algorithm) = match (secret(args)?, &args.jwt_private_key_file) {
        (Some(secret), None) => (EncodingKey::from_secret(&secret), Algorithm::HS256),
        (None, Some(path)) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("--jwt-private-key-file {}: {e}", path.display()))?;
            if let Ok(key) = EncodingKey::from_ed_pem(&pem) {
                (key, Algorithm::EdDSA)
            } else if let Ok(key) = EncodingKey::from_rsa_pem(&pem) {
                (key, Algorithm::RS256)
            } else {
                return Err(format!(
                    "--jwt-private-key-file {}: not an RSA or Ed25519 private key in PEM",
                    path.display()
                ));
            }
        }
        (Some(_), Some(_)) => {
            return Err("give either a JWT secret or --jwt-private-key-file, not both".to_owned());
        }
        (None, None) => {
            return Err(
                "no signing key: give --jwt-secret-file (or TASKD_JWT_SECRET), or --jwt-private-key-file"
                    .to_owned(),
            );
        }
    };
    if request.scopes.is_empty() {
        return Err("give at least one scope: tasks.read, tasks.write or admin".to_owned());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("the clock is before 1970: {e}"))?
        .as_secs();
    // Ten years at most: a longer life is a mistake, and the sum must not overflow.
    const MAX_TTL_SECS: u64 = 10 * 366 * 24 * 3600;
    if request.ttl.as_secs() > MAX_TTL_SECS {
        return Err("--ttl: at most 10 years".to_owned());
    }
    if request.ttl < Duration::from_secs(60) {
        return Err("--ttl: at least 1 minute".to_owned());
    }
    let claims = Claims {
        sub: request.subject.clone(),
        scope: request
            .scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        exp: now + request.ttl.as_secs().max(1),
        nbf: Some(now),
        iat: Some(now),
        iss: args.jwt_issuer.clone(),
        aud: args.jwt_audience.clone().map(serde_json::Value::String),
    };
    jsonwebtoken::encode(&Header::new(algorithm), &claims, &key)
        .map_err(|e| format!("cannot sign the token: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn args() -> AuthConfig {
        AuthConfig {
            jwt_secret: Some(SECRET.to_owned()),
            ..AuthConfig::default()
        }
    }

    fn token(args: &AuthConfig, scopes: &[Scope]) -> String {
        issue(
            args,
            &TokenRequest {
                scopes: scopes.to_vec(),
                ttl: Duration::from_secs(60),
                subject: "ci".to_owned(),
            },
        )
        .expect("mint")
    }

    fn verifier(args: &AuthConfig) -> Verifier {
        Verifier::from_config(args)
            .expect("valid")
            .expect("auth on")
    }

    #[test]
    fn a_minted_token_verifies_with_its_scopes() {
        let args = args();
        let p = verifier(&args)
            .verify(&token(&args, &[Scope::Read, Scope::Write]))
            .expect("valid");
        assert_eq!(p.subject, "ci");
        assert!(p.allows(Scope::Read) && p.allows(Scope::Write));
        assert!(!p.allows(Scope::Admin));
        let admin = verifier(&args)
            .verify(&token(&args, &[Scope::Admin]))
            .expect("valid");
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
    }

    #[test]
    fn tokens_from_another_key_issuer_or_audience_are_refused() {
        let args = args();
        let other = AuthConfig {
            jwt_secret: Some("another-secret-another-secret-xx".to_owned()),
            ..AuthConfig::default()
        };
        assert_eq!(
            verifier(&args).verify(&token(&other, &[Scope::Read])),
            Err(AuthError::BadSignature)
        );
        let strict = AuthConfig {
            jwt_issuer: Some("taskplane".to_owned()),
            jwt_audience: Some("prod".to_owned()),
            ..args.clone()
        };
        // A token without the required iss (its aud is right).
        let no_issuer = AuthConfig {
            jwt_audience: Some("prod".to_owned()),
            ..args.clone()
        };
        assert_eq!(
            verifier(&strict).verify(&token(&no_issuer, &[Scope::Read])),
            Err(AuthError::WrongIssuer)
        );
        let wrong_aud = AuthConfig {
            jwt_audience: Some("staging".to_owned()),
            ..strict.clone()
        };
        assert_eq!(
            verifier(&strict).verify(&token(&wrong_aud, &[Scope::Read])),
            Err(AuthError::WrongAudience)
        );
        assert!(
            verifier(&strict)
                .verify(&token(&strict, &[Scope::Read]))
                .is_ok()
        );
    }

    #[test]
    fn short_secrets_and_missing_keys_are_refused() {
        let short = AuthConfig {
            jwt_secret: Some("short".to_owned()),
            ..AuthConfig::default()
        };
        assert!(Verifier::from_config(&short).is_err());
        let example = AuthConfig {
            jwt_secret: Some("change-me-to-at-least-32-random-bytes".to_owned()),
            ..AuthConfig::default()
        };
        assert!(
            Verifier::from_config(&example).is_err(),
            "the docs' placeholder"
        );
        assert!(
            Verifier::from_config(&AuthConfig::default())
                .expect("ok")
                .is_none()
        );
        assert!(
            issue(
                &AuthConfig::default(),
                &TokenRequest {
                    scopes: vec![Scope::Read],
                    ttl: Duration::from_secs(1),
                    subject: String::new(),
                }
            )
            .is_err()
        );
    }

    #[test]
    fn scope_names() {
        assert_eq!(Scope::parse("tasks.write"), Some(Scope::Write));
        assert_eq!(Scope::parse("root"), None);
        assert!(kind_needs_admin("shell") && kind_needs_admin("salt") && !kind_needs_admin("echo"));
    }
}
