// SPDX-License-Identifier: MPL-2.0
//! What the emulator's routers share: the content, the signer, the live config, the observers
//! and the services' runtime state. A leaf the server composes and every service reads; it
//! imports no service, so services never import the server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::config::Config;
use crate::content::catalog::{Catalog, Tier};
use crate::content::store::Store;
use crate::observe::{Faults, RequestLog};
use crate::services::tokens::LwaState;
use crate::shaping::Shaper;
use crate::signing::Signer;

/// Where the license server listens (the manifests' `<amz:LicenseUrl>`).
pub const LICENSE_PATH: &str = "/license/v1/widevine";

/// The one state the server's routers run over: content, signer, live config, the shaper,
/// fault rules and request log, and the services' runtime state.
pub struct AppState {
    base_url: OnceLock<String>,
    pub catalog: Arc<Catalog>,
    pub store: Arc<Store>,
    pub signer: Signer,
    pub shaper: Arc<Shaper>,
    pub faults: Faults,
    pub log: RequestLog,
    pub config: Mutex<Config>,
    pub services: ServicesState,
    /// `serve --tls`: whether the port speaks TLS and what its handshakes did.
    pub tls: crate::tls::TlsStatus,
    /// The Clear Key license server's registered keys (`POST /_emulator/clearkey`).
    pub clear_keys: crate::services::clearkey::ClearKeys,
}

impl AppState {
    /// Unix seconds by the emulator's clock (the machine's plus `clock_offset_s`).
    pub fn now_unix(&self) -> u64 {
        let offset = self.config.lock().unwrap().clock_offset_s;
        crate::signing::now_unix().saturating_add_signed(offset)
    }

    pub fn new(catalog: Arc<Catalog>, store: Arc<Store>, config: Config) -> Self {
        AppState {
            base_url: OnceLock::new(),
            catalog,
            store,
            signer: Signer::random(),
            shaper: Arc::new(Shaper::default()),
            faults: Faults::default(),
            log: RequestLog::default(),
            config: Mutex::new(config),
            services: ServicesState::default(),
            tls: Default::default(),
            clear_keys: Default::default(),
        }
    }

    /// Records where the server listens, once it is bound.
    pub fn set_base_url(&self, base: &str) {
        let _ = self.base_url.set(base.to_string());
    }

    /// `http://127.0.0.1:PORT`, known once bound.
    pub fn base_url(&self) -> &str {
        self.base_url.get().map(|s| s.as_str()).unwrap_or("")
    }

    /// The license URL written into manifests as `<amz:LicenseUrl>`.
    pub fn license_url(&self) -> String {
        format!("{}{}", self.base_url(), LICENSE_PATH)
    }

    /// The Clear Key license server's URL (`--key-system clearkey` manifests name it).
    pub fn clearkey_license_url(&self) -> String {
        format!(
            "{}{}",
            self.base_url(),
            crate::services::clearkey::CLEARKEY_LICENSE_PATH
        )
    }
}

/// Runtime state of the services: tokens and device codes, issued audio objects, rate limits.
pub struct ServicesState {
    pub lwa: Mutex<LwaState>,
    audio_objects: Mutex<HashMap<String, IssuedAudioObject>>,
    rate: Mutex<HashMap<String, Bucket>>,
}

impl Default for ServicesState {
    fn default() -> Self {
        ServicesState {
            lwa: Mutex::new(LwaState::default()),
            audio_objects: Mutex::new(HashMap::new()),
            rate: Mutex::new(HashMap::new()),
        }
    }
}

/// What the license server needs to know about an audio object: the best tier it grants.
#[derive(Debug, Clone)]
pub struct IssuedAudioObject {
    pub track_id: String,
    pub top: Tier,
    /// Unix seconds.
    pub expires: u64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl ServicesState {
    /// Remembers an audio object so the license server can hand out only the tiers it grants.
    pub fn record_audio_object(&self, ao: &str, issued: IssuedAudioObject, now_unix: u64) {
        let mut g = self.audio_objects.lock().unwrap();
        g.retain(|_, a| a.expires > now_unix);
        g.insert(ao.to_string(), issued);
    }

    pub fn audio_object(&self, ao: &str) -> Option<IssuedAudioObject> {
        self.audio_objects.lock().unwrap().get(ao).cloned()
    }

    /// Token bucket per API key: `per_s` requests a second, bursts of `per_s`. `Err(secs)` is
    /// the `Retry-After` to answer with.
    pub fn take_rate(&self, key: &str, per_s: u32, now: Instant) -> Result<(), u64> {
        if per_s == 0 {
            return Ok(());
        }
        let rate = per_s as f64;
        let mut g = self.rate.lock().unwrap();
        let b = g.entry(key.to_string()).or_insert(Bucket {
            tokens: rate,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limit_bucket_refills() {
        let s = ServicesState::default();
        let t0 = Instant::now();
        assert!(s.take_rate("k", 2, t0).is_ok());
        assert!(s.take_rate("k", 2, t0).is_ok());
        assert_eq!(s.take_rate("k", 2, t0), Err(1));
        // Another key has its own bucket.
        assert!(s.take_rate("other", 2, t0).is_ok());
        assert!(s.take_rate("k", 2, t0 + Duration::from_millis(600)).is_ok());
        assert!(s.take_rate("k", 0, t0).is_ok());
    }
}
