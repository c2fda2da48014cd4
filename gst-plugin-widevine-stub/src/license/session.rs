// SPDX-License-Identifier: MPL-2.0
//! One license session's network life: the first license, then renewals before expiry, all
//! through one fetch-and-update path, on the plugin's tokio runtime.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::cdm::{Cdm, KeyStatus, LicenseUpdate, SessionId};
use crate::fetch::{fetch_license, BodyFormat, FetchError, Fetched, RequestHeaders, RetryPolicy};
use crate::protocol::KeyId;
use crate::CAT;
use amzmusic_common::http::Transport;

use super::{kid_list, Credentials, CredentialsAsk, Failure, Host, Phase, Shared};

/// One small runtime for the whole plugin: license traffic is a few requests per track.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("widevinedecrypt-net")
        .enable_all()
        .build()
        .expect("tokio runtime")
});

/// The license client of an element whose `ca-file` and `proxy` are `transport`. License
/// requests are rare (one per session, then renewals minutes apart): keeping no idle
/// connection means a stopped pipeline leaves nothing open to the license server. No user
/// agent of its own: each request carries the audio object's.
pub fn client(transport: &Transport) -> Result<reqwest::Client, String> {
    transport
        .client_builder("")
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| format!("cannot build the license client: {e}"))
}

/// A failed renewal is tried again this much later, while the license is still valid.
const RENEWAL_RETRY: Duration = Duration::from_secs(5);

/// Everything a session's requests need; every exchange, first or renewal, goes through
/// [`LicenseSession::exchange`].
pub(super) struct LicenseSession {
    pub id: SessionId,
    pub kids: Vec<KeyId>,
    pub url: String,
    pub policy: RetryPolicy,
    pub body: BodyFormat,
    pub cdm: Arc<dyn Cdm>,
    pub shared: Arc<Shared>,
    pub host: Arc<dyn Host>,
    pub http: reqwest::Client,
}

/// Starts the session's task: its first license from `challenge`, then its renewals.
pub(super) fn spawn(session: LicenseSession, challenge: Vec<u8>) -> tokio::task::AbortHandle {
    RUNTIME.spawn(session.run(challenge)).abort_handle()
}

