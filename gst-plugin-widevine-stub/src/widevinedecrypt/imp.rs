// SPDX-License-Identifier: MPL-2.0
//! Element glue for `widevinedecrypt`: caps x-cenc → original type, protection events and meta
//! into the license manager (`crate::license`) and CENC decryption, its errors as messages.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use amzmusic_common::codec::Codec;
use amzmusic_common::contract::{self, RefreshReason, PROTECTION_LICENSE_URL_FIELD};
use amzmusic_common::http::TlsProxy;

use super::credentials;
use super::sample::{parse_keys, sample_info, SampleInfo};
use crate::cdm::{
    Cdm, CdmChoice, CdmError, ChromiumCdm, ClearKeyCdm, KeyStatus, LicenseBody, OcdmCdm, StubCdm,
    CDM_ENV,
};
use crate::cenc::{self, Pattern, SampleProtection, Scheme};
use crate::license::{
    Credentials, CredentialsAsk, Failure, Host, KeySources, LicenseManager, WaitError,
};
use crate::protocol::{
    emulator_server_public_key, parse_pssh_boxes, parse_server_public_key, KeyId,
    WIDEVINE_SYSTEM_ID_STR,
};
use crate::CAT;
use amzmusic_common::clearkey::{CLEARKEY_DASH_SYSTEM_ID_STR, CLEARKEY_SYSTEM_ID_STR};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

/// Original media types this element restores.
/// The elementary streams it decrypts: every codec the plugins know ([`Codec::ALL`]).
const MEDIA_TYPES: [&str; Codec::ALL.len()] = media_types();

const fn media_types() -> [&'static str; Codec::ALL.len()] {
    let mut t = [""; Codec::ALL.len()];
    let mut i = 0;
    while i < t.len() {
        t[i] = Codec::ALL[i].media_type();
        i += 1;
    }
    t
}
const DEFAULT_KEY_TIMEOUT_MS: u32 = 20_000;
const DEFAULT_LICENSE_EXPIRATION_SECS: u32 = 0;
/// Name of the element message posted while a sample waits for its key.
const WAITING_MESSAGE: &str = "widevinedecrypt-waiting-for-key";

struct Settings {
    /// From the `keys` property; used directly, never requested.
    keys: HashMap<KeyId, cenc::Key>,
    license_url: Option<String>,
    key_timeout: Duration,
    license_expiration_secs: u32,
    /// The stub CDM's provisioning, as the `license-server-key` property gave it: the only
    /// license server key it trusts, or why the value cannot be used (an error at start).
    license_server_key: Result<[u8; 32], String>,
    /// `ca-file` (unset: `$AMAZONMUSIC_CA_FILE`) and `proxy` (unset: the proxy environment)
    /// of the license requests.
    tls: TlsProxy,
    /// The `cdm` property as set (`None`: `$AMAZONMUSIC_CDM`, else the stub).
    cdm: Option<String>,
    license_body: LicenseBody,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keys: HashMap::new(),
            license_url: None,
            key_timeout: Duration::from_millis(DEFAULT_KEY_TIMEOUT_MS.into()),
            license_expiration_secs: DEFAULT_LICENSE_EXPIRATION_SECS,
            license_server_key: Ok(emulator_server_public_key()),
            tls: TlsProxy::default(),
            cdm: None,
            license_body: LicenseBody::default(),
        }
    }
}

/// Per-stream state of the glue (licensing state lives in the [`LicenseManager`]).
#[derive(Default)]
struct State {
    /// The stream is FLAC: lets cbcs clear-lead samples be recognised (README).
    flac: bool,
    /// The FLAC `streamheader` of the stream's clear sample entry. 1.22's qtdemux drops it for
    /// the `enca` entry, so at the clear-lead → encrypted switch the caps would lose it and
    /// flacparse would re-send its headers mid-stream (flacdec then re-stamps frames, a 300 ms
    /// jump back): the encrypted caps get the same header. Reset when a stream-start starts
    /// another stream or group: qtdemux re-announces the same stream (same stream-id and group,
    /// caps without the header) when it reads the init segment again, as behind decodebin3's
    /// parsebin, while the next track of a gapless album keeps the stream-id (amzdashdemux's
    /// per codec) in a new group.
    flac_streamheader: Option<glib::SendValue>,
    /// The stream-id and group of the last stream-start.
    stream: Option<(glib::GString, Option<gst::GroupId>)>,
}

