// SPDX-License-Identifier: MPL-2.0
//! The license manager: which key ids need a license session, the sessions themselves (one per
//! stream's PSSHs, fetched and renewed on a tokio runtime), and the waits for their keys.

mod errors;
mod session;

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::cdm::{Cdm, InitDataType, KeyStatus, SessionId};
use crate::fetch::{BodyFormat, RequestHeaders, RetryPolicy, LICENSE_RETRY};
use crate::protocol::KeyId;
use crate::CAT;

pub use errors::{kid_list, Domain, Failure, NoKeyReason, Phase};
pub use session::client;
use session::LicenseSession;

/// Which credentials a license exchange asks upstream for (docs/element-contract.md section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsAsk {
    /// The current ones (`reason=lookup`), read for every exchange as it goes out.
    Lookup,
    /// A fresher token (`reason=unauthorized`): the license server answered 401 to the token
    /// of serial `token_serial`. Upstream refreshes it once, or posts an error saying it
    /// cannot.
    Unauthorized {
        held: u32,
        token_serial: Option<u64>,
    },
    /// Refreshed ones (`reason=forbidden`): the license server answered 403 to the key headers
    /// of audio object generation `held`.
    Forbidden { held: u32 },
}

/// The headers a license request carries and the audio object generation they come from.
#[derive(Clone, Default)]
pub struct Credentials {
    pub headers: RequestHeaders,
    /// `None`: nobody upstream answered, `headers` are the defaults.
    pub generation: Option<u32>,
    /// The serial of the token in `headers.authorization`, to hand back after a 401.
    pub token_serial: Option<u64>,
}

/// What the manager needs from the element that owns it.
pub trait Host: Send + Sync + 'static {
    /// The headers a license request carries (token, User-Agent, key headers). May block: it
    /// asks upstream, which may refresh its token or its audio object over HTTP first. Never
    /// called on the runtime (the sessions call it on tokio's blocking pool).
    fn credentials(&self, ask: CredentialsAsk) -> Credentials;
    /// Tells the application that playback failed. Never called on the runtime.
    fn post(&self, failure: &Failure);
}

/// Counters of the element's `stats` property.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub licenses_requested: u64,
    pub renewals: u64,
    /// Failed HTTP attempts, first requests and renewals alike.
    pub failures: u64,
    pub last_latency: Option<Duration>,
    /// License sessions open.
    pub sessions: u64,
}

/// A license session and the task that fetches and renews its license.
struct OpenSession {
    id: SessionId,
    kids: Vec<KeyId>,
    /// The stream ([`Licensing::stream`]) it was opened for.
    stream: u64,
    task: Option<tokio::task::AbortHandle>,
}

impl OpenSession {
    fn close(self, cdm: &dyn Cdm) {
        if let Some(task) = self.task {
            task.abort();
        }
        cdm.close_session(&self.id);
    }
}

/// Licensing state, shared between the streaming thread and the session tasks.
#[derive(Default)]
struct Licensing {
    flushing: bool,
    /// Widevine `pssh` boxes seen (protection events), deduplicated.
    pssh_boxes: Vec<Vec<u8>>,
    /// `license-url` of the manifest's ContentProtection (protection event field).
    manifest_license_url: Option<String>,
    /// A PSSH arrived that no session covers yet; the request starts at the next buffer, when
    /// every sticky protection event of this stream has been seen (one request for all tiers).
    request_pending: bool,
    /// Key ids some session asked for (or that cannot be asked for: no license URL).
    requested: HashSet<KeyId>,
    no_license_url: bool,
    /// Open license sessions, the current stream's and (until its first license request)
    /// the previous one's.
    sessions: Vec<OpenSession>,
    /// Counts stream-starts: which stream a session was opened for.
    stream: u64,
    /// A license failure ended playback (its error is already posted).
    fatal: bool,
    /// Why the last renewal failed, until one succeeds.
    renewal_failure: Option<String>,
    stats: Stats,
}

#[derive(Default)]
struct Shared {
    state: Mutex<Licensing>,
    /// Signalled when keys arrive, a license fails, or a flush/state change wants waiters out.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Licensing> {
        self.state.lock().unwrap()
    }

    /// Whether `session` is still open (closing one is final: a task that finds its session
    /// closed has nothing left to do or to report).
    fn is_open(&self, session: &SessionId) -> bool {
        self.lock().sessions.iter().any(|s| &s.id == session)
    }

    fn set_fatal(&self) {
        self.lock().fatal = true;
        self.changed.notify_all();
    }
}

/// What a key id lookup needs from the element's settings.
pub struct KeySources<'a> {
    /// Key ids of the `keys` property: never requested.
    pub fixed: &'a dyn Fn(&KeyId) -> bool,
    /// The `license-url` property, which overrides the manifest's.
    pub license_url: Option<String>,
}

/// Why a key wait ended without the key.
#[derive(Debug)]
pub enum WaitError {
    /// A flush or a state change wants the streaming thread out.
    Flushing,
    /// A license failure already reported ended playback.
    Fatal,
    /// This failure ends playback; the caller reports it.
    Failed(Failure),
}