impl LicenseSession {
    async fn run(self, challenge: Vec<u8>) {
        let mut update = match self.exchange(Phase::First, &challenge).await {
            Ok(u) => u,
            // A failure for a session closed meanwhile (its stream has ended) is nothing to
            // report.
            Err(_) if !self.shared.is_open(&self.id) => return,
            Err(failure) => {
                gst::warning!(CAT, "license request failed: {}", failure.reason());
                self.report(failure).await;
                return;
            }
        };
        log_update(&update, "license");
        self.shared.changed.notify_all();
        // A CDM that schedules its own renewals sends them (an OpenCDM module's challenge
        // callback); the others are asked at the license's renew_at.
        let mut messages = self.cdm.take_messages(&self.id);
        loop {
            let own = match (&mut messages, update.renew_at) {
                (None, None) => return,
                (None, Some(at)) => {
                    tokio::time::sleep_until(at.into()).await;
                    None
                }
                (Some(rx), at) => tokio::select! {
                    m = rx.recv() => match m {
                        Some(m) => Some(m),
                        // The CDM closed the session's message channel: nothing more comes.
                        None => return,
                    },
                    _ = sleep_until_or_never(at) => None,
                },
            };
            let message = match own {
                Some(m) => {
                    gst::info!(
                        CAT,
                        "the CDM sent a {:?} message for session {}",
                        m.kind,
                        self.id
                    );
                    m
                }
                None => match self.cdm.renewal_request(&self.id) {
                    Ok(m) => m,
                    Err(_) if !self.shared.is_open(&self.id) => return,
                    Err(e) => {
                        self.shared.lock().renewal_failure = Some(e.to_string());
                        return;
                    }
                },
            };
            match self.exchange(Phase::Renewal, &message.payload).await {
                Ok(u) => {
                    log_update(&u, "renewal");
                    self.shared.lock().renewal_failure = None;
                    self.shared.changed.notify_all();
                    update = u;
                }
                Err(_) if !self.shared.is_open(&self.id) => return,
                Err(failure) => {
                    let why = failure.reason();
                    gst::warning!(CAT, "license renewal failed: {why}");
                    self.shared.lock().renewal_failure = Some(why);
                    self.shared.changed.notify_all();
                    // Try again while the keys still work; once they expire the streaming
                    // thread fails (`wait_for_key`) rather than output garbage.
                    let retry_at = Instant::now() + RENEWAL_RETRY;
                    match update.expires_at {
                        Some(exp) if retry_at < exp => update.renew_at = Some(retry_at),
                        // A CDM keeping its own clock tells when it is over (its next message
                        // or an expired key status); its last renewal is retried meanwhile.
                        None if messages.is_some() => update.renew_at = Some(retry_at),
                        _ => {
                            gst::warning!(
                                CAT,
                                "giving up renewing key ids {}: the license expires first",
                                kid_list(&self.kids)
                            );
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The one license exchange: POST `challenge` with the credentials current as it goes out
    /// under the retry policy, count it, and hand the license to the CDM.
    async fn exchange(&self, phase: Phase, challenge: &[u8]) -> Result<LicenseUpdate, Failure> {
        {
            let mut state = self.shared.lock();
            match phase {
                Phase::First => state.stats.licenses_requested += 1,
                Phase::Renewal => state.stats.renewals += 1,
            }
        }
        let credentials = self.credentials(CredentialsAsk::Lookup).await;
        gst::debug!(
            CAT,
            "{phase:?} for key ids {} with the credentials of audio object generation {:?}",
            kid_list(&self.kids),
            credentials.generation
        );
        let fetched = self.fetch(challenge, credentials).await;
        let mut state = self.shared.lock();
        match fetched {
            Ok(f) => {
                state.stats.failures += u64::from(f.failures);
                state.stats.last_latency = Some(f.latency);
                drop(state);
                self.cdm
                    .update(&self.id, &f.license)
                    .map_err(Failure::LicenseRejected)
            }
            Err(error) => {
                let failure = Failure::Fetch {
                    error,
                    kids: self.kids.clone(),
                    phase,
                };
                state.stats.failures += u64::from(failure.attempts());
                Err(failure)
            }
        }
    }

    /// [`fetch_license`] with `credentials`, and one more try with fresher ones where the
    /// answer asks for them: after a 401 a refreshed token (`unauthorized`), after a 403 a refreshed
    /// audio object (its key headers may be what the server refused). Upstream is asked on the
    /// blocking pool: its answer may wait on an HTTP refresh. The first pass stops at the
    /// 401/403; the second continues with the fresh headers from the same attempt count and
    /// backoff step, so the pair behaves as one `fetch_license` whose refresh did not block.
    async fn fetch(
        &self,
        challenge: &[u8],
        credentials: Credentials,
    ) -> Result<Fetched, FetchError> {
        let start = Instant::now();
        let wants_refresh = AtomicBool::new(false);
        let mut credentials = credentials;
        credentials.headers.body = self.body;
        let first = fetch_license(
            &self.http,
            &self.url,
            challenge,
            credentials.headers.clone(),
            &self.policy,
            || {
                wants_refresh.store(true, Ordering::Relaxed);
                None
            },
        )
        .await;
        let (done, headers) = match &first {
            Err(FetchError::Server { attempts, .. }) if wants_refresh.load(Ordering::Relaxed) => {
                let ask = CredentialsAsk::Unauthorized {
                    held: credentials.generation.unwrap_or(0),
                    token_serial: credentials.token_serial,
                };
                let fresh = self.credentials(ask).await.headers;
                let old = credentials.headers.authorization.as_ref();
                if fresh.authorization.is_none() || fresh.authorization.as_ref() == old {
                    // Upstream had no fresher token (it posts why when it cannot refresh).
                    return first;
                }
                gst::info!(
                    CAT,
                    "license server refused the access token: retrying with a refreshed one"
                );
                (*attempts, fresh)
            }
            Err(FetchError::Server { error, attempts }) if error.status() == 403 => {
                let held = credentials.generation.unwrap_or(0);
                let fresh = self.credentials(CredentialsAsk::Forbidden { held }).await;
                match fresh.generation {
                    Some(g) if g > held => {
                        gst::info!(
                            CAT,
                            "license server refused audio object generation {held}'s \
                             credentials: retrying with generation {g}'s"
                        );
                        (*attempts, fresh.headers)
                    }
                    _ => return first,
                }
            }
            _ => return first,
        };
        let headers = RequestHeaders {
            body: self.body,
            ..headers
        };
        let rest = RetryPolicy {
            max_attempts: self.policy.max_attempts.saturating_sub(done).max(1),
            base_delay: self.policy.base_delay.saturating_mul(1 << done.min(16)),
            ..self.policy
        };
        match fetch_license(&self.http, &self.url, challenge, headers, &rest, || None).await {
            Ok(f) => Ok(Fetched {
                failures: f.failures + done,
                latency: start.elapsed(),
                ..f
            }),
            Err(FetchError::Server { error, attempts }) => Err(FetchError::Server {
                error,
                attempts: attempts + done,
            }),
            Err(FetchError::Transport { message, attempts }) => Err(FetchError::Transport {
                message,
                attempts: attempts + done,
            }),
            Err(e) => Err(e),
        }
    }

    /// The host's credentials, asked on the blocking pool (the runtime's one worker serves
    /// every session; upstream may answer only after an HTTP refresh).
    async fn credentials(&self, ask: CredentialsAsk) -> Credentials {
        let host = self.host.clone();
        tokio::task::spawn_blocking(move || host.credentials(ask))
            .await
            .unwrap_or_default()
    }

    /// Reports a failure that ends playback, off the runtime (posting runs the application's
    /// bus sync handlers).
    async fn report(&self, failure: Failure) {
        let host = self.host.clone();
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            host.post(&failure);
            shared.set_fatal();
        })
        .await;
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_or_never(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn log_update(update: &LicenseUpdate, what: &str) {
    let usable = update
        .key_statuses
        .iter()
        .filter(|(_, s)| *s == KeyStatus::Usable)
        .count();
    gst::info!(
        CAT,
        "{what} accepted: {usable}/{} key(s) usable, expires in {:?}, renewal in {:?}",
        update.key_statuses.len(),
        update
            .expires_at
            .map(|t| t.saturating_duration_since(Instant::now())),
        update
            .renew_at
            .map(|t| t.saturating_duration_since(Instant::now()))
    );
}
