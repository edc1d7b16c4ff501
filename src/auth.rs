//! Bearer-token authentication of the receivers and the API, as the collector's `bearertokenauth`: a request
//! carries `Authorization: Bearer <token>` (gRPC metadata `authorization`), and the token must be one of the
//! listener's. Tokens are read once at startup from a file or an environment variable, compared in constant time,
//! and never logged or shown: `Debug` prints how many there are. An API token may be bound to a team
//! (`<token> team=<owner>`), whose queue the ops console then shows its bearer.

use ordertrail_core::config::{AuthConfig, TokenSource};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("`{key}`: cannot read bearer token file `{path}`: {source}")]
    File { key: String, path: String, source: std::io::Error },
    #[error("`{key}`: environment variable `{name}` is not set or not UTF-8")]
    Env { key: String, name: String },
    #[error("`{key}`: {origin} holds no token")]
    Empty { key: String, origin: String },
    #[error("`{key}`: line {line} of {origin}: {reason}")]
    Line { key: String, origin: String, line: usize, reason: String },
    #[error("`{key}`: a token is bound to team `{team}`, which owns no milestone or exception class")]
    UnknownTeam { key: String, team: String },
}

/// Who presented an accepted token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The team the token is bound to, if any.
    pub team: Option<String>,
}

/// The tokens a listener accepts, kept as SHA-256 digests: a presented token is hashed and the digests compared,
/// so that neither the time taken nor an early exit says how long a token is or how much of a guess was right.
pub struct BearerTokens {
    tokens: Vec<([u8; 32], Option<String>)>,
}

impl std::fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BearerTokens({} tokens)", self.tokens.len())
    }
}

impl BearerTokens {
    /// Reads the tokens: the lines of a file (blank lines and `#` comments skipped), or one environment variable.
    /// A line is a token, optionally followed by `team=<owner>`.
    pub fn load(config: &AuthConfig) -> Result<BearerTokens, AuthError> {
        let (text, origin) = match &config.tokens {
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| AuthError::File {
                    key: config.key.clone(),
                    path: path.display().to_string(),
                    source,
                })?;
                (text, format!("file `{}`", path.display()))
            }
            TokenSource::Env(name) => {
                let text =
                    std::env::var(name).map_err(|_| AuthError::Env { key: config.key.clone(), name: name.clone() })?;
                (text, format!("environment variable `{name}`"))
            }
        };
        let mut tokens = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let token = parts.next().unwrap_or_default();
            let mut team = None;
            for part in parts {
                match part.strip_prefix("team=") {
                    Some(name) if !name.is_empty() => team = Some(name.to_string()),
                    // The rest of the line is not shown: it may be a token pasted in the wrong place.
                    _ => {
                        return Err(AuthError::Line {
                            key: config.key.clone(),
                            origin,
                            line: number + 1,
                            reason: "after the token only `team=<owner>` may follow".into(),
                        })
                    }
                }
            }
            tokens.push((digest(token.as_bytes()), team));
        }
        if tokens.is_empty() {
            return Err(AuthError::Empty { key: config.key.clone(), origin });
        }
        Ok(BearerTokens { tokens })
    }

    /// Whether an `Authorization` header value carries one of the tokens. The scheme is matched without regard
    /// to case, as HTTP wants; every token is compared whole, so the time taken says nothing about how much of
    /// a guess was right.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        self.caller(authorization).is_some()
    }

    /// Who an `Authorization` header value's token belongs to, when it is one of the tokens.
    pub fn caller(&self, authorization: Option<&[u8]>) -> Option<Caller> {
        let value = authorization?;
        let presented = value.get(7..).filter(|_| value[..7].eq_ignore_ascii_case(b"bearer "))?;
        let presented = digest(presented.trim_ascii());
        // Every token is compared, whichever matches.
        let mut found = None;
        for (token, team) in &self.tokens {
            if digests_equal(token, &presented) {
                found = Some(Caller { team: team.clone() });
            }
        }
        found
    }

    /// The teams tokens are bound to.
    pub fn teams(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().filter_map(|(_, team)| team.as_deref())
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token).into()
}

/// Compares two digests looking at every byte, whatever the first difference.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    std::hint::black_box(a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y))) == 0
}

/// Loads a listener's tokens when it has `auth`.
pub fn load(config: Option<&AuthConfig>) -> Result<Option<std::sync::Arc<BearerTokens>>, AuthError> {
    config.map(|c| BearerTokens::load(c).map(std::sync::Arc::new)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> BearerTokens {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, text).unwrap();
        BearerTokens::load(&AuthConfig { tokens: TokenSource::File(path), key: "api.auth".into() }).unwrap()
    }

    #[test]
    fn a_request_must_carry_one_of_the_tokens_with_the_bearer_scheme() {
        let t = tokens("# rotated 2026-11\nalpha-token\n\n  beta-token  \n");
        assert!(t.allows(Some(b"Bearer alpha-token")));
        assert!(t.allows(Some(b"bearer beta-token")));
        assert!(t.allows(Some(b"BEARER  beta-token ")));
        assert!(!t.allows(None));
        assert!(!t.allows(Some(b"Bearer alpha")));
        assert!(!t.allows(Some(b"Bearer alpha-token-and-more")));
        assert!(!t.allows(Some(b"Basic alpha-token")));
        assert!(!t.allows(Some(b"alpha-token")));
        assert!(!t.allows(Some(b"Bearer # rotated 2026-11")), "comments are not tokens");
    }

    #[test]
    fn a_token_may_be_bound_to_a_team() {
        let t = tokens("warehouse-token team=warehouse-operations\nplain-token\n");
        assert_eq!(t.caller(Some(b"Bearer warehouse-token")).unwrap().team.as_deref(), Some("warehouse-operations"));
        assert_eq!(t.caller(Some(b"Bearer plain-token")), Some(Caller { team: None }));
        assert_eq!(t.caller(Some(b"Bearer team=warehouse-operations")), None);
        assert_eq!(t.teams().collect::<Vec<_>>(), ["warehouse-operations"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad");
        std::fs::write(&path, "tok another-secret\n").unwrap();
        let err = BearerTokens::load(&AuthConfig { tokens: TokenSource::File(path), key: "api.auth".into() })
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("team=<owner>") && !err.contains("another-secret"), "{err}");
    }

    #[test]
    fn tokens_are_never_shown_and_a_source_without_one_is_an_error_naming_the_key() {
        let t = tokens("s3cr3t\n");
        assert_eq!(format!("{t:?}"), "BearerTokens(1 tokens)");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty");
        std::fs::write(&path, "# nothing yet\n").unwrap();
        let err = BearerTokens::load(&AuthConfig { tokens: TokenSource::File(path), key: "api.auth".into() })
            .unwrap_err()
            .to_string();
        assert!(err.contains("`api.auth`") && err.contains("holds no token"), "{err}");
        let err = BearerTokens::load(&AuthConfig {
            tokens: TokenSource::Env("ORDERTRAIL_TEST_TOKEN_THAT_IS_NOT_SET".into()),
            key: "receivers.otlp.protocols.grpc.auth".into(),
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("ORDERTRAIL_TEST_TOKEN_THAT_IS_NOT_SET"), "{err}");
    }
}
