// SPDX-License-Identifier: MPL-2.0
//! One playing track: the clients it needs and its current audio object with a generation
//! number, refreshed at most once however many askers want a newer one at the same time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::api::{self, ApiError, AudioObject, MusicApi};
use crate::config::Resolved;
use crate::firefly::{self, Auth, FireflyError, TrackMetadata};
use crate::http::{self, HttpError, RetryPolicy, API_RETRY};
use crate::token::{now_unix_ms, LwaClient, TokenManager};

/// The audio object in use and its place in the sequence of refreshes.
#[derive(Debug, Clone)]
pub struct Current {
    /// 1 for the first audio object, +1 per refresh.
    pub generation: u32,
    pub audio: AudioObject,
    /// Unix milliseconds when it was fetched.
    pub obtained_at_ms: u64,
}

impl Current {
    /// When to fetch the next one on our own: at 70 % of its lifetime, before the demuxer's
    /// own deadline (80 %, docs/element-contract.md), so its request finds a newer one ready.
    /// In Unix milliseconds.
    pub fn refresh_at_ms(&self) -> u64 {
        refresh_point_ms(self.obtained_at_ms, self.audio.expires)
    }

    /// Milliseconds it had to live when fetched (0: it came expired).
    pub fn lifetime_ms(&self) -> u64 {
        self.audio
            .expires
            .saturating_mul(1000)
            .saturating_sub(self.obtained_at_ms)
    }

    /// It had less than a second to live when it came: a service whose clock (or ours) is off,
    /// or that hands out expired objects. Asking again at once would get another, so it is
    /// asked for at most every [`EXPIRED_RETRY_MS`] (and the refresher backs off).
    pub fn arrived_expired(&self) -> bool {
        self.lifetime_ms() < 1000
    }

    /// Fetched in the first tenth of its lifetime: asking again would get nothing better, so an
    /// `expiring` request is answered with it (no refresh storm when lifetimes are short).
    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.obtained_at_ms + self.lifetime_ms() / 10
    }

    /// It arrived expired less than [`EXPIRED_RETRY_MS`] ago: another asked for now would be
    /// as expired, so an `expiring` request is answered with it.
    pub fn expired_recently_fetched(&self, now_ms: u64) -> bool {
        self.arrived_expired() && now_ms < self.obtained_at_ms + EXPIRED_RETRY_MS
    }
}

/// How long an audio object that arrived expired answers `expiring` requests before another
/// is fetched.
pub const EXPIRED_RETRY_MS: u64 = 5_000;

/// 70 % of the way from `obtained_at_ms` to `expires` (Unix seconds), in Unix milliseconds.
pub fn refresh_point_ms(obtained_at_ms: u64, expires: u64) -> u64 {
    let lifetime = expires.saturating_mul(1000).saturating_sub(obtained_at_ms);
    obtained_at_ms + lifetime * 7 / 10
}

pub struct Session {
    pub cfg: Resolved,
    pub track_id: String,
    /// The `X-Amzn-Audio-Device-Capability` value asked for.
    pub capability: String,
    pub http: reqwest::Client,
    pub tokens: Arc<TokenManager>,
    pub api: MusicApi,
    pub firefly: Option<firefly::Client>,
    pub policy: RetryPolicy,
    /// Held across a refresh, so concurrent askers wait for it and then see its result.
    refresh_lock: tokio::sync::Mutex<()>,
    current: Mutex<Option<Current>>,
    audio_object_calls: AtomicU64,
}

impl Session {
    pub fn new(cfg: Resolved, track_id: &str, capability: &str) -> Result<Arc<Session>, String> {
        let http = http::client(&cfg.user_agent, &cfg.tls)?;
        let policy = API_RETRY;
        let lwa = match (&cfg.lwa_endpoint, &cfg.client_id) {
            (Some(base), client_id) => Some(LwaClient::new(
                http.clone(),
                base,
                client_id.as_deref().unwrap_or(""),
                policy,
            )),
            _ => None,
        };
        let tokens = TokenManager::new(cfg.tokens.clone(), lwa);
        let api = MusicApi {
            http: http.clone(),
            base: cfg.api_endpoint.clone(),
            api_key: cfg.api_key.clone(),
            market: cfg.market.clone(),
            tokens: tokens.clone(),
            policy,
        };
        let firefly = cfg.graphql_endpoint.as_ref().map(|url| firefly::Client {
            http: http.clone(),
            url: url.clone(),
            api_key: cfg.api_key.clone(),
            device_id: cfg.device_id.clone(),
            device_type: cfg.device_type.clone(),
            market: cfg.market.clone(),
            session_id: firefly::new_session_id(),
            feature_flags: cfg.feature_flags.clone(),
            policy,
        });
        Ok(Arc::new(Session {
            track_id: track_id.to_string(),
            capability: capability.to_string(),
            http,
            tokens,
            api,
            firefly,
            policy,
            cfg,
            refresh_lock: tokio::sync::Mutex::new(()),
            current: Mutex::new(None),
            audio_object_calls: AtomicU64::new(0),
        }))
    }

    /// The audio object in use, without any network call.
    pub fn current(&self) -> Option<Current> {
        self.current.lock().unwrap().clone()
    }

