// SPDX-License-Identifier: MPL-2.0
//! The Login with Amazon token lifecycle: the token file (load, atomic 0600 save), refreshing
//! ahead of expiry and once after a 401, and the device-code flow `amzmusic-login` runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::http::{send_with_retries, HttpError, RetryPolicy, Secret};
use amzmusic_common::http::body_limit;

/// The only scope the Device API needs.
pub const SCOPE: &str = "amazon_music:access";

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (schedules need better than whole seconds).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Whether a refresh point in Unix seconds has been reached.
fn reached(at_secs: u64) -> bool {
    now_unix_ms() >= at_secs.saturating_mul(1000)
}

/// `$AMAZONMUSIC_TOKEN_FILE`'s default: `<config dir>/amazonmusic/token.json`.
pub fn default_token_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("amazonmusic").join("token.json"))
}

/// What `amzmusic-login` writes and the element reads (JSON). Besides the tokens it records
/// the endpoints and ids it logged in with, so a later run needs no configuration at all.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TokenFile {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    #[serde(default = "bearer")]
    pub token_type: String,
    /// Unix seconds when the access token was issued and when it stops working.
    #[serde(default)]
    pub issued_at: u64,
    #[serde(default)]
    pub expires_at: u64,
    /// Lifetime in seconds, read from files that give it instead of `issued_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lwa_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphql_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
}

fn bearer() -> String {
    "bearer".into()
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("cannot write the token file {path}: {message}")]
    Write { path: PathBuf, message: String },
    /// LWA refused the refresh token (revoked, unknown, other client).
    #[error("Login with Amazon refused the refresh token ({code}: {message}); run `amzmusic-login` to sign in again")]
    Refused { code: String, message: String },
    #[error("the access token has expired and there is no refresh token; run `amzmusic-login` to sign in")]
    NoRefreshToken,
    #[error("no access token: run `amzmusic-login`, or set the access-token property or AMAZONMUSIC_ACCESS_TOKEN")]
    NoToken,
    #[error("Login with Amazon: {0}")]
    Http(HttpError),
}

