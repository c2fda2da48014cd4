//! Login with Amazon: device authorization (code pair, polling, approval), token refresh, and
//! the token store every other service checks access tokens against.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ApiError;
use crate::server::AppState;
use crate::signing::random_id;

/// User codes avoid letters and digits people confuse (0/O, 1/I/L).
const USER_CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
const USER_CODE_LEN: usize = 6;

/// What an access token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessGrant {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expires_at: Instant,
}

struct RefreshGrant {
    client_id: String,
    scopes: Vec<String>,
}

struct DeviceCode {
    user_code: String,
    client_id: String,
    scopes: Vec<String>,
    expires_at: Instant,
    interval: Duration,
    last_poll: Option<Instant>,
    approved: bool,
}

/// A fresh token pair. Not `Debug`: it holds secrets.
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

/// A new device authorization.
pub struct CodePair {
    pub device_code: String,
    pub user_code: String,
    pub expires_in: u64,
    pub interval: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Unknown,
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollError {
    /// Not approved yet: poll again after `interval`.
    Pending,
    /// Polled sooner than `interval` after the previous poll.
    SlowDown,
    /// Unknown, expired or already redeemed device code, or a user code that does not match.
    InvalidCodePair,
}

impl PollError {
    pub fn code(self) -> &'static str {
        match self {
            PollError::Pending => "authorization_pending",
            PollError::SlowDown => "slow_down",
            PollError::InvalidCodePair => "invalid_code_pair",
        }
    }
}

/// Device codes, access and refresh tokens. Time is passed in so the logic is testable
/// without sleeping.
#[derive(Default)]
pub struct LwaState {
    codes: HashMap<String, DeviceCode>,
    access: HashMap<String, AccessGrant>,
    refresh: HashMap<String, RefreshGrant>,
}