    /// How many times the music API was asked for an audio object.
    pub fn audio_object_calls(&self) -> u64 {
        self.audio_object_calls.load(Ordering::Relaxed)
    }

    /// Makes sure there is an audio object newer than generation `held`: returns the current
    /// one when it already is (no API call), otherwise fetches one (generation + 1). Askers
    /// that arrive during a fetch wait for it and share its result.
    pub async fn refresh(&self, held: u32) -> Result<Current, ApiError> {
        let _guard = self.refresh_lock.lock().await;
        if let Some(c) = self.current() {
            if c.generation > held {
                return Ok(c);
            }
        }
        self.audio_object_calls.fetch_add(1, Ordering::Relaxed);
        let audio = self
            .api
            .audio_object(&self.track_id, &self.capability)
            .await?;
        let next = Current {
            generation: self.current().map(|c| c.generation + 1).unwrap_or(1),
            audio,
            obtained_at_ms: now_unix_ms(),
        };
        *self.current.lock().unwrap() = Some(next.clone());
        Ok(next)
    }

    /// The manifest of the current audio object.
    pub async fn manifest(&self, current: &Current) -> Result<Vec<u8>, HttpError> {
        api::fetch_manifest(&self.http, &current.audio, &self.policy).await
    }

    /// The track's metadata from FireFly, authenticated as the token calls for.
    pub async fn metadata(&self) -> Result<TrackMetadata, FireflyError> {
        let Some(ff) = &self.firefly else {
            return Err(FireflyError::GraphQl(
                "no GraphQL endpoint configured (graphql-endpoint, AMAZONMUSIC_GRAPHQL_ENDPOINT)"
                    .into(),
            ));
        };
        let token = self.tokens.current().await.ok().map(|(t, _)| t);
        let auth = Auth::for_token(token, &self.cfg.device_id, &self.cfg.device_type);
        ff.track(&self.track_id, &auth).await
    }

    /// Downloads a cover image; returns its bytes and media type.
    pub async fn cover(&self, url: &str) -> Result<(Vec<u8>, Option<String>), HttpError> {
        let policy = RetryPolicy {
            max_attempts: 2,
            ..self.policy
        };
        let limit = amzmusic_common::http::body_limit::IMAGE;
        let resp = http::send_with_retries(&policy, limit, || self.http.get(url)).await?;
        let kind = sniff_image(&resp.body).map(str::to_string);
        Ok((resp.body, kind))
    }
}

/// The media type of image bytes, from their magic numbers.
pub fn sniff_image(b: &[u8]) -> Option<&'static str> {
    if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if b.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if b.len() > 12 && &b[0..4] == b"RIFF" && &b[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_that_arrived_expired_answers_expiring_requests_for_a_while() {
        let c = |obtained_at_ms, expires| Current {
            generation: 1,
            audio: AudioObject {
                track_id: "T".into(),
                manifest_url: crate::http::Secret::new("u"),
                expires,
                quality: "HD".into(),
                drm_type: "WIDEVINE".into(),
                headers: Default::default(),
            },
            obtained_at_ms,
        };
        // An hour to live: fresh for its first tenth (6 min), not after.
        let hour = c(1_000_000, 1_000 + 3600);
        assert!(!hour.arrived_expired());
        assert!(hour.is_fresh(1_000_000 + 359_000));
        assert!(!hour.is_fresh(1_000_000 + 361_000));
        // Expired on arrival: never fresh, but answered for EXPIRED_RETRY_MS, so a demuxer
        // asking "expiring" over and over costs one API call per 5 s, not one per request.
        let dead = c(1_000_000, 999);
        assert!(dead.arrived_expired() && !dead.is_fresh(1_000_000));
        assert!(dead.expired_recently_fetched(1_000_000 + EXPIRED_RETRY_MS - 1));
        assert!(!dead.expired_recently_fetched(1_000_000 + EXPIRED_RETRY_MS));
        assert!(!hour.expired_recently_fetched(1_000_000));
    }

    #[test]
    fn own_refresh_comes_before_the_demuxers() {
        // The demuxer refreshes at 80 % of the remaining lifetime.
        assert_eq!(refresh_point_ms(1_000_000, 4600), 1_000_000 + 2_520_000);
        assert!(refresh_point_ms(1_000_000, 1010) < 1_008_000);
        assert_eq!(refresh_point_ms(1_000_500, 1005), 1_000_500 + 3150);
        assert_eq!(refresh_point_ms(1_000_000, 900), 1_000_000);
    }

    #[test]
    fn fresh_means_the_first_tenth_of_the_lifetime() {
        let c = |obtained_at_ms| Current {
            generation: 1,
            audio: AudioObject {
                track_id: "T".into(),
                manifest_url: crate::http::Secret::new("u"),
                expires: 1100,
                quality: "HD".into(),
                drm_type: "WIDEVINE".into(),
                headers: Default::default(),
            },
            obtained_at_ms,
        };
        assert!(c(1_000_000).is_fresh(1_009_999));
        assert!(!c(1_000_000).is_fresh(1_010_000));
        assert!(!c(1_200_000).is_fresh(1_200_000), "already expired");
    }

    #[test]
    fn images_are_recognised() {
        assert_eq!(sniff_image(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff_image(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(sniff_image(b"<html>"), None);
    }
}