/// Sessions, key waits and the license tasks of one element.
pub struct LicenseManager {
    /// The element's CDM ([`LicenseManager::set_cdm`], at READY).
    cdm: Mutex<Arc<dyn Cdm>>,
    /// How license requests travel (`license-body`, resolved for the CDM).
    body: Mutex<BodyFormat>,
    shared: Arc<Shared>,
    policy: RetryPolicy,
    /// The license client ([`LicenseManager::set_client`]: the element's `ca-file` and
    /// `proxy`).
    http: Mutex<reqwest::Client>,
}

impl LicenseManager {
    pub fn new(cdm: Arc<dyn Cdm>) -> Self {
        Self::with_retry_policy(cdm, LICENSE_RETRY)
    }

    pub fn with_retry_policy(cdm: Arc<dyn Cdm>, policy: RetryPolicy) -> Self {
        LicenseManager {
            cdm: Mutex::new(cdm),
            body: Mutex::default(),
            shared: Arc::default(),
            policy,
            http: Mutex::new(session::client(&Default::default()).unwrap_or_default()),
        }
    }

    /// The client of the license requests from now on.
    pub fn set_client(&self, http: reqwest::Client) {
        *self.http.lock().unwrap() = http;
    }

    pub fn cdm(&self) -> Arc<dyn Cdm> {
        self.cdm.lock().unwrap().clone()
    }

    /// The CDM and license body format of the sessions opened from now on (the element sets
    /// them at READY, with no session open).
    pub fn set_cdm(&self, cdm: Arc<dyn Cdm>, body: BodyFormat) {
        *self.cdm.lock().unwrap() = cdm;
        *self.body.lock().unwrap() = body;
    }

    /// Forgets everything (the element starts).
    pub fn reset(&self) {
        *self.shared.lock() = Licensing::default();
    }

    /// Closes every session (the element stops).
    pub fn stop(&self) {
        let old = std::mem::take(&mut *self.shared.lock());
        let cdm = self.cdm();
        for session in old.sessions {
            session.close(cdm.as_ref());
        }
    }

    /// Wakes a key wait with [`WaitError::Flushing`] while `flushing`.
    pub fn set_flushing(&self, flushing: bool) {
        self.shared.lock().flushing = flushing;
        self.shared.changed.notify_all();
    }

    /// A new stream starts: it brings its own PSSHs. A session over the previous stream's too
    /// would ask for keys the new track's key token does not cover, and the server refuses it.
    pub fn stream_start(&self) {
        let mut state = self.shared.lock();
        state.pssh_boxes.clear();
        state.stream += 1;
    }

    /// A Widevine PSSH (and the manifest's license URL, if the event named one). Returns
    /// whether the PSSH is new; a new one is requested at [`Self::request_missing_keys`].
    pub fn add_pssh(&self, pssh: Vec<u8>, license_url: Option<String>) -> bool {
        let mut state = self.shared.lock();
        if let Some(url) = license_url {
            state.manifest_license_url = Some(url);
        }
        if state.pssh_boxes.contains(&pssh) {
            return false;
        }
        state.pssh_boxes.push(pssh);
        state.request_pending = true;
        true
    }

    /// The manifest's license URL, from a protection event whose PSSH is unusable (the key ids
    /// then come from another PSSH, the init segment's).
    pub fn set_manifest_license_url(&self, url: String) {
        self.shared.lock().manifest_license_url = Some(url);
    }

    /// A PSSH waits for its license request.
    pub fn request_pending(&self) -> bool {
        self.shared.lock().request_pending
    }

    /// Some session asked for `kid` (or it cannot be asked for).
    pub fn is_requested(&self, kid: &KeyId) -> bool {
        self.shared.lock().requested.contains(kid)
    }

    pub fn stats(&self) -> Stats {
        let state = self.shared.lock();
        Stats {
            sessions: state.sessions.len() as u64,
            ..state.stats
        }
    }

