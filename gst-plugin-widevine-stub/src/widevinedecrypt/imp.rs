// SPDX-License-Identifier: MPL-2.0
//! Element glue for `widevinedecrypt`: caps x-cenc → original type, protection meta → CENC
//! decryption through the CDM, license requests on a tokio runtime, interruptible key waits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use crate::cdm::{Cdm, CdmError, InitDataType, KeyStatus, LicenseUpdate, SessionId, StubCdm};
use crate::cenc::{self, Pattern, SampleProtection, Scheme, Subsample};
use crate::fetch::{bearer, fetch_license, FetchError, RequestHeaders, RetryPolicy};
use crate::protocol::{parse_pssh_boxes, KeyId, WIDEVINE_SYSTEM_ID_STR};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "widevinedecrypt",
        gst::DebugColorFlags::empty(),
        Some("Widevine (stub CDM) CENC decryptor"),
    )
});

/// One small runtime for the whole plugin: license traffic is a few requests per track.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("widevinedecrypt-net")
        .enable_all()
        .build()
        .expect("tokio runtime")
});

/// License requests are rare (one per session, then renewals minutes apart): keeping no idle
/// connection means a stopped pipeline leaves nothing open to the license server.
static HTTP: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap_or_default()
});

/// Original media types this element restores.
const MEDIA_TYPES: [&str; 4] = ["audio/x-flac", "audio/x-opus", "audio/x-eac3", "audio/mpeg"];
const DEFAULT_KEY_TIMEOUT_MS: u32 = 20_000;
const DEFAULT_LICENSE_EXPIRATION_SECS: u32 = 0;
/// Name of the element message posted while a sample waits for its key.
const WAITING_MESSAGE: &str = "widevinedecrypt-waiting-for-key";
/// The upstream query of docs/element-contract.md section 2.
const AUDIO_OBJECT_QUERY: &str = "amazonmusic-audio-object";