impl LwaState {
    pub fn create_code_pair(
        &mut self,
        client_id: &str,
        scopes: Vec<String>,
        lifetime: Duration,
        interval: Duration,
        now: Instant,
    ) -> CodePair {
        self.codes.retain(|_, c| c.expires_at > now);
        let user_code = loop {
            let mut rng = rand::thread_rng();
            let code: String = (0..USER_CODE_LEN)
                .map(|_| USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())] as char)
                .collect();
            if !self.codes.values().any(|c| c.user_code == code) {
                break code;
            }
        };
        let device_code = random_id(24);
        self.codes.insert(
            device_code.clone(),
            DeviceCode {
                user_code: user_code.clone(),
                client_id: client_id.to_string(),
                scopes,
                expires_at: now + lifetime,
                interval,
                last_poll: None,
                approved: false,
            },
        );
        CodePair {
            device_code,
            user_code,
            expires_in: lifetime.as_secs(),
            interval: interval.as_secs(),
        }
    }

    /// Approves the live code pair with this user code (what the user does on the page).
    pub fn approve(&mut self, user_code: &str, now: Instant) -> bool {
        let wanted = user_code.trim().to_ascii_uppercase();
        match self
            .codes
            .values_mut()
            .find(|c| c.user_code == wanted && c.expires_at > now)
        {
            Some(c) => {
                c.approved = true;
                true
            }
            None => false,
        }
    }

    /// One poll of the token endpoint with a device code. Every poll, slow or not, restarts
    /// the interval, so a client that keeps hammering never gets through.
    pub fn poll(
        &mut self,
        device_code: &str,
        user_code: Option<&str>,
        lifetime: Duration,
        now: Instant,
    ) -> Result<TokenPair, PollError> {
        let c = self
            .codes
            .get_mut(device_code)
            .ok_or(PollError::InvalidCodePair)?;
        if c.expires_at <= now
            || user_code.is_some_and(|u| !u.trim().eq_ignore_ascii_case(&c.user_code))
        {
            return Err(PollError::InvalidCodePair);
        }
        let too_soon = c
            .last_poll
            .is_some_and(|last| now.saturating_duration_since(last) < c.interval);
        c.last_poll = Some(now);
        if too_soon {
            return Err(PollError::SlowDown);
        }
        if !c.approved {
            return Err(PollError::Pending);
        }
        let c = self.codes.remove(device_code).expect("present");
        Ok(self.issue(&c.client_id, c.scopes, lifetime, now))
    }

    /// Issues a token pair (also used to pre-issue the `--env-file` token).
    pub fn issue(
        &mut self,
        client_id: &str,
        scopes: Vec<String>,
        lifetime: Duration,
        now: Instant,
    ) -> TokenPair {
        let refresh_token = format!("Atzr|{}", random_id(32));
        self.refresh.insert(
            refresh_token.clone(),
            RefreshGrant {
                client_id: client_id.to_string(),
                scopes: scopes.clone(),
            },
        );
        let mut pair = self.access_token(client_id, scopes, lifetime, now);
        pair.refresh_token = refresh_token;
        pair
    }

    fn access_token(
        &mut self,
        client_id: &str,
        scopes: Vec<String>,
        lifetime: Duration,
        now: Instant,
    ) -> TokenPair {
        self.access.retain(|_, g| g.expires_at > now);
        let access_token = format!("Atza|{}", random_id(32));
        self.access.insert(
            access_token.clone(),
            AccessGrant {
                client_id: client_id.to_string(),
                scopes,
                expires_at: now + lifetime,
            },
        );
        TokenPair {
            access_token,
            refresh_token: String::new(),
            expires_in: lifetime.as_secs(),
        }
    }

    /// A new access token for a refresh token; the refresh token stays valid (as LWA's do).
    pub fn refresh(
        &mut self,
        refresh_token: &str,
        client_id: Option<&str>,
        lifetime: Duration,
        now: Instant,
    ) -> Option<TokenPair> {
        let g = self.refresh.get(refresh_token)?;
        if client_id.is_some_and(|c| c != g.client_id) {
            return None;
        }
        let (client, scopes) = (g.client_id.clone(), g.scopes.clone());
        let mut pair = self.access_token(&client, scopes, lifetime, now);
        pair.refresh_token = refresh_token.to_string();
        Some(pair)
    }

    pub fn revoke_refresh(&mut self, refresh_token: &str) -> bool {
        self.refresh.remove(refresh_token).is_some()
    }

    pub fn validate(&self, access_token: &str, now: Instant) -> Result<AccessGrant, TokenError> {
        let g = self.access.get(access_token).ok_or(TokenError::Unknown)?;
        if g.expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(g.clone())
    }
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/o2/create/codepair", post(create_code_pair))
        .route("/auth/o2/token", post(token))
        .route("/activate", get(activate_page).post(activate))
        .route("/_emulator/lwa/approve", post(admin_approve))
}

fn oauth_error(status: StatusCode, code: &str, message: &str) -> Response {
    // OAuth clients read `error_description`; the emulator's own shape is `message`.
    (
        status,
        Json(json!({ "error": code, "error_description": message, "message": message })),
    )
        .into_response()
}

type FormMap = Result<Form<HashMap<String, String>>, FormRejection>;

// The error is the finished answer.
#[allow(clippy::result_large_err)]
fn form_fields(f: FormMap) -> Result<HashMap<String, String>, Response> {
    f.map(|Form(m)| m).map_err(|_| {
        oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send an application/x-www-form-urlencoded body",
        )
    })
}

fn field<'a>(m: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    m.get(name).map(|s| s.trim()).filter(|s| !s.is_empty())
}