    /// Opens a license session for every known key id that no session or fixed key covers
    /// (plus `extra`, a key id seen on a sample but in no PSSH), and starts its task, which
    /// asks `host` for credentials as each of its requests goes out. A CDM that cannot open
    /// the session is reported to `host` and ends playback.
    pub fn request_missing_keys(
        &self,
        sources: KeySources<'_>,
        extra: Option<KeyId>,
        host: &Arc<dyn Host>,
    ) {
        let mut state = self.shared.lock();
        state.request_pending = false;
        let init_data: Vec<u8> = state.pssh_boxes.concat();
        let cdm = self.cdm();
        let mut wanted: Vec<KeyId> =
            crate::protocol::pssh::key_ids_for_systems(&init_data, &cdm.system_ids())
                .unwrap_or_default();
        let extra_outside_pssh = extra.filter(|k| !wanted.contains(k));
        wanted.extend(extra_outside_pssh);
        self.close_sessions_outside(&mut state, &wanted);
        wanted.retain(|k| !(sources.fixed)(k) && !state.requested.contains(k));
        if wanted.is_empty() {
            return;
        }
        let Some(url) = sources
            .license_url
            .or_else(|| state.manifest_license_url.clone())
        else {
            gst::warning!(
                CAT,
                "no license URL (property license-url, or the manifest's): key ids {} can only come from the keys property",
                kid_list(&wanted)
            );
            state.requested.extend(wanted);
            state.no_license_url = true;
            return;
        };
        let created = if extra_outside_pssh.is_none() {
            cdm.create_session(InitDataType::Cenc, &init_data)
        } else {
            let ids: Vec<u8> = wanted.iter().flat_map(|k| k.0).collect();
            cdm.create_session(InitDataType::KeyIds, &ids)
        };
        let (id, message) = match created {
            Ok(s) => s,
            Err(e) => {
                drop(state);
                host.post(&Failure::SessionNotCreated(e));
                self.shared.set_fatal();
                return;
            }
        };
        let kids = cdm.session_key_ids(&id).unwrap_or(wanted);
        state.requested.extend(kids.iter().copied());
        // Open before its task starts, which reports nothing once its session is closed.
        let stream = state.stream;
        state.sessions.push(OpenSession {
            id: id.clone(),
            kids: kids.clone(),
            stream,
            task: None,
        });
        drop(state);

        gst::info!(
            CAT,
            "requesting a license for key ids {} (session {id})",
            kid_list(&kids)
        );
        let session = LicenseSession {
            id: id.clone(),
            kids,
            url,
            policy: self.policy,
            body: *self.body.lock().unwrap(),
            cdm,
            shared: self.shared.clone(),
            host: host.clone(),
            http: self.http.lock().unwrap().clone(),
        };
        let task = session::spawn(session, message.payload);
        if let Some(open) = self.shared.lock().sessions.iter_mut().find(|s| s.id == id) {
            open.task = Some(task);
        }
    }

    /// Closes the sessions of earlier streams that cover none of `current`, the key ids of
    /// the stream now playing: fed one stream after another (the next track through the same
    /// element), the previous stream's session would otherwise keep its keys and renew its
    /// license for as long as this element plays. Its samples have all gone through (the new
    /// stream's first buffer is here). Sessions of the current stream stay, whatever key ids
    /// they cover (a sample may carry one its PSSHs do not name).
    fn close_sessions_outside(&self, state: &mut Licensing, current: &[KeyId]) {
        if current.is_empty() {
            return;
        }
        let stream = state.stream;
        let (stale, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut state.sessions)
            .into_iter()
            .partition(|s| s.stream != stream && !s.kids.iter().any(|k| current.contains(k)));
        state.sessions = kept;
        for session in stale {
            gst::info!(
                CAT,
                "closing session {} (key ids {}): the stream now playing does not use them",
                session.id,
                kid_list(&session.kids)
            );
            for k in &session.kids {
                if !state.sessions.iter().any(|s| s.kids.contains(k)) {
                    state.requested.remove(k);
                }
            }
            session.close(self.cdm().as_ref());
        }
    }

    /// Blocks until `kid` is usable, `timeout` passes, or a flush/state change wakes it.
    /// `announce` runs once, unlocked, when the key is not there at once.
    pub fn wait_for_key(
        &self,
        kid: KeyId,
        timeout: Duration,
        announce: impl FnOnce(),
    ) -> Result<(), WaitError> {
        let deadline = Instant::now() + timeout;
        let mut announce = Some(announce);
        let cdm = self.cdm();
        loop {
            let status = cdm.key_status(&kid);
            if status == Some(KeyStatus::Usable) {
                return Ok(());
            }
            let state = self.shared.lock();
            if state.flushing {
                return Err(WaitError::Flushing);
            }
            if state.fatal {
                return Err(WaitError::Fatal);
            }
            if status == Some(KeyStatus::Expired) {
                if let Some(why) = state.renewal_failure.clone() {
                    return Err(WaitError::Failed(Failure::Expired { kid, why }));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let reason = if state.no_license_url {
                    NoKeyReason::NoLicenseUrl
                } else if state.requested.contains(&kid) {
                    NoKeyReason::NotInTime
                } else {
                    NoKeyReason::NotNamed
                };
                return Err(WaitError::Failed(Failure::NoKey {
                    kid,
                    waited: timeout,
                    reason,
                }));
            }
            if let Some(announce) = announce.take() {
                drop(state);
                gst::info!(CAT, "waiting up to {timeout:?} for key id {kid}");
                announce();
                continue;
            }
            // Bounded so an expiring license is noticed without a notification.
            let wait = (deadline - now).min(Duration::from_millis(100));
            let _ = self.shared.changed.wait_timeout(state, wait).unwrap();
        }
    }
}

impl Drop for LicenseManager {
    /// Session tasks outliving their element would renew licenses nobody uses.
    fn drop(&mut self) {
        let Ok(state) = self.shared.state.lock() else {
            return;
        };
        for task in state.sessions.iter().filter_map(|s| s.task.as_ref()) {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests;