struct Settings {
    /// From the `keys` property; used directly, never requested.
    keys: HashMap<KeyId, cenc::Key>,
    license_url: Option<String>,
    key_timeout: Duration,
    license_expiration_secs: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keys: HashMap::new(),
            license_url: None,
            key_timeout: Duration::from_millis(DEFAULT_KEY_TIMEOUT_MS.into()),
            license_expiration_secs: DEFAULT_LICENSE_EXPIRATION_SECS,
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Stats {
    licenses_requested: u64,
    renewals: u64,
    failures: u64,
    last_latency: Option<Duration>,
}

/// A license session, the key ids it asked for, and the task that fetches and renews its
/// license.
struct OpenSession {
    id: SessionId,
    kids: Vec<KeyId>,
    /// The stream ([`State::stream`]) it was opened for.
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

/// Licensing state, shared between the streaming thread and the network tasks.
#[derive(Default)]
struct State {
    flushing: bool,
    /// The stream is FLAC: lets cbcs clear-lead samples be recognised (README).
    flac: bool,
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
    /// A license failure ended playback (its error message is already posted).
    fatal: bool,
    renewal_failure: Option<String>,
    stats: Stats,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when keys arrive, a license fails, or a flush/state change wants waiters out.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Whether `session` is still open (closing one is final: a task that finds its session
    /// closed has nothing left to do or to report).
    fn is_open(&self, session: &SessionId) -> bool {
        self.lock().sessions.iter().any(|s| &s.id == session)
    }
}

pub struct WidevineDecrypt {
    settings: Mutex<Settings>,
    shared: Arc<Shared>,
    cdm: Arc<dyn Cdm>,
    /// The FLAC `streamheader` of the stream's clear sample entry. 1.22's qtdemux drops it for
    /// the `enca` entry, so at the clear-lead → encrypted switch the caps would lose it and
    /// flacparse would re-send its headers mid-stream (flacdec then re-stamps frames, a 300 ms
    /// jump back): the encrypted caps get the same header. Reset at each stream-start.
    flac_streamheader: Mutex<Option<glib::SendValue>>,
}

impl Default for WidevineDecrypt {
    fn default() -> Self {
        WidevineDecrypt {
            settings: Mutex::default(),
            shared: Arc::default(),
            // A licensed CDM would be constructed here instead (docs/cdm.md).
            cdm: Arc::new(StubCdm::new()),
            flac_streamheader: Mutex::default(),
        }
    }
}

/// What the protection meta of one buffer says (copied out: the meta is removed afterwards).
struct SampleInfo {
    kid: KeyId,
    scheme: Scheme,
    iv: Vec<u8>,
    subsamples: Vec<Subsample>,
    pattern: Pattern,
}

fn parse_keys(value: &str) -> Result<HashMap<KeyId, cenc::Key>, String> {
    let mut keys = HashMap::new();
    for pair in value
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|p| !p.is_empty())
    {
        let (kid, key) = pair
            .split_once(':')
            .ok_or_else(|| "each entry must be KID:KEY".to_owned())?;
        let kid: KeyId = kid.parse().map_err(|_| format!("bad key id {kid:?}"))?;
        // The key itself is never echoed in the message.
        let key: [u8; 16] = hex::decode(key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| format!("key for {kid} is not 32 hex digits"))?;
        keys.insert(kid, cenc::Key::new(key));
    }
    Ok(keys)
}

fn buffer_bytes(s: &gst::StructureRef, field: &str) -> Option<Vec<u8>> {
    let buf = s.get::<gst::Buffer>(field).ok()?;
    let map = buf.map_readable().ok()?;
    Some(map.as_slice().to_vec())
}

fn uint(s: &gst::StructureRef, field: &str) -> Option<u32> {
    s.get::<u32>(field)
        .ok()
        .or_else(|| s.get::<i32>(field).ok().map(|v| v as u32))
}

/// Reads qtdemux's protection meta; `Ok(None)` for a clear sample.
fn sample_info(s: &gst::StructureRef) -> Result<Option<SampleInfo>, String> {
    if !s.get::<bool>("encrypted").unwrap_or(true) {
        return Ok(None);
    }
    let kid = buffer_bytes(s, "kid")
        .and_then(|k| KeyId::from_slice(&k))
        .ok_or("protection meta has no 16-byte kid")?;
    let scheme = match s.get::<&str>("cipher-mode").unwrap_or("cenc") {
        "cenc" => Scheme::Cenc,
        "cbcs" => Scheme::Cbcs,
        other => return Err(format!("unsupported cipher mode {other:?}")),
    };
    // cbcs with a constant IV (tenc) has iv_size 0; qtdemux 1.22 then puts the constant IV in
    // `iv` (with constant_iv_size), other versions in `constant_iv`.
    let iv = match uint(s, "iv_size").unwrap_or(0) {
        0 => buffer_bytes(s, "constant_iv").or_else(|| buffer_bytes(s, "iv")),
        _ => buffer_bytes(s, "iv"),
    }
    .ok_or("protection meta has no iv")?;
    let count = uint(s, "subsample_count").unwrap_or(0) as usize;
    let mut subsamples = Vec::with_capacity(count);
    if count > 0 {
        let raw = buffer_bytes(s, "subsamples").ok_or("protection meta has no subsamples")?;
        if raw.len() < count * 6 {
            return Err(format!(
                "{count} subsamples announced, {} bytes given",
                raw.len()
            ));
        }
        for e in raw.chunks_exact(6).take(count) {
            subsamples.push(Subsample {
                clear: u16::from_be_bytes([e[0], e[1]]).into(),
                protected: u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
            });
        }
    }
    if count > 0 && subsamples.iter().all(|s| s.protected == 0) {
        // Every byte in the clear: a clear-lead sample described explicitly (amzdashdemux
        // marks constant-IV clear lead this way, see its clear_lead.rs). No key needed.
        return Ok(None);
    }
    let pattern = Pattern {
        crypt: uint(s, "crypt_byte_block").unwrap_or(0).min(255) as u8,
        skip: uint(s, "skip_byte_block").unwrap_or(0).min(255) as u8,
    };
    Ok(Some(SampleInfo {
        kid,
        scheme,
        iv,
        subsamples,
        pattern,
    }))
}

impl WidevineDecrypt {
    /// The current token, User-Agent and key headers from `amazonmusicsrc` (contract section
    /// 2), or defaults when nobody upstream answers.
    fn lookup_credentials(&self) -> RequestHeaders {
        let mut headers = RequestHeaders {
            user_agent: concat!("gst-widevine-stub/", env!("CARGO_PKG_VERSION")).into(),
            ..Default::default()
        };
        let mut query = gst::query::Custom::new(
            gst::Structure::builder(AUDIO_OBJECT_QUERY)
                .field("reason", "lookup")
                .field("generation", 0u32)
                .build(),
        );
        let answered = self.obj().sink_pad().peer_query(&mut query);
        let creds = answered
            .then(|| query.structure())
            .flatten()
            .and_then(|s| s.get::<glib::Object>("credentials").ok());
        if let Some(creds) = creds {
            if let Some(auth) = string_property(&creds, "authorization") {
                headers.authorization = Some(bearer(&auth));
            }
            if let Some(ua) = string_property(&creds, "user-agent") {
                headers.user_agent = ua;
            }
            let key_headers = creds.find_property("key-headers").and_then(|_| {
                creds
                    .property_value("key-headers")
                    .get::<gst::Structure>()
                    .ok()
            });
            if let Some(key_headers) = key_headers {
                for (name, value) in key_headers.iter() {
                    if let Ok(v) = value.get::<String>() {
                        headers.extra.push((name.to_string(), v));
                    }
                }
            }
            gst::debug!(
                CAT,
                imp = self,
                "credentials from upstream: token {}, {} key header(s)",
                if headers.authorization.is_some() {
                    "present"
                } else {
                    "absent"
                },
                headers.extra.len()
            );
        } else {
            gst::debug!(
                CAT,
                imp = self,
                "no credentials upstream; license request carries none"
            );
        }
        let secs = self.settings.lock().unwrap().license_expiration_secs;
        headers.license_expiration_secs = (secs > 0).then_some(secs);
        headers
    }