async fn create_code_pair(State(state): State<Arc<AppState>>, form: FormMap) -> Response {
    let m = match form_fields(form) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if field(&m, "response_type") != Some("device_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            "response_type must be device_code",
        );
    }
    let Some(client_id) = field(&m, "client_id") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "client_id is required",
        );
    };
    let scopes: Vec<String> = field(&m, "scope")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if scopes.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope is required (amazon_music:access for the music API)",
        );
    }
    let (lifetime, interval) = {
        let c = state.config.lock().unwrap();
        (c.device_code_lifetime_s, c.device_poll_interval_s)
    };
    let pair = state.services.lwa.lock().unwrap().create_code_pair(
        client_id,
        scopes.clone(),
        Duration::from_secs(lifetime),
        Duration::from_secs(interval),
        Instant::now(),
    );
    tracing::debug!(
        "lwa: new device authorization for client {client_id}, scopes {scopes:?}, expires in {lifetime} s"
    );
    Json(json!({
        "user_code": pair.user_code,
        "device_code": pair.device_code,
        "verification_uri": format!("{}/activate", state.base_url()),
        "expires_in": pair.expires_in,
        "interval": pair.interval,
    }))
    .into_response()
}

fn token_answer(pair: TokenPair) -> Response {
    Json(json!({
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": "bearer",
        "expires_in": pair.expires_in,
    }))
    .into_response()
}

async fn token(State(state): State<Arc<AppState>>, form: FormMap) -> Response {
    let m = match form_fields(form) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let lifetime = Duration::from_secs(state.config.lock().unwrap().token_lifetime_s);
    let now = Instant::now();
    match field(&m, "grant_type") {
        Some("device_code") => {
            let Some(device_code) = field(&m, "device_code") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "device_code is required",
                );
            };
            let r = state.services.lwa.lock().unwrap().poll(
                device_code,
                field(&m, "user_code"),
                lifetime,
                now,
            );
            match r {
                Ok(pair) => {
                    tracing::debug!("lwa: device authorization redeemed, token issued");
                    token_answer(pair)
                }
                Err(e) => {
                    tracing::trace!("lwa: device code poll: {}", e.code());
                    let msg = match e {
                        PollError::Pending => "the user has not approved the code yet: poll again after `interval` seconds",
                        PollError::SlowDown => "polled sooner than `interval` seconds after the previous poll: slow down",
                        PollError::InvalidCodePair => "the device code is unknown, expired or already used: start again with create/codepair",
                    };
                    oauth_error(StatusCode::BAD_REQUEST, e.code(), msg)
                }
            }
        }
        Some("refresh_token") => {
            let Some(refresh_token) = field(&m, "refresh_token") else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required",
                );
            };
            let r = state.services.lwa.lock().unwrap().refresh(
                refresh_token,
                field(&m, "client_id"),
                lifetime,
                now,
            );
            match r {
                Some(pair) => {
                    tracing::debug!("lwa: access token refreshed");
                    token_answer(pair)
                }
                None => oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "the refresh token is unknown or revoked (or issued to another client_id): log in again",
                ),
            }
        }
        _ => oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be device_code or refresh_token",
        ),
    }
}

const PAGE_STYLE: &str =
    "<style>body{font-family:sans-serif;max-width:30em;margin:3em auto}</style>";

async fn activate_page() -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><title>Amazon Music emulator: link a device</title>{PAGE_STYLE}</head><body>\
         <h1>Link a device</h1><p>Enter the code your device shows.</p>\
         <form method=\"post\" action=\"/activate\"><input name=\"user_code\" autofocus autocomplete=\"off\">\
         <button type=\"submit\">Approve</button></form></body></html>"
    ))
}