impl TokenFile {
    pub fn load(path: &Path) -> Result<TokenFile, TokenError> {
        let text = std::fs::read(path).map_err(|e| TokenError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        // serde's message names the field and position, never the value.
        Self::from_json(&text).map_err(|e| TokenError::Read {
            path: path.to_owned(),
            message: format!("not a token file: {e}"),
        })
    }

    /// The token file's contents, read as [`load`](Self::load) reads them.
    pub fn from_json(text: &[u8]) -> Result<TokenFile, serde_json::Error> {
        let mut f: TokenFile = serde_json::from_slice(text)?;
        if f.issued_at == 0 && f.expires_at > 0 {
            if let Some(lifetime) = f.expires_in {
                f.issued_at = f.expires_at.saturating_sub(lifetime);
            }
        }
        Ok(f)
    }

    /// Writes the file so that a crash at any point leaves either the old or the new file:
    /// a 0600 temporary file in the same directory, flushed to disk, then renamed over.
    pub fn save_atomic(&self, path: &Path) -> Result<(), TokenError> {
        let err = |e: std::io::Error| TokenError::Write {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        create_private_dir(&dir).map_err(err)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "token.json".into());
        let tmp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            rand::random::<u32>()
        ));
        let json = serde_json::to_vec_pretty(self).expect("token file serializes");
        let result = (|| {
            let mut f = open_private(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, path)?;
            // The rename itself must reach the disk before we forget the old refresh token.
            if let Ok(d) = std::fs::File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(err)
    }

    /// Takes a token answer in (a refresh may or may not rotate the refresh token).
    pub fn apply(&mut self, answer: &TokenAnswer, now: u64) {
        self.access_token = answer.access_token.clone();
        if let Some(r) = &answer.refresh_token {
            self.refresh_token = Some(r.clone());
        }
        self.token_type = answer.token_type.clone().unwrap_or_else(bearer);
        self.issued_at = now;
        self.expires_at = now.saturating_add(answer.expires_in.unwrap_or(3600));
        self.expires_in = answer.expires_in;
    }
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// When to refresh a token valid from `issued_at` to `expires_at`: a fifth of its lifetime
/// before the end, at most five minutes before. Unknown lifetimes (0) mean "do not refresh
/// ahead; wait for a 401".
pub fn refresh_at(issued_at: u64, expires_at: u64) -> Option<u64> {
    if expires_at == 0 {
        return None;
    }
    let lifetime = expires_at.saturating_sub(issued_at);
    let margin = (lifetime / 5).min(300);
    Some(expires_at - margin)
}

/// LWA's token answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenAnswer {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    pub token_type: Option<String>,
    pub expires_in: Option<u64>,
}

/// The device-authorization code pair.
#[derive(Debug, Clone, Deserialize)]
pub struct CodePair {
    pub user_code: String,
    pub device_code: Secret,
    pub verification_uri: String,
    pub expires_in: u64,
    pub interval: u64,
}

/// The longest `expires_in` or `interval` of a code pair taken as meant (LWA says 600 and 5):
/// the login waits and polls by them.
const MAX_CODE_PAIR_SECS: u64 = 86_400;

impl CodePair {
    /// Parses LWA's code pair, refusing waits longer than a day.
    pub fn from_json(body: &[u8]) -> Result<CodePair, String> {
        let pair: CodePair = serde_json::from_slice(body).map_err(|e| format!("code pair: {e}"))?;
        if pair.expires_in > MAX_CODE_PAIR_SECS || pair.interval > MAX_CODE_PAIR_SECS {
            return Err(format!(
                "code pair: expires_in {} s or interval {} s is longer than a day",
                pair.expires_in, pair.interval
            ));
        }
        Ok(pair)
    }
}

/// One poll of the token endpoint during the device flow.
#[derive(Debug)]
pub enum PollOutcome {
    Granted(TokenAnswer),
    /// The user has not approved yet.
    Pending,
    /// Polled faster than the interval: wait longer from now on.
    SlowDown,
    /// The code pair expired: start over with a new one.
    Expired,
}

/// A Login with Amazon client (base URL without a trailing slash).
#[derive(Clone)]
pub struct LwaClient {
    http: reqwest::Client,
    base: String,
    client_id: String,
    policy: RetryPolicy,
}

impl LwaClient {
    pub fn new(http: reqwest::Client, base: &str, client_id: &str, policy: RetryPolicy) -> Self {
        LwaClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            policy,
        }
    }

    async fn post_form(&self, path: &str, form: &[(&str, &str)]) -> Result<Vec<u8>, HttpError> {
        let url = format!("{}{}", self.base, path);
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let ans = send_with_retries(&self.policy, body_limit::API, || {
            self.http
                .post(&url)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .header(reqwest::header::ACCEPT, "application/json")
                .body(body.clone())
        })
        .await?;
        Ok(ans.body)
    }

    /// Trades a refresh token for a new access token.
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<TokenAnswer, TokenError> {
        let body = self
            .post_form(
                "/auth/o2/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh_token.expose()),
                    ("client_id", &self.client_id),
                ],
            )
            .await
            .map_err(|e| match e {
                HttpError::Status {
                    status: 400 | 401,
                    code,
                    message,
                } => TokenError::Refused { code, message },
                e => TokenError::Http(e),
            })?;
        parse_token_answer(&body)
    }

    /// Starts the device flow.
    pub async fn create_code_pair(&self, scope: &str) -> Result<CodePair, TokenError> {
        let body = self
            .post_form(
                "/auth/o2/create/codepair",
                &[
                    ("response_type", "device_code"),
                    ("client_id", &self.client_id),
                    ("scope", scope),
                ],
            )
            .await
            .map_err(TokenError::Http)?;
        CodePair::from_json(&body).map_err(|e| TokenError::Http(HttpError::BadBody(e)))
    }

    /// Asks once whether the user has approved `pair`.
    pub async fn poll(&self, pair: &CodePair) -> Result<PollOutcome, TokenError> {
        let r = self
            .post_form(
                "/auth/o2/token",
                &[
                    ("grant_type", "device_code"),
                    ("device_code", pair.device_code.expose()),
                    ("user_code", &pair.user_code),
                ],
            )
            .await;
        match r {
            Ok(body) => Ok(PollOutcome::Granted(parse_token_answer(&body)?)),
            Err(HttpError::Status { code, message, .. }) => match code.as_str() {
                "authorization_pending" => Ok(PollOutcome::Pending),
                "slow_down" => Ok(PollOutcome::SlowDown),
                "invalid_code_pair" | "expired_token" => Ok(PollOutcome::Expired),
                _ => Err(TokenError::Refused { code, message }),
            },
            Err(e) => Err(TokenError::Http(e)),
        }
    }
}