    fn on_protection_event(&self, event: &gst::event::Protection) {
        let (system_id, data, origin) = event.get();
        if !system_id.eq_ignore_ascii_case(WIDEVINE_SYSTEM_ID_STR) {
            gst::debug!(
                CAT,
                imp = self,
                "ignoring protection event for system {system_id}"
            );
            return;
        }
        let Ok(map) = data.map_readable() else { return };
        let bytes = map.as_slice().to_vec();
        match parse_pssh_boxes(&bytes) {
            Ok(boxes) if boxes.iter().any(|b| b.is_widevine()) => {}
            Ok(_) | Err(_) => {
                gst::warning!(
                    CAT,
                    imp = self,
                    "protection event from {origin:?} holds no Widevine pssh"
                );
                return;
            }
        }
        let url = event
            .structure()
            .and_then(|s| s.get::<String>("license-url").ok());
        let mut state = self.shared.lock();
        if let Some(url) = url {
            state.manifest_license_url = Some(url);
        }
        if !state.pssh_boxes.contains(&bytes) {
            gst::info!(
                CAT,
                imp = self,
                "Widevine pssh from {origin:?} ({} bytes)",
                bytes.len()
            );
            state.pssh_boxes.push(bytes);
            state.request_pending = true;
        }
    }

    /// Starts a license request for every known key id that no session or `keys` entry covers
    /// (plus `extra`, a key id seen on a sample but in no PSSH).
    fn request_missing_keys(&self, extra: Option<KeyId>) {
        let settings = self.settings.lock().unwrap();
        let mut state = self.shared.lock();
        state.request_pending = false;
        let init_data: Vec<u8> = state.pssh_boxes.concat();
        let mut wanted: Vec<KeyId> = crate::protocol::widevine_init_data(&init_data)
            .map(|d| d.key_ids)
            .unwrap_or_default();
        let extra_outside_pssh = extra.filter(|k| !wanted.contains(k));
        wanted.extend(extra_outside_pssh);
        self.close_sessions_outside(&mut state, &wanted);
        wanted.retain(|k| !settings.keys.contains_key(k) && !state.requested.contains(k));
        if wanted.is_empty() {
            return;
        }
        let Some(url) = settings
            .license_url
            .clone()
            .or_else(|| state.manifest_license_url.clone())
        else {
            gst::warning!(
                CAT,
                imp = self,
                "no license URL (property license-url, or the manifest's): key ids {} can only come from the keys property",
                kid_list(&wanted)
            );
            state.requested.extend(wanted);
            state.no_license_url = true;
            return;
        };
        let created = if extra_outside_pssh.is_none() {
            self.cdm.create_session(InitDataType::Cenc, &init_data)
        } else {
            let ids: Vec<u8> = wanted.iter().flat_map(|k| k.0).collect();
            self.cdm.create_session(InitDataType::KeyIds, &ids)
        };
        let (session, message) = match created {
            Ok(s) => s,
            Err(e) => {
                drop(state);
                drop(settings);
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Decrypt,
                    ["The CDM cannot start a license session: {}", e]
                );
                self.set_fatal();
                return;
            }
        };
        let kids = self.cdm.session_key_ids(&session).unwrap_or(wanted);
        state.requested.extend(kids.iter().copied());
        // Open before its task starts, which reports nothing once its session is closed.
        let stream = state.stream;
        state.sessions.push(OpenSession {
            id: session.clone(),
            kids: kids.clone(),
            stream,
            task: None,
        });
        drop(state);
        drop(settings);

        gst::info!(
            CAT,
            imp = self,
            "requesting a license for key ids {} (session {session})",
            kid_list(&kids)
        );
        let headers = self.lookup_credentials();
        let element = self.obj().downgrade();
        let handle = RUNTIME.spawn(license_task(
            element,
            self.cdm.clone(),
            self.shared.clone(),
            url,
            session.clone(),
            message.payload,
            headers,
            kids,
        ));
        if let Some(open) = self
            .shared
            .lock()
            .sessions
            .iter_mut()
            .find(|s| s.id == session)
        {
            open.task = Some(handle.abort_handle());
        }
    }

