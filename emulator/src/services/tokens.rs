// SPDX-License-Identifier: MPL-2.0
//! Login with Amazon's token store: device codes, access and refresh tokens, with time passed
//! in so the logic is testable without sleeping. No HTTP here (that is `lwa`).

use rand::Rng;
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