pub(crate) fn parse_token_answer(body: &[u8]) -> Result<TokenAnswer, TokenError> {
    // The error text of serde never contains the values, only positions.
    serde_json::from_slice(body)
        .map_err(|e| TokenError::Http(HttpError::BadBody(format!("token answer: {e}"))))
}

/// Where the tokens came from decides where a refresh is written back.
#[derive(Debug, Clone)]
pub struct TokenSource {
    pub tokens: TokenFile,
    /// The token file to write refreshed tokens to (only when the refresh token came from it).
    pub write_back: Option<PathBuf>,
}

struct ManagerState {
    tokens: TokenFile,
    /// +1 per refresh, so that a caller that saw a 401 with token N refreshes only once even
    /// when several callers saw it.
    serial: u64,
    /// LWA refused the refresh token: it will not change its mind, so do not ask again.
    refused: Option<(String, String)>,
}

/// Hands out the current access token, refreshing it when due, once per 401, and writing it
/// back to the token file.
pub struct TokenManager {
    lwa: Option<LwaClient>,
    write_back: Option<PathBuf>,
    state: tokio::sync::Mutex<ManagerState>,
    /// Refreshes done (for stats and tests).
    refreshes: std::sync::atomic::AtomicU64,
}

impl TokenManager {
    pub fn new(source: TokenSource, lwa: Option<LwaClient>) -> Arc<Self> {
        Arc::new(TokenManager {
            lwa,
            write_back: source.write_back,
            state: tokio::sync::Mutex::new(ManagerState {
                tokens: source.tokens,
                serial: 0,
                refused: None,
            }),
            refreshes: Default::default(),
        })
    }

    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The token to use now and its serial; refreshes first when it is due.
    pub async fn current(&self) -> Result<(Secret, u64), TokenError> {
        let mut st = self.state.lock().await;
        if st.tokens.access_token.is_empty() {
            if st.tokens.refresh_token.is_none() {
                return Err(TokenError::NoToken);
            }
            self.refresh_locked(&mut st).await?;
        } else if refresh_at(st.tokens.issued_at, st.tokens.expires_at).is_some_and(reached)
            && st.tokens.refresh_token.is_some()
        {
            self.refresh_locked(&mut st).await?;
        }
        Ok((st.tokens.access_token.clone(), st.serial))
    }

    /// The token and its serial without any network call (for lookups), if there is one.
    pub async fn peek(&self) -> Option<(Secret, u64)> {
        let st = self.state.lock().await;
        (!st.tokens.access_token.is_empty()).then(|| (st.tokens.access_token.clone(), st.serial))
    }

    /// The serial of the token held now.
    pub async fn serial(&self) -> u64 {
        self.state.lock().await.serial
    }

    /// When the current token should be refreshed ahead of time (None: never).
    pub async fn due_at(&self) -> Option<u64> {
        let st = self.state.lock().await;
        st.tokens.refresh_token.as_ref()?;
        refresh_at(st.tokens.issued_at, st.tokens.expires_at)
    }

    /// A service said 401 to the token with `serial`: refresh once (the first caller does;
    /// later callers with the same serial get the new token).
    pub async fn unauthorized(&self, serial: u64) -> Result<(Secret, u64), TokenError> {
        let mut st = self.state.lock().await;
        if st.serial == serial {
            if st.tokens.refresh_token.is_none() {
                return Err(TokenError::NoRefreshToken);
            }
            self.refresh_locked(&mut st).await?;
        }
        Ok((st.tokens.access_token.clone(), st.serial))
    }