    /// Closes the sessions of earlier streams that cover none of `current`, the key ids of
    /// the stream now playing: fed one stream after another (the next track through the same
    /// element), the previous stream's session would otherwise keep its keys and renew its
    /// license for as long as this element plays. Its samples have all gone through (the new stream's first buffer is here).
    /// Sessions of the current stream stay, whatever key ids they cover (a sample may carry
    /// one its PSSHs do not name).
    fn close_sessions_outside(&self, state: &mut State, current: &[KeyId]) {
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
                imp = self,
                "closing session {} (key ids {}): the stream now playing does not use them",
                session.id,
                kid_list(&session.kids)
            );
            for k in &session.kids {
                if !state.sessions.iter().any(|s| s.kids.contains(k)) {
                    state.requested.remove(k);
                }
            }
            session.close(self.cdm.as_ref());
        }
    }

    fn set_fatal(&self) {
        self.shared.lock().fatal = true;
        self.shared.changed.notify_all();
    }

    fn set_flushing(&self, flushing: bool) {
        self.shared.lock().flushing = flushing;
        self.shared.changed.notify_all();
    }

    /// Blocks until `kid` is usable, the key timeout passes, or a flush/state change wakes it.
    fn wait_for_key(&self, kid: KeyId) -> Result<(), gst::FlowError> {
        let timeout = self.settings.lock().unwrap().key_timeout;
        let deadline = Instant::now() + timeout;
        let mut announced = false;
        loop {
            let status = self.cdm.key_status(&kid);
            if status == Some(KeyStatus::Usable) {
                return Ok(());
            }
            let state = self.shared.lock();
            if state.flushing {
                return Err(gst::FlowError::Flushing);
            }
            if state.fatal {
                return Err(gst::FlowError::Error);
            }
            if status == Some(KeyStatus::Expired) {
                if let Some(why) = state.renewal_failure.clone() {
                    drop(state);
                    gst::element_imp_error!(
                        self,
                        gst::StreamError::DecryptNokey,
                        [
                            "The license for key id {} expired and its renewal failed: {}",
                            kid,
                            why
                        ]
                    );
                    return Err(gst::FlowError::Error);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                let why = if state.no_license_url {
                    "no license URL is known and the keys property does not hold it"
                } else if state.requested.contains(&kid) {
                    "the license did not arrive in time"
                } else {
                    "no license names it"
                };
                drop(state);
                gst::element_imp_error!(
                    self,
                    gst::StreamError::DecryptNokey,
                    [
                        "No key for key id {} after waiting {} ms: {}",
                        kid,
                        timeout.as_millis(),
                        why
                    ]
                );
                return Err(gst::FlowError::Error);
            }
            if !announced {
                announced = true;
                drop(state);
                gst::info!(
                    CAT,
                    imp = self,
                    "waiting up to {timeout:?} for key id {kid}"
                );
                let _ = self.obj().post_message(
                    gst::message::Element::builder(
                        gst::Structure::builder(WAITING_MESSAGE)
                            .field("kid", kid.to_string())
                            .field("timeout-ms", timeout.as_millis() as u64)
                            .build(),
                    )
                    .src(&*self.obj())
                    .build(),
                );
                continue;
            }
            // Bounded so an expiring license is noticed without a notification.
            let wait = (deadline - now).min(Duration::from_millis(100));
            let _ = self.shared.changed.wait_timeout(state, wait).unwrap();
        }
    }

    fn decrypt(&self, info: &SampleInfo, data: &mut [u8]) -> Result<(), gst::FlowError> {
        let protection = SampleProtection {
            scheme: info.scheme,
            iv: &info.iv,
            subsamples: &info.subsamples,
            pattern: info.pattern,
        };
        let fixed_key = self.settings.lock().unwrap().keys.get(&info.kid).cloned();
        if self.is_clear_cbcs_flac(info, &protection, fixed_key.as_ref(), data) {
            gst::trace!(
                CAT,
                imp = self,
                "clear FLAC frame marked encrypted: passing through"
            );
            return Ok(());
        }
        let result = match fixed_key {
            Some(key) => cenc::decrypt_in_place(&key, &protection, data).map_err(CdmError::from),
            None => {
                if self.cdm.key_status(&info.kid) != Some(KeyStatus::Usable) {
                    if !self.shared.lock().requested.contains(&info.kid) {
                        self.request_missing_keys(Some(info.kid));
                    }
                    self.wait_for_key(info.kid)?;
                }
                self.cdm.decrypt(&info.kid, &protection, data)
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(CdmError::KeyExpired { kid, .. }) => {
                // Raced with expiry: wait for the renewal (or fail clearly).
                self.wait_for_key(kid)?;
                self.cdm
                    .decrypt(&kid, &protection, data)
                    .map_err(|e| self.decrypt_error(e))
            }
            Err(e) => Err(self.decrypt_error(e)),
        }
    }

    /// qtdemux 1.22 marks every sample of a cbcs track encrypted, clear lead included. For
    /// FLAC the frame header tells: a clear frame starts with a valid one (CRC-8 checked), an
    /// encrypted one does so only by chance (~2^-22), and when the key is at hand the first
    /// block decrypted settles even that case.
    fn is_clear_cbcs_flac(
        &self,
        info: &SampleInfo,
        protection: &SampleProtection<'_>,
        fixed_key: Option<&cenc::Key>,
        data: &[u8],
    ) -> bool {
        if info.scheme != Scheme::Cbcs
            || info.subsamples.first().is_some_and(|s| s.clear != 0)
            || !self.shared.lock().flac
            || !crate::flac::starts_with_frame_header(data)
            || data.len() < 16
        {
            return false;
        }
        let mut first = [0u8; 16];
        first.copy_from_slice(&data[..16]);
        let one_block = SampleProtection {
            subsamples: &[],
            pattern: Pattern::default(),
            ..*protection
        };
        let decrypted = match fixed_key {
            Some(key) => cenc::decrypt_in_place(key, &one_block, &mut first).is_ok(),
            None if self.cdm.key_status(&info.kid) == Some(KeyStatus::Usable) => {
                self.cdm.decrypt(&info.kid, &one_block, &mut first).is_ok()
            }
            // No key yet: a valid header is taken as clear, so the clear lead never waits.
            None => return true,
        };
        !(decrypted && crate::flac::starts_with_frame_header(&first))
    }

    fn decrypt_error(&self, e: CdmError) -> gst::FlowError {
        gst::element_imp_error!(
            self,
            gst::StreamError::Decrypt,
            ["Cannot decrypt sample: {}", e]
        );
        gst::FlowError::Error
    }
}

fn string_property(obj: &glib::Object, name: &str) -> Option<String> {
    obj.find_property(name)?;
    obj.property_value(name)
        .get::<Option<String>>()
        .ok()
        .flatten()
}

fn kid_list(kids: &[KeyId]) -> String {
    kids.iter()
        .map(KeyId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Posts the GStreamer error of docs/license-protocol.md's table for a failed license fetch.
fn post_fetch_error(
    element: &super::WidevineDecrypt,
    err: &FetchError,
    kids: &[KeyId],
    renewal: bool,
) {
    let what = if renewal {
        "license renewal"
    } else {
        "license request"
    };
    let msg = match err {
        FetchError::Server { error, .. } => match error.status() {
            404 => gst::error_msg!(
                gst::StreamError::DecryptNokey,
                (
                    "The license server has no key for key ids {}: {}",
                    kid_list(kids),
                    err
                )
            ),
            401 | 403 => gst::error_msg!(
                gst::ResourceError::NotAuthorized,
                ("The license server refused the {}: {}", what, err)
            ),
            429 | 500..=599 => gst::error_msg!(
                gst::ResourceError::Read,
                (
                    "The license server stayed unavailable for the {}: {}",
                    what,
                    err
                )
            ),
            _ => gst::error_msg!(
                gst::StreamError::Decrypt,
                ("The license server rejected the {}: {}", what, err)
            ),
        },
        FetchError::Transport { .. } => gst::error_msg!(
            gst::ResourceError::Read,
            (
                "The license server could not be reached for the {}: {}",
                what,
                err
            )
        ),
        FetchError::BadBody(_) => gst::error_msg!(
            gst::StreamError::Decrypt,
            ("The {} got an answer that is not a license: {}", what, err)
        ),
    };
    element.post_error_message(msg);
}

#[allow(clippy::too_many_arguments)]
async fn license_task(
    element: glib::WeakRef<super::WidevineDecrypt>,
    cdm: Arc<dyn Cdm>,
    shared: Arc<Shared>,
    url: String,
    session: SessionId,
    challenge: Vec<u8>,
    headers: RequestHeaders,
    kids: Vec<KeyId>,
) {
    let policy = RetryPolicy::default();
    let refresh = || {
        element
            .upgrade()
            .and_then(|e| e.imp().lookup_credentials().authorization)
    };
    shared.lock().stats.licenses_requested += 1;
    let fetched = fetch_license(&HTTP, &url, &challenge, headers.clone(), &policy, refresh).await;
    let Some(obj) = element.upgrade() else { return };
    // A failure for a session closed meanwhile (its stream has ended) is nothing to report.
    let update = match fetched {
        Ok(f) => {
            {
                let mut state = shared.lock();
                state.stats.failures += u64::from(f.failures);
                state.stats.last_latency = Some(f.latency);
            }
            match cdm.update(&session, &f.license) {
                Ok(u) => u,
                Err(_) if !shared.is_open(&session) => return,
                Err(e) => {
                    gst::element_error!(
                        obj,
                        gst::StreamError::Decrypt,
                        ["The license was rejected by the CDM: {}", e]
                    );
                    obj.imp().set_fatal();
                    return;
                }
            }
        }
        Err(e) => {
            if !shared.is_open(&session) {
                return;
            }
            shared.lock().stats.failures += match &e {
                FetchError::Server { attempts, .. } | FetchError::Transport { attempts, .. } => {
                    u64::from(*attempts)
                }
                FetchError::BadBody(_) => 1,
            };
            gst::warning!(CAT, obj = obj, "license request failed: {e}");
            post_fetch_error(&obj, &e, &kids, false);
            obj.imp().set_fatal();
            return;
        }
    };
    log_update(&obj, &update, "license");
    shared.changed.notify_all();
    drop(obj);
    renew_loop(element, cdm, shared, url, session, headers, kids, update).await;
}

fn log_update(obj: &super::WidevineDecrypt, update: &LicenseUpdate, what: &str) {
    let usable = update
        .key_statuses
        .iter()
        .filter(|(_, s)| *s == KeyStatus::Usable)
        .count();
    gst::info!(
        CAT,
        obj = obj,
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

/// Renews before expiry. A failed renewal is retried while the license is valid; when it
/// expires the streaming thread errors out (`wait_for_key`) rather than output garbage.
#[allow(clippy::too_many_arguments)]
async fn renew_loop(
    element: glib::WeakRef<super::WidevineDecrypt>,
    cdm: Arc<dyn Cdm>,
    shared: Arc<Shared>,
    url: String,
    session: SessionId,
    headers: RequestHeaders,
    kids: Vec<KeyId>,
    mut update: LicenseUpdate,
) {
    let policy = RetryPolicy::default();
    while let Some(renew_at) = update.renew_at {
        tokio::time::sleep_until(renew_at.into()).await;
        let message = match cdm.renewal_request(&session) {
            Ok(m) => m,
            Err(_) if !shared.is_open(&session) => return,
            Err(e) => {
                shared.lock().renewal_failure = Some(e.to_string());
                return;
            }
        };
        shared.lock().stats.renewals += 1;
        let refresh = || {
            element
                .upgrade()
                .and_then(|e| e.imp().lookup_credentials().authorization)
        };
        let fetched = fetch_license(
            &HTTP,
            &url,
            &message.payload,
            headers.clone(),
            &policy,
            refresh,
        )
        .await;
        let Some(obj) = element.upgrade() else { return };
        let result = match fetched {
            Ok(f) => {
                let mut state = shared.lock();
                state.stats.failures += u64::from(f.failures);
                state.stats.last_latency = Some(f.latency);
                drop(state);
                cdm.update(&session, &f.license).map_err(|e| e.to_string())
            }
            Err(e) => {
                shared.lock().stats.failures += 1;
                Err(e.to_string())
            }
        };
        match result {
            Ok(u) => {
                log_update(&obj, &u, "renewal");
                shared.lock().renewal_failure = None;
                shared.changed.notify_all();
                update = u;
            }
            Err(_) if !shared.is_open(&session) => return,
            Err(why) => {
                gst::warning!(CAT, obj = obj, "license renewal failed: {why}");
                shared.lock().renewal_failure = Some(why);
                shared.changed.notify_all();
                // Try again while the keys still work; give up once they expired.
                let retry_at = Instant::now() + Duration::from_secs(5);
                match update.expires_at {
                    Some(exp) if retry_at < exp => update.renew_at = Some(retry_at),
                    _ => {
                        gst::warning!(
                            CAT,
                            obj = obj,
                            "giving up renewing key ids {}: the license expires first",
                            kid_list(&kids)
                        );
                        return;
                    }
                }
            }
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for WidevineDecrypt {
    const NAME: &'static str = "GstWidevineDecrypt";
    type Type = super::WidevineDecrypt;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for WidevineDecrypt {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("keys")
                    .nick("Content keys")
                    .blurb(
                        "Comma-separated KID:KEY pairs (32 hex digits each), or @FILE to read them \
                         from a file. These keys are used directly and no license is requested \
                         for them. Write-only",
                    )
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("license-url")
                    .nick("License URL")
                    .blurb(
                        "License server URL; overrides the manifest's amz:LicenseUrl \
                         (unset: use the manifest's)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("key-timeout")
                    .nick("Key timeout")
                    .blurb(
                        "How long (ms) an encrypted sample waits for its key before the element \
                         fails with a decrypt-no-key error",
                    )
                    .default_value(DEFAULT_KEY_TIMEOUT_MS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("license-expiration-secs")
                    .nick("License expiration")
                    .blurb(
                        "License lifetime (s) asked of the server with \
                         x-amz-music-license-expiration-secs (0: don't ask)",
                    )
                    .default_value(DEFAULT_LICENSE_EXPIRATION_SECS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(
                        "licenses-requested, renewals, failures (failed HTTP attempts), \
                         last-license-latency-ms (0 before the first license), sessions \
                         (license sessions open: the stream's, and a previous stream's \
                         until the new one asks for its license)",
                    )
                    .read_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        match pspec.name() {
            "keys" => {
                let mut text = value.get::<Option<String>>().unwrap().unwrap_or_default();
                // `@path` reads the pairs from a file, so they stay off command lines (and
                // out of gst-launch's own GST_PIPELINE log of its arguments).
                if let Some(path) = text.strip_prefix('@') {
                    match std::fs::read_to_string(path) {
                        Ok(contents) => text = contents,
                        Err(e) => {
                            gst::error!(CAT, imp = self, "cannot read keys file {path}: {e}");
                            return;
                        }
                    }
                }
                match parse_keys(&text) {
                    Ok(keys) => {
                        gst::info!(CAT, imp = self, "{} fixed key(s) set", keys.len());
                        settings.keys = keys;
                    }
                    Err(e) => {
                        gst::error!(CAT, imp = self, "ignoring keys property: {e}")
                    }
                }
            }
            "license-url" => settings.license_url = value.get().unwrap(),
            "key-timeout" => {
                settings.key_timeout = Duration::from_millis(value.get::<u32>().unwrap().into())
            }
            "license-expiration-secs" => settings.license_expiration_secs = value.get().unwrap(),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        match pspec.name() {
            "license-url" => self.settings.lock().unwrap().license_url.to_value(),
            "key-timeout" => {
                (self.settings.lock().unwrap().key_timeout.as_millis() as u32).to_value()
            }
            "license-expiration-secs" => self
                .settings
                .lock()
                .unwrap()
                .license_expiration_secs
                .to_value(),
            "stats" => {
                let (s, sessions) = {
                    let state = self.shared.lock();
                    (state.stats, state.sessions.len() as u64)
                };
                gst::Structure::builder("widevinedecrypt-stats")
                    .field("sessions", sessions)
                    .field("licenses-requested", s.licenses_requested)
                    .field("renewals", s.renewals)
                    .field("failures", s.failures)
                    .field(
                        "last-license-latency-ms",
                        s.last_latency.map_or(0, |d| d.as_millis() as u64),
                    )
                    .build()
                    .to_value()
            }
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for WidevineDecrypt {}

impl ElementImpl for WidevineDecrypt {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Widevine decryptor (stub CDM)",
                "Decryptor/Audio",
                "Decrypts CENC (cenc, cbcs) protected audio with Widevine licenses through a CDM",
                "gst-amazonmusic developers",
            )
        });
        Some(&*META)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let types = gst::List::new(MEDIA_TYPES);
            // One structure carrying the system id (what gst_protection_select_system looks
            // for) and one without, for caps that do not say.
            let sink = gst::Caps::builder_full()
                .structure(
                    gst::Structure::builder("application/x-cenc")
                        .field("protection-system", WIDEVINE_SYSTEM_ID_STR)
                        .field("original-media-type", &types)
                        .build(),
                )
                .structure(
                    gst::Structure::builder("application/x-cenc")
                        .field("original-media-type", &types)
                        .build(),
                )
                .build();
            let mut src = gst::Caps::new_empty();
            {
                let src = src.get_mut().unwrap();
                for t in MEDIA_TYPES {
                    src.append_structure(gst::Structure::new_empty(t));
                }
            }
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &sink,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &src,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        // Wake a sample waiting for its key before the streaming thread is joined.
        if transition == gst::StateChange::PausedToReady {
            self.set_flushing(true);
        }
        if transition == gst::StateChange::ReadyToPaused {
            self.set_flushing(false);
        }
        self.parent_change_state(transition)
    }
}

impl BaseTransformImpl for WidevineDecrypt {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        *self.shared.lock() = State::default();
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let old = std::mem::take(&mut *self.shared.lock());
        for session in old.sessions {
            session.close(self.cdm.as_ref());
        }
        Ok(())
    }

    fn transform_caps(
        &self,
        direction: gst::PadDirection,
        caps: &gst::Caps,
        filter: Option<&gst::Caps>,
    ) -> Option<gst::Caps> {
        let mut out = gst::Caps::new_empty();
        {
            for (s, features) in caps.iter_with_features() {
                if direction == gst::PadDirection::Sink {
                    if s.name() != "application/x-cenc" {
                        continue;
                    }
                    // Template caps carry a list of original types; negotiated caps one.
                    let originals: Vec<String> = match s.get::<gst::List>("original-media-type") {
                        Ok(list) => list.iter().filter_map(|v| v.get::<String>().ok()).collect(),
                        Err(_) => s.get::<String>("original-media-type").into_iter().collect(),
                    };
                    for original in originals {
                        if !MEDIA_TYPES.contains(&original.as_str()) {
                            continue;
                        }
                        let mut n = s.to_owned();
                        n.set_name(original);
                        n.remove_fields([
                            "original-media-type",
                            "protection-system",
                            "cipher-mode",
                        ]);
                        if n.name() == "audio/x-flac" && !n.has_field("streamheader") {
                            if let Some(h) = self.flac_streamheader.lock().unwrap().as_ref() {
                                n.set_value("streamheader", h.clone());
                            }
                        }
                        out.merge_structure_full(n, Some(features.to_owned()));
                    }
                } else {
                    if !MEDIA_TYPES.contains(&s.name().as_str()) {
                        continue;
                    }
                    let mut n = s.to_owned();
                    n.set_name("application/x-cenc");
                    n.set("original-media-type", s.name().as_str());
                    let mut with_system = n.clone();
                    with_system.set("protection-system", WIDEVINE_SYSTEM_ID_STR);
                    out.merge_structure_full(with_system, Some(features.to_owned()));
                    out.merge_structure_full(n, Some(features.to_owned()));
                }
            }
        }
        gst::debug!(
            CAT,
            imp = self,
            "transformed {caps} ({direction:?}) to {out}"
        );
        Some(match filter {
            Some(f) => f.intersect_with_mode(&out, gst::CapsIntersectMode::First),
            None => out,
        })
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let flac = outcaps
            .structure(0)
            .is_some_and(|s| s.name() == "audio/x-flac");
        if flac {
            if let Some(h) = incaps
                .structure(0)
                .and_then(|s| s.value("streamheader").ok())
            {
                *self.flac_streamheader.lock().unwrap() = Some(h.clone());
            }
        }
        gst::debug!(CAT, imp = self, "caps {incaps} -> {outcaps}");
        self.shared.lock().flac = flac;
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Protection(p) => {
                self.on_protection_event(p);
                // Nothing downstream needs it: the samples leave here in clear.
                return true;
            }
            gst::EventView::StreamStart(_) => {
                *self.flac_streamheader.lock().unwrap() = None;
                // A new stream (the next track of a gapless album reuses this element) brings
                // its own PSSHs: a session over the previous stream's too would ask for keys
                // the new track's key token does not cover, and the server refuses it all.
                let mut state = self.shared.lock();
                state.pssh_boxes.clear();
                state.stream += 1;
            }
            gst::EventView::FlushStart(_) => self.set_flushing(true),
            gst::EventView::FlushStop(_) => self.set_flushing(false),
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        if self.shared.lock().request_pending {
            self.request_missing_keys(None);
        }
        let Some(meta) = buf.meta::<gst::meta::ProtectionMeta>() else {
            return Ok(gst::FlowSuccess::Ok);
        };
        // Key ids, IVs and subsample maps are not secret.
        gst::trace!(CAT, imp = self, "protection meta {}", meta.info());
        let info = sample_info(meta.info());
        if let Some(meta) = buf.meta_mut::<gst::meta::ProtectionMeta>() {
            let _ = meta.remove();
        }
        let info = match info {
            Ok(Some(info)) => info,
            Ok(None) => return Ok(gst::FlowSuccess::Ok),
            Err(e) => {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Decrypt,
                    ["Bad protection metadata: {}", e]
                );
                return Err(gst::FlowError::Error);
            }
        };
        let mut map = buf.map_writable().map_err(|_| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ["Cannot map buffer writable"]);
            gst::FlowError::Error
        })?;
        self.decrypt(&info, map.as_mut_slice())?;
        Ok(gst::FlowSuccess::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(subsamples: &[(u16, u32)]) -> gst::Structure {
        gst::init().unwrap();
        let raw: Vec<u8> = subsamples
            .iter()
            .flat_map(|(c, p)| [c.to_be_bytes().to_vec(), p.to_be_bytes().to_vec()].concat())
            .collect();
        gst::Structure::builder("application/x-cenc")
            .field("iv_size", 16u32)
            .field("encrypted", true)
            .field("kid", gst::Buffer::from_slice([7u8; 16]))
            .field("iv", gst::Buffer::from_slice([1u8; 16]))
            .field("cipher-mode", "cbcs")
            .field("subsample_count", subsamples.len() as u32)
            .field("subsamples", gst::Buffer::from_slice(raw))
            .build()
    }

    #[test]
    fn a_sample_with_no_protected_byte_is_clear() {
        assert!(sample_info(&meta(&[(800, 0)])).unwrap().is_none());
        assert!(sample_info(&meta(&[(65535, 0), (4465, 0)]))
            .unwrap()
            .is_none());
        let info = sample_info(&meta(&[(0, 800)])).unwrap().unwrap();
        assert_eq!(info.subsamples.len(), 1);
        assert_eq!(info.scheme, Scheme::Cbcs);
    }
}