pub struct WidevineDecrypt {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// The CDM behind `licenses`, for its provisioning (`license-server-key`).
    stub: Arc<StubCdm>,
    licenses: LicenseManager,
}

impl Default for WidevineDecrypt {
    fn default() -> Self {
        // A licensed CDM would be constructed here instead (docs/cdm.md).
        let stub = Arc::new(StubCdm::new());
        WidevineDecrypt {
            settings: Mutex::default(),
            state: Mutex::default(),
            licenses: LicenseManager::new(stub.clone()),
            stub,
        }
    }
}

/// The element as the license manager sees it: credentials from upstream, errors to the bus.
struct ElementHost(glib::WeakRef<super::WidevineDecrypt>);

impl Host for ElementHost {
    fn credentials(&self, ask: CredentialsAsk) -> Credentials {
        self.0
            .upgrade()
            .map(|e| e.imp().ask_credentials(ask))
            .unwrap_or_default()
    }

    fn post(&self, failure: &Failure) {
        if let Some(e) = self.0.upgrade() {
            e.post_error_message(failure.error_message());
        }
    }
}

impl WidevineDecrypt {
    /// The token, User-Agent and key headers from `amazonmusicsrc` (contract section 2): the
    /// current ones (`reason=lookup`) or, after a 403, refreshed ones (`reason=forbidden` with
    /// the generation held); defaults when nobody upstream answers.
    fn ask_credentials(&self, ask: CredentialsAsk) -> Credentials {
        let (query, reason) = match ask {
            CredentialsAsk::Lookup => (
                contract::refresh_query(RefreshReason::Lookup, 0),
                RefreshReason::Lookup,
            ),
            CredentialsAsk::Forbidden { held } => (
                contract::refresh_query(RefreshReason::Forbidden, held),
                RefreshReason::Forbidden,
            ),
            CredentialsAsk::Unauthorized { held, token_serial } => (
                contract::unauthorized_query(held, token_serial),
                RefreshReason::Unauthorized,
            ),
        };
        let answer = credentials::query(self.obj().sink_pad(), query);
        let reason = reason.as_str();
        let mut headers = credentials::request_headers(answer.as_ref().map(|(c, _)| c));
        match &answer {
            Some((_, generation)) => gst::debug!(
                CAT,
                imp = self,
                "credentials from upstream ({reason}): audio object generation {generation}, \
                 token {}, {} key header(s)",
                if headers.authorization.is_some() {
                    "present"
                } else {
                    "absent"
                },
                headers.extra.len()
            ),
            None => gst::debug!(
                CAT,
                imp = self,
                "no credentials upstream ({reason}); license request carries none"
            ),
        }
        let secs = self.settings.lock().unwrap().license_expiration_secs;
        headers.license_expiration_secs = (secs > 0).then_some(secs);
        Credentials {
            headers,
            token_serial: answer.as_ref().and_then(|(c, _)| c.token_serial()),
            generation: answer.map(|(_, g)| g),
        }
    }