async fn activate(State(state): State<Arc<AppState>>, form: FormMap) -> Response {
    let code = form
        .ok()
        .and_then(|Form(m)| m.get("user_code").cloned())
        .unwrap_or_default();
    if state
        .services
        .lwa
        .lock()
        .unwrap()
        .approve(&code, Instant::now())
    {
        tracing::debug!("lwa: device authorization approved on the page");
        Html(format!(
            "<!doctype html><html><head><title>Approved</title>{PAGE_STYLE}</head><body>\
             <h1>Device linked</h1><p>You can return to your device.</p></body></html>"
        ))
        .into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Html(format!(
                "<!doctype html><html><head><title>Unknown code</title>{PAGE_STYLE}</head><body>\
                 <h1>Unknown or expired code</h1><p>Check the code on your device, or start again.</p>\
                 <p><a href=\"/activate\">Try again</a></p></body></html>"
            )),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct ApproveRequest {
    user_code: String,
}

async fn admin_approve(
    State(state): State<Arc<AppState>>,
    Json(req): Json<ApproveRequest>,
) -> Response {
    if state
        .services
        .lwa
        .lock()
        .unwrap()
        .approve(&req.user_code, Instant::now())
    {
        StatusCode::NO_CONTENT.into_response()
    } else {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_user_code",
            "no live device authorization has this user code",
        )
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn device_flow_pending_slow_down_approve_token() {
        let mut s = LwaState::default();
        let t0 = Instant::now();
        let p = s.create_code_pair("c", vec!["amazon_music:access".into()], MIN, 5 * SEC, t0);
        assert_eq!(p.user_code.len(), USER_CODE_LEN);
        assert_eq!((p.expires_in, p.interval), (60, 5));
        let poll = |s: &mut LwaState, at| {
            s.poll(&p.device_code, Some(&p.user_code), MIN, t0 + at)
                .map(|t| t.access_token)
        };
        assert_eq!(poll(&mut s, SEC), Err(PollError::Pending));
        assert_eq!(poll(&mut s, 2 * SEC), Err(PollError::SlowDown));
        // The slow poll restarted the interval.
        assert_eq!(poll(&mut s, 6 * SEC), Err(PollError::SlowDown));
        assert!(s.approve(&p.user_code.to_lowercase(), t0 + 7 * SEC));
        let tok = poll(&mut s, 12 * SEC).unwrap();
        assert!(tok.starts_with("Atza|"));
        let g = s.validate(&tok, t0 + 13 * SEC).unwrap();
        assert_eq!(g.scopes, vec!["amazon_music:access".to_string()]);
        // Redeemed codes are gone.
        assert_eq!(poll(&mut s, 20 * SEC), Err(PollError::InvalidCodePair));
    }

    #[test]
    fn expired_and_mismatched_codes() {
        let mut s = LwaState::default();
        let t0 = Instant::now();
        let p = s.create_code_pair("c", vec!["x".into()], 10 * SEC, SEC, t0);
        assert_eq!(
            s.poll(&p.device_code, Some("WRONG1"), MIN, t0).err(),
            Some(PollError::InvalidCodePair)
        );
        assert!(!s.approve(&p.user_code, t0 + 10 * SEC));
        assert_eq!(
            s.poll(&p.device_code, None, MIN, t0 + 10 * SEC).err(),
            Some(PollError::InvalidCodePair)
        );
        assert_eq!(
            s.poll("nope", None, MIN, t0).err(),
            Some(PollError::InvalidCodePair)
        );
    }

    #[test]
    fn tokens_expire_and_refresh() {
        let mut s = LwaState::default();
        let t0 = Instant::now();
        let pair = s.issue("c", vec!["a".into()], 2 * SEC, t0);
        assert!(pair.refresh_token.starts_with("Atzr|"));
        assert!(s.validate(&pair.access_token, t0 + SEC).is_ok());
        assert_eq!(
            s.validate(&pair.access_token, t0 + 2 * SEC),
            Err(TokenError::Expired)
        );
        assert_eq!(s.validate("Atza|x", t0), Err(TokenError::Unknown));
        let new = s
            .refresh(&pair.refresh_token, Some("c"), MIN, t0 + 3 * SEC)
            .unwrap();
        assert_ne!(new.access_token, pair.access_token);
        assert_eq!(new.refresh_token, pair.refresh_token);
        assert!(s.validate(&new.access_token, t0 + 4 * SEC).is_ok());
        assert!(s
            .refresh(&pair.refresh_token, Some("other"), MIN, t0)
            .is_none());
        assert!(s.revoke_refresh(&pair.refresh_token));
        assert!(s.refresh(&pair.refresh_token, None, MIN, t0).is_none());
    }
}