    /// Refreshes if the token is due (the element's timer calls this).
    pub async fn refresh_if_due(&self) -> Result<bool, TokenError> {
        let mut st = self.state.lock().await;
        let due = refresh_at(st.tokens.issued_at, st.tokens.expires_at).is_some_and(reached);
        if due && st.tokens.refresh_token.is_some() {
            self.refresh_locked(&mut st).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn refresh_locked(&self, st: &mut ManagerState) -> Result<(), TokenError> {
        let (Some(lwa), Some(refresh)) = (&self.lwa, st.tokens.refresh_token.clone()) else {
            return Err(TokenError::NoRefreshToken);
        };
        if let Some((code, message)) = &st.refused {
            return Err(TokenError::Refused {
                code: code.clone(),
                message: message.clone(),
            });
        }
        let answer = match lwa.refresh(&refresh).await {
            Ok(a) => a,
            Err(TokenError::Refused { code, message }) => {
                st.refused = Some((code.clone(), message.clone()));
                return Err(TokenError::Refused { code, message });
            }
            Err(e) => return Err(e),
        };
        let mut next = st.tokens.clone();
        next.apply(&answer, now_unix());
        if let Some(path) = &self.write_back {
            // Write first: if that fails we still use the new token, but say so.
            next.save_atomic(path)?;
        }
        st.tokens = next;
        st.serial += 1;
        self.refreshes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TokenFile {
        TokenFile {
            access_token: Secret::new("Atza|a"),
            refresh_token: Some(Secret::new("Atzr|r")),
            token_type: "bearer".into(),
            issued_at: 1000,
            expires_at: 4600,
            scope: Some(SCOPE.into()),
            client_id: Some("amzn1.application-oa2-client.x".into()),
            ..Default::default()
        }
    }

    #[test]
    fn refresh_point_is_a_fifth_before_expiry_at_most_five_minutes() {
        assert_eq!(refresh_at(1000, 4600), Some(4300));
        assert_eq!(refresh_at(1000, 1010), Some(1008));
        assert_eq!(refresh_at(0, 0), None);
    }

    #[cfg(unix)]
    #[test]
    fn save_is_private_and_round_trips() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("token.json");
        let t = sample();
        t.save_atomic(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(TokenFile::load(&path).unwrap(), t);
        // Overwriting leaves no temporary file behind.
        t.save_atomic(&path).unwrap();
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    #[test]
    fn load_errors_never_echo_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.json");
        std::fs::write(&path, "{\"access_token\": 5, \"x\": \"Atza|leak\"}").unwrap();
        let e = TokenFile::load(&path).unwrap_err().to_string();
        assert!(!e.contains("leak"), "{e}");
    }

    #[test]
    fn apply_keeps_the_refresh_token_when_not_rotated() {
        let mut t = sample();
        t.apply(
            &TokenAnswer {
                access_token: Secret::new("Atza|b"),
                refresh_token: None,
                token_type: None,
                expires_in: Some(60),
            },
            2000,
        );
        assert_eq!(t.access_token.expose(), "Atza|b");
        assert_eq!(t.refresh_token.as_ref().unwrap().expose(), "Atzr|r");
        assert_eq!((t.issued_at, t.expires_at), (2000, 2060));
    }

    #[test]
    fn absurd_lifetimes_do_not_overflow() {
        // Seen while writing the api_json fuzz target (kept as its corpus's crash-expires-in;
        // 10^7 runs did not reach it by mutation): "expires_in": u64::MAX overflowed
        // `now + expires_in`.
        let answer =
            parse_token_answer(br#"{"access_token":"Atza|x","expires_in":18446744073709551615}"#)
                .unwrap();
        let mut t = sample();
        t.apply(&answer, 1000);
        assert_eq!(t.expires_at, u64::MAX);
        assert!(refresh_at(t.issued_at, t.expires_at).is_some());
        // A code pair's waits end up in `Instant::now() + …` in amzmusic-login.
        let pair = br#"{"user_code":"U","device_code":"D","verification_uri":"http://h/a",
            "expires_in":18446744073709551615,"interval":5}"#;
        assert!(CodePair::from_json(pair)
            .unwrap_err()
            .contains("longer than a day"));
        let pair = br#"{"user_code":"U","device_code":"D","verification_uri":"http://h/a",
            "expires_in":600,"interval":5}"#;
        assert_eq!(CodePair::from_json(pair).unwrap().interval, 5);
    }

    #[test]
    fn token_file_debug_hides_tokens() {
        let s = format!("{:?}", sample());
        assert!(!s.contains("Atza|a") && !s.contains("Atzr|r"), "{s}");
    }
}