    /// Loads the CDM the `cdm` property (or `$AMAZONMUSIC_CDM`) names: at READY, so a library
    /// that is missing, lacks a symbol or refuses the key system fails the state change with an
    /// error naming it.
    fn load_cdm(&self) -> Result<(), gst::ErrorMessage> {
        let (value, body) = {
            let settings = self.settings.lock().unwrap();
            (settings.cdm.clone(), settings.license_body)
        };
        let choice = match &value {
            Some(v) => v.parse::<CdmChoice>().map_err(|e| {
                gst::error_msg!(gst::LibraryError::Settings, ("Invalid cdm property: {}", e))
            })?,
            None => CdmChoice::from_env().map_err(|e| {
                gst::error_msg!(gst::LibraryError::Settings, ("Invalid ${}: {}", CDM_ENV, e))
            })?,
        };
        let cdm: Arc<dyn Cdm> = match &choice {
            CdmChoice::Stub => self.stub.clone(),
            CdmChoice::ClearKey => Arc::new(ClearKeyCdm::new()),
            CdmChoice::Ocdm {
                library,
                key_system,
            } => Arc::new(
                OcdmCdm::open(library, key_system, choice.system_ids())
                    .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("{}", e)))?,
            ),
            CdmChoice::Chromium {
                library,
                key_system,
            } => Arc::new(
                ChromiumCdm::open(library, key_system, choice.system_ids())
                    .map_err(|e| gst::error_msg!(gst::LibraryError::Init, ("{}", e)))?,
            ),
        };
        let format = body.resolve(&cdm.system_ids());
        gst::info!(
            CAT,
            imp = self,
            "CDM {choice} (license body {format:?}){}",
            if value.is_none() && choice != CdmChoice::Stub {
                format!(" from ${CDM_ENV}")
            } else {
                String::new()
            }
        );
        self.licenses.set_cdm(cdm, format);
        Ok(())
    }

    fn on_protection_event(&self, event: &gst::event::Protection) {
        let (system_id, data, origin) = event.get();
        let systems = self.licenses.cdm().system_ids();
        let system = system_id.parse::<KeyId>().ok().map(|k| k.0);
        if !system.is_some_and(|s| systems.contains(&s)) {
            gst::debug!(
                CAT,
                imp = self,
                "ignoring protection event for system {system_id}"
            );
            return;
        }
        let Ok(map) = data.map_readable() else { return };
        let bytes = map.as_slice().to_vec();
        let url = event
            .structure()
            .and_then(|s| s.get::<String>(PROTECTION_LICENSE_URL_FIELD).ok());
        let unusable = match parse_pssh_boxes(&bytes) {
            Ok(boxes) if boxes.iter().any(|b| systems.contains(&b.system_id)) => None,
            Ok(_) => Some("no pssh box of the CDM's system".to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = unusable {
            // Its license URL still counts: the key ids may come from another PSSH (the init
            // segment's), and without the URL the samples would wait out key-timeout.
            gst::warning!(
                CAT,
                imp = self,
                "protection event from {origin:?} holds no usable pssh ({why}){}",
                if url.is_some() {
                    "; its license URL is kept"
                } else {
                    ""
                }
            );
            if let Some(url) = url {
                self.licenses.set_manifest_license_url(url);
            }
            return;
        }
        let len = bytes.len();
        if self.licenses.add_pssh(bytes, url) {
            gst::info!(
                CAT,
                imp = self,
                "pssh for system {system_id} from {origin:?} ({len} bytes)"
            );
        }
    }

    fn host(&self) -> Arc<dyn Host> {
        Arc::new(ElementHost(self.obj().downgrade()))
    }

    /// Starts a license request for every known key id that no session or `keys` entry covers
    /// (plus `extra`, a key id seen on a sample but in no PSSH).
    fn request_missing_keys(&self, extra: Option<KeyId>) {
        let (fixed, license_url) = {
            let settings = self.settings.lock().unwrap();
            let fixed: HashSet<KeyId> = settings.keys.keys().copied().collect();
            (fixed, settings.license_url.clone())
        };
        let sources = KeySources {
            fixed: &|k| fixed.contains(k),
            license_url,
        };
        self.licenses
            .request_missing_keys(sources, extra, &self.host());
    }

    /// Posts `failure`'s error: playback ends.
    fn fail(&self, failure: Failure) -> gst::FlowError {
        self.post_error_message(failure.error_message());
        gst::FlowError::Error
    }

    /// Blocks until `kid` is usable, the key timeout passes, or a flush/state change wakes it.
    fn wait_for_key(&self, kid: KeyId) -> Result<(), gst::FlowError> {
        let timeout = self.settings.lock().unwrap().key_timeout;
        let announce = || {
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
        };
        self.licenses
            .wait_for_key(kid, timeout, announce)
            .map_err(|e| match e {
                WaitError::Flushing => gst::FlowError::Flushing,
                WaitError::Fatal => gst::FlowError::Error,
                WaitError::Failed(failure) => self.fail(failure),
            })
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
        let cdm = self.licenses.cdm();
        let result = match fixed_key {
            Some(key) => cenc::decrypt_in_place(&key, &protection, data).map_err(CdmError::from),
            None => {
                if cdm.key_status(&info.kid) != Some(KeyStatus::Usable) {
                    if !self.licenses.is_requested(&info.kid) {
                        self.request_missing_keys(Some(info.kid));
                    }
                    self.wait_for_key(info.kid)?;
                }
                cdm.decrypt(&info.kid, &protection, data)
            }
        };
        match result {
            Ok(()) => {}
            Err(CdmError::KeyExpired { kid, .. }) => {
                // Raced with expiry: wait for the renewal (or fail clearly).
                self.wait_for_key(kid)?;
                cdm.decrypt(&kid, &protection, data)
                    .map_err(|e| self.fail(Failure::Decrypt(e)))?;
            }
            Err(e) => return Err(self.fail(Failure::Decrypt(e))),
        }
        self.check_flac_frame(info.kid, data)
    }

    /// A FLAC sample decrypts to one frame, whose header (sync code, reserved bits, CRC-8)
    /// tells a wrong key: the frame would otherwise reach flacparse as garbage, which drops it
    /// without a word. Header only, so every sample can afford it. Other codecs have no
    /// frame-level check.
    fn check_flac_frame(&self, kid: KeyId, data: &[u8]) -> Result<(), gst::FlowError> {
        if !self.state.lock().unwrap().flac {
            return Ok(());
        }
        match crate::flac::frame_header_fault(data) {
            None => Ok(()),
            Some(fault) => Err(self.fail(Failure::WrongKey { kid, fault })),
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
            || !self.state.lock().unwrap().flac
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
        let cdm = self.licenses.cdm();
        let decrypted = match fixed_key {
            Some(key) => cenc::decrypt_in_place(key, &one_block, &mut first).is_ok(),
            None if cdm.key_status(&info.kid) == Some(KeyStatus::Usable) => {
                cdm.decrypt(&info.kid, &one_block, &mut first).is_ok()
            }
            // No key yet: a valid header is taken as clear, so the clear lead never waits.
            None => return true,
        };
        !(decrypted && crate::flac::starts_with_frame_header(&first))
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
                glib::ParamSpecString::builder("license-server-key")
                    .nick("License server key")
                    .blurb(
                        "The stub CDM's provisioning: the public key (base64 X25519) of the only \
                         license server whose licenses it accepts (default: the emulator's)",
                    )
                    .default_value(Some(
                        B64.encode(emulator_server_public_key()).as_str(),
                    ))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("ca-file")
                    .nick("CA file")
                    .blurb(
                        "PEM file of CA certificates to trust besides the system roots for \
                         license requests (default: $AMAZONMUSIC_CA_FILE); certificates are \
                         always verified",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("proxy")
                    .nick("Proxy")
                    .blurb(
                        "HTTP proxy URL for license requests, \
                         http://[user:password@]host:port (default: the http_proxy, \
                         https_proxy and no_proxy environment)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("cdm")
                    .nick("CDM")
                    .blurb(
                        "The CDM, loaded at READY: stub (the emulator's Widevine stand-in), \
                         clearkey (W3C Clear Key, built in), ocdm:<libocdm.so>[,<key system>] \
                         (an OpenCDM library, key system default com.widevine.alpha) or \
                         chromium:<libwidevinecdm.so>[,<key system>] (a library with \
                         Chromium's CDM interface, versions 10 and 11) (default: \
                         $AMAZONMUSIC_CDM, else stub)",
                    )
                    .build(),
                glib::ParamSpecEnum::builder_with_default("license-body", LicenseBody::Auto)
                    .nick("License body")
                    .blurb(
                        "How a license request travels: amazon (Amazon's JSON wrapping), raw \
                         (the CDM's challenge as the body, as EME players send it) or auto \
                         (amazon for a Widevine key system, raw otherwise)",
                    )
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
            "ca-file" => {
                settings.tls.ca_file = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|s| !s.is_empty())
                    .map(std::path::PathBuf::from)
            }
            "proxy" => {
                settings.tls.proxy = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|s| !s.is_empty())
            }
            "cdm" => {
                settings.cdm = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|s| !s.trim().is_empty())
            }
            "license-body" => settings.license_body = value.get().unwrap(),
            "license-server-key" => {
                settings.license_server_key = match value.get::<Option<String>>().unwrap() {
                    None => Ok(emulator_server_public_key()),
                    Some(s) => parse_server_public_key(&s),
                }
            }
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
            "ca-file" => self
                .settings
                .lock()
                .unwrap()
                .tls
                .ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "proxy" => self.settings.lock().unwrap().tls.proxy.to_value(),
            "cdm" => self.settings.lock().unwrap().cdm.to_value(),
            "license-body" => self.settings.lock().unwrap().license_body.to_value(),
            "license-server-key" => match &self.settings.lock().unwrap().license_server_key {
                Ok(k) => Some(B64.encode(k)).to_value(),
                Err(_) => None::<String>.to_value(),
            },
            "stats" => {
                let s = self.licenses.stats();
                gst::Structure::builder("widevinedecrypt-stats")
                    .field("sessions", s.sessions)
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
                "CENC decryptor (stub, Clear Key and OpenCDM CDMs)",
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
            let mut sink = gst::Caps::builder_full();
            // One structure per system id (gst_protection_select_system reads each one's
            // string): Widevine, and Clear Key's two.
            for system in [
                WIDEVINE_SYSTEM_ID_STR,
                CLEARKEY_SYSTEM_ID_STR,
                CLEARKEY_DASH_SYSTEM_ID_STR,
            ] {
                sink = sink.structure(
                    gst::Structure::builder("application/x-cenc")
                        .field("protection-system", system)
                        .field("original-media-type", &types)
                        .build(),
                );
            }
            let sink = sink
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
            self.licenses.set_flushing(true);
        }
        if transition == gst::StateChange::ReadyToPaused {
            self.licenses.set_flushing(false);
        }
        if transition == gst::StateChange::NullToReady {
            if let Err(e) = self.load_cdm() {
                self.post_error_message(e);
                return Err(gst::StateChangeError);
            }
        }
        let result = self.parent_change_state(transition);
        if transition == gst::StateChange::ReadyToNull {
            // Releases a module's system (its library stays loaded).
            self.licenses
                .set_cdm(self.stub.clone(), crate::fetch::BodyFormat::Amazon);
        }
        result
    }
}

impl BaseTransformImpl for WidevineDecrypt {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::AlwaysInPlace;
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap();
        match &settings.license_server_key {
            Ok(k) => self.stub.set_trusted_server(*k),
            Err(why) => {
                return Err(gst::error_msg!(
                    gst::LibraryError::Settings,
                    ("Invalid license-server-key: {}", why)
                ))
            }
        }
        let client = settings
            .tls
            .load()
            .map_err(|e| e.to_string())
            .and_then(|t| crate::license::client(&t))
            .map_err(|e| gst::error_msg!(gst::ResourceError::Settings, ("{}", e)))?;
        drop(settings);
        self.licenses.set_client(client);
        self.state.lock().unwrap().flac = false;
        self.licenses.reset();
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.state.lock().unwrap().flac = false;
        self.licenses.stop();
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
                        if n.name() == Codec::Flac.media_type() && !n.has_field("streamheader") {
                            if let Some(h) = self.state.lock().unwrap().flac_streamheader.as_ref() {
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
            .is_some_and(|s| s.name() == Codec::Flac.media_type());
        let mut state = self.state.lock().unwrap();
        if flac {
            if let Some(h) = incaps
                .structure(0)
                .and_then(|s| s.value("streamheader").ok())
            {
                state.flac_streamheader = Some(h.clone());
            }
        }
        state.flac = flac;
        drop(state);
        gst::debug!(CAT, imp = self, "caps {incaps} -> {outcaps}");
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Protection(p) => {
                self.on_protection_event(p);
                // Nothing downstream needs it: the samples leave here in clear.
                return true;
            }
            gst::EventView::StreamStart(ev) => {
                let mut state = self.state.lock().unwrap();
                let stream = (glib::GString::from(ev.stream_id()), ev.group_id());
                if state.stream.as_ref() != Some(&stream) {
                    state.flac_streamheader = None;
                    state.stream = Some(stream);
                }
                drop(state);
                // The next track of a gapless album reuses this element with its own PSSHs.
                self.licenses.stream_start();
            }
            gst::EventView::FlushStart(_) => self.licenses.set_flushing(true),
            gst::EventView::FlushStop(_) => self.licenses.set_flushing(false),
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        if self.licenses.request_pending() {
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
            Err(e) => return Err(self.fail(Failure::BadMeta(e))),
        };
        let mut map = buf.map_writable().map_err(|_| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ["Cannot map buffer writable"]);
            gst::FlowError::Error
        })?;
        self.decrypt(&info, map.as_mut_slice())?;
        Ok(gst::FlowSuccess::Ok)
    }
}
