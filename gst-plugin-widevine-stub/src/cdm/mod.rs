//! The CDM (Content Decryption Module) interface the decryptor talks to, modelled on EME and
//! OpenCDM: sessions from init data, license messages in and out, key statuses, decrypt by key id.

mod chromium;
mod clearkey;
mod ocdm;
mod select;
mod stub;

use std::time::{Duration, Instant};

pub use chromium::ChromiumCdm;
pub use clearkey::ClearKeyCdm;
pub use ocdm::OcdmCdm;
pub use select::{CdmChoice, LicenseBody, CDM_ENV};
pub use stub::StubCdm;

/// What the CDM sends by itself after a session's first message (renewals it schedules), in
/// the order it sent them.
pub type MessageStream = tokio::sync::mpsc::UnboundedReceiver<SessionMessage>;

use crate::cenc::{DecryptError, SampleProtection};
use crate::protocol::{KeyId, ProtocolError, PsshError};

/// Opaque session handle chosen by the CDM.
pub type SessionId = String;

/// Widevine robustness level the CDM can guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityLevel {
    /// Keys and decryption in a hardware TEE, decrypted output protected.
    L1,
    /// Keys and crypto in a TEE, decrypted output in normal memory.
    L2,
    /// Software only.
    L3,
}

/// EME `MediaKeyStatus` values a CDM can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Usable,
    Expired,
    OutputRestricted,
    StatusPending,
    InternalError,
    Released,
}

/// EME `MediaKeyMessageType`: what a message the CDM produced is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    LicenseRequest,
    LicenseRenewal,
}

/// A message for the license server (EME's `message` event). The payload is opaque to the
/// caller: POST it, hand the answer to [`Cdm::update`]. Not `Debug` on purpose: it is a
/// license body.
pub struct SessionMessage {
    pub kind: MessageType,
    pub payload: Vec<u8>,
}

/// What a license did (EME's `keystatuseschange` plus `expiration`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseUpdate {
    pub key_statuses: Vec<(KeyId, KeyStatus)>,
    /// When the keys expire, `None` for never.
    pub expires_at: Option<Instant>,
    /// When a renewal should be requested, `None` when none is needed.
    pub renew_at: Option<Instant>,
}

/// What init data is (EME init data types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitDataType {
    /// One or more concatenated `pssh` boxes.
    Cenc,
    /// A bare key id list (WebM/keyids): 16-byte key ids back to back.
    KeyIds,
}

/// The key ids init data names (for a module CDM, which reads the `pssh` boxes of `systems`),
/// [`CdmError::NoKeyIds`] when it names none.
pub(crate) fn init_data_key_ids(
    init_data_type: InitDataType,
    init_data: &[u8],
    systems: &[[u8; 16]],
) -> Result<Vec<KeyId>, CdmError> {
    let kids: Vec<KeyId> = match init_data_type {
        InitDataType::Cenc => crate::protocol::pssh::key_ids_for_systems(init_data, systems)?,
        InitDataType::KeyIds => init_data
            .chunks_exact(16)
            .filter_map(KeyId::from_slice)
            .collect(),
    };
    if kids.is_empty() {
        return Err(CdmError::NoKeyIds);
    }
    Ok(kids)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdmError {
    #[error("init data not understood: {0}")]
    InitData(#[from] PsshError),
    #[error("init data names no key id")]
    NoKeyIds,
    #[error("no CDM session {0}")]
    NoSuchSession(SessionId),
    #[error("license rejected: {0}")]
    LicenseRejected(#[from] ProtocolError),
    #[error("license does not allow renewal")]
    RenewalNotAllowed,
    #[error("no key for key id {0}")]
    NoKey(KeyId),
    #[error("key {kid} expired {ago:?} ago")]
    KeyExpired { kid: KeyId, ago: Duration },
    #[error("sample does not decrypt: {0}")]
    Decrypt(#[from] DecryptError),
    #[error("the license is not understood: {0}")]
    BadLicense(String),
    /// A CDM module (`ocdm:`, `chromium:`) refused or failed a call; the text names the call
    /// and what it returned.
    #[error("{0}")]
    Module(String),
}

/// A Content Decryption Module. Keys stay inside: callers name them by key id only.
///
/// The flow is EME's: [`create_session`](Cdm::create_session) with the PSSH yields a license
/// request; the caller POSTs it and passes the answer to [`update`](Cdm::update); before
/// `renew_at` it asks [`renewal_request`](Cdm::renewal_request) and `update`s again;
/// [`decrypt`](Cdm::decrypt) works for any key some session made usable.
pub trait Cdm: Send + Sync {
    /// The DRM system this CDM implements (matches `pssh` system ids and caps).
    fn system_id(&self) -> [u8; 16];

    /// Every system id whose `pssh` boxes and protection events this CDM reads (Clear Key
    /// has two).
    fn system_ids(&self) -> Vec<[u8; 16]> {
        vec![self.system_id()]
    }

    /// The messages the CDM sends by itself for `session` (its own renewal schedule), taken
    /// once. `None`: the CDM sends none, the caller asks [`renewal_request`](Cdm::renewal_request)
    /// at `renew_at`.
    fn take_messages(&self, _session: &SessionId) -> Option<MessageStream> {
        None
    }

    fn security_level(&self) -> SecurityLevel;

    /// Creates a session and its first license request.
    fn create_session(
        &self,
        init_data_type: InitDataType,
        init_data: &[u8],
    ) -> Result<(SessionId, SessionMessage), CdmError>;

    /// Key ids a session asks for (so a caller can tell which samples wait on it).
    fn session_key_ids(&self, session: &SessionId) -> Result<Vec<KeyId>, CdmError>;

    /// Feeds a license (or renewal) response to the session.
    fn update(&self, session: &SessionId, response: &[u8]) -> Result<LicenseUpdate, CdmError>;

    /// A renewal request for a session that holds a license.
    fn renewal_request(&self, session: &SessionId) -> Result<SessionMessage, CdmError>;

    /// Closes a session and releases its keys.
    fn close_session(&self, session: &SessionId);

    /// Status of a key across all sessions, `None` if no session has it.
    fn key_status(&self, kid: &KeyId) -> Option<KeyStatus>;

    /// Decrypts one sample in place with the key `kid`.
    fn decrypt(
        &self,
        kid: &KeyId,
        protection: &SampleProtection<'_>,
        data: &mut [u8],
    ) -> Result<(), CdmError>;
}
