// SPDX-License-Identifier: MPL-2.0
//! The stub license protocol: challenge (client → server) and license (server → client) with
//! content keys wrapped to a per-session X25519 key. Both halves are public; see docs/license-protocol.md.

use std::time::Duration;

use aes_kw::KekAes128;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

use crate::http::RetryOn;
pub use crate::pssh::KeyId;

/// Wire format version carried in challenges and licenses.
pub const PROTOCOL_VERSION: u32 = 1;
/// HKDF `info` prefix; the session id follows it.
const HKDF_INFO: &[u8] = b"gst-widevine-stub license v1";
/// Name of the CDM in `client_info.cdm`.
pub const STUB_CDM_NAME: &str = "gst-widevine-stub";

/// Whether a challenge asks for a first license or extends one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    License,
    Renewal,
}

/// What the client says about itself (not secret; the emulator may log it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    pub cdm: String,
    pub cdm_version: String,
    /// Widevine security level: 1 (hardware TEE) to 3 (software only). The stub is 3.
    pub security_level: u8,
    pub platform: String,
}

impl Default for ClientInfo {
    fn default() -> Self {
        ClientInfo {
            cdm: STUB_CDM_NAME.into(),
            cdm_version: env!("CARGO_PKG_VERSION").into(),
            security_level: 3,
            platform: std::env::consts::OS.into(),
        }
    }
}

/// A parsed challenge, as the server sees it. Nothing in it is secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub version: u32,
    pub kind: RequestKind,
    /// 32 hex digits, fixed for the life of a CDM session (renewals reuse it).
    pub session_id: String,
    /// Base64 of 16 random bytes, fresh per challenge; echoed in the license.
    pub nonce: String,
    /// Base64 of the session's 32-byte X25519 public key.
    pub client_public_key: String,
    /// Key ids, 32 hex digits each.
    pub key_ids: Vec<String>,
    /// Base64 of the Widevine PSSH content id (may be empty).
    #[serde(default)]
    pub content_id: String,
    pub client_info: ClientInfo,
}

impl Challenge {
    /// The key ids as [`KeyId`]s (fails on a malformed one).
    pub fn parsed_key_ids(&self) -> Result<Vec<KeyId>, LicenseError> {
        self.key_ids
            .iter()
            .map(|k| {
                k.parse()
                    .map_err(|_| LicenseError::MalformedChallenge(format!("bad key id {k:?}")))
            })
            .collect()
    }
}

/// What the server grants. Durations are relative to when the client receives the license, so
/// client and server clocks need not agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicensePolicy {
    /// How long the keys may be used; 0 means no expiry.
    pub license_duration_secs: u64,
    /// When the client should send a renewal; 0 means "at 80 % of the duration".
    #[serde(default)]
    pub renewal_delay_secs: u64,
    /// Whether renewal requests will be honoured.
    pub can_renew: bool,
}

impl Default for LicensePolicy {
    fn default() -> Self {
        LicensePolicy {
            license_duration_secs: 0,
            renewal_delay_secs: 0,
            can_renew: true,
        }
    }
}

impl LicensePolicy {
    /// How long the keys stay valid, `None` for forever.
    pub fn duration(&self) -> Option<Duration> {
        (self.license_duration_secs > 0).then(|| Duration::from_secs(self.license_duration_secs))
    }

    /// When a renewal should be sent, `None` when the license never needs one.
    pub fn renewal_after(&self) -> Option<Duration> {
        if !self.can_renew {
            return None;
        }
        match (self.renewal_delay_secs, self.duration()) {
            (0, Some(d)) => Some(d.mul_f64(0.8)),
            (0, None) => None,
            (delay, _) => Some(Duration::from_secs(delay)),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct WrappedKey {
    kid: String,
    /// Base64 of the RFC 3394 AES-KW output (24 bytes for a 16-byte key).
    wrapped_key: String,
}

#[derive(Serialize, Deserialize)]
struct LicensePayload {
    version: u32,
    kind: RequestKind,
    session_id: String,
    nonce: String,
    server_public_key: String,
    policy: LicensePolicy,
    keys: Vec<WrappedKey>,
}

/// The outer license: the payload bytes exactly as MACed, so the MAC needs no canonical JSON.
#[derive(Serialize, Deserialize)]
struct LicenseEnvelope {
    payload: String,
    mac: String,
}

/// Errors a license server answers with; each maps to one row of the HTTP error table in
/// docs/license-protocol.md (`status()`, `code()`, `to_json_body()`). Messages never carry
/// secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LicenseError {
    #[error("malformed challenge: {0}")]
    MalformedChallenge(String),
    #[error("no key known for any requested key id ({})", join_kids(.0))]
    UnknownKeyId(Vec<String>),
    #[error("not entitled: {0}")]
    NotEntitled(String),
    #[error("missing or expired token: {0}")]
    InvalidToken(String),
    #[error("too many requests")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("license server error: {0}")]
    ServerError(String),
    #[error("license service unavailable")]
    Unavailable { retry_after_secs: Option<u64> },
    /// Any other answer, as the client parsed it (never produced by `issue_license`).
    #[error("HTTP {status} {code}: {message}")]
    Other {
        status: u16,
        code: String,
        message: String,
    },
}

fn join_kids(kids: &[String]) -> String {
    kids.join(", ")
}

/// What the decryptor does for an error (the last column of the error table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Retry with exponential backoff and jitter (at least `Retry-After` when given), bounded.
    RetryWithBackoff,
    /// Ask upstream for the current token once; retry once if it changed, else fail.
    RefreshTokenThenRetryOnce,
    /// Fail at once with a GStreamer error.
    Fail,
}

#[derive(Serialize, Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: String,
}

impl LicenseError {
    pub fn status(&self) -> u16 {
        match self {
            LicenseError::MalformedChallenge(_) => 400,
            LicenseError::UnknownKeyId(_) => 404,
            LicenseError::NotEntitled(_) => 403,
            LicenseError::InvalidToken(_) => 401,
            LicenseError::TooManyRequests { .. } => 429,
            LicenseError::ServerError(_) => 500,
            LicenseError::Unavailable { .. } => 503,
            LicenseError::Other { status, .. } => *status,
        }
    }

    pub fn code(&self) -> &str {
        match self {
            LicenseError::MalformedChallenge(_) => "malformed_challenge",
            LicenseError::UnknownKeyId(_) => "unknown_key_id",
            LicenseError::NotEntitled(_) => "not_entitled",
            LicenseError::InvalidToken(_) => "invalid_token",
            LicenseError::TooManyRequests { .. } => "too_many_requests",
            LicenseError::ServerError(_) => "server_error",
            LicenseError::Unavailable { .. } => "service_unavailable",
            LicenseError::Other { code, .. } => code,
        }
    }

    /// Value for the `Retry-After` response header, when the row has one.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            LicenseError::TooManyRequests { retry_after_secs } => Some(*retry_after_secs),
            LicenseError::Unavailable { retry_after_secs } => *retry_after_secs,
            _ => None,
        }
    }

    /// The documented meaning of the status, for error messages a person can act on.
    pub fn meaning(&self) -> &'static str {
        status_meaning(self.status())
    }

    pub fn client_action(&self) -> ClientAction {
        match self.status() {
            401 => ClientAction::RefreshTokenThenRetryOnce,
            s if RetryOn::LicenseTable.retries(s) => ClientAction::RetryWithBackoff,
            _ => ClientAction::Fail,
        }
    }

    /// The JSON error body: `{"error": "<code>", "message": "..."}`.
    pub fn to_json_body(&self) -> Vec<u8> {
        let message = match self {
            LicenseError::Other { message, .. } => message.clone(),
            other => other.to_string(),
        };
        serde_json::to_vec(&ErrorBody {
            error: self.code().to_owned(),
            message,
        })
        .expect("serialising a string pair cannot fail")
    }

    /// Client side: turns a non-200 answer into the matching variant (unknown shapes become
    /// [`LicenseError::Other`]; the body is read only for its `error`/`message` fields).
    pub fn from_response(status: u16, retry_after_secs: Option<u64>, body: &[u8]) -> LicenseError {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let code = parsed.as_ref().map(|b| b.error.clone()).unwrap_or_default();
        let message = parsed.map(|b| b.message).unwrap_or_default();
        match (status, code.as_str()) {
            (400, "malformed_challenge") => LicenseError::MalformedChallenge(message),
            (404, "unknown_key_id") => LicenseError::UnknownKeyId(vec![message]),
            (403, _) => LicenseError::NotEntitled(message),
            (401, _) => LicenseError::InvalidToken(message),
            (429, _) => LicenseError::TooManyRequests {
                retry_after_secs: retry_after_secs.unwrap_or(1),
            },
            (500, _) => LicenseError::ServerError(message),
            (503, _) => LicenseError::Unavailable { retry_after_secs },
            _ => LicenseError::Other {
                status,
                code: if code.is_empty() {
                    "unknown".into()
                } else {
                    code
                },
                message,
            },
        }
    }
}

/// The documented meaning of a license-server HTTP status (docs/license-protocol.md).
pub fn status_meaning(status: u16) -> &'static str {
    match status {
        400 => "the license server could not parse the challenge",
        401 => "the access token is missing or expired",
        403 => "the account is not entitled to this content",
        404 => "the license server knows none of the requested key ids",
        429 => "too many license requests; the server asked to slow down",
        500 => "the license server failed",
        502..=504 => "the license service is temporarily unavailable",
        _ => "unexpected answer from the license server",
    }
}

/// Client-side failures to accept a license body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("license is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("license version {0} is not supported")]
    UnsupportedVersion(u32),
    #[error("license does not answer the pending challenge")]
    NotForThisChallenge,
    #[error("no challenge is pending")]
    NoPendingChallenge,
    #[error("license MAC does not verify")]
    BadMac,
    #[error("key for {0} does not unwrap")]
    UnwrapFailed(String),
    #[error("server public key is invalid")]
    BadPublicKey,
    /// The license verifies, but for a server key this client was not provisioned with.
    #[error(
        "the license comes from a license server this CDM does not trust (server key {got}, \
         provisioned {trusted})"
    )]
    UntrustedServer { got: String, trusted: String },
}

fn b64_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    B64.decode(s).ok().and_then(|v| v.try_into().ok())
}

/// Keys derived from the ECDH secret: the AES-KW key-encryption key and the MAC key.
struct SessionSecrets {
    kek: Zeroizing<[u8; 16]>,
    mac_key: Zeroizing<[u8; 32]>,
}

fn derive(shared: &[u8; 32], nonce: &[u8], session_id: &str) -> SessionSecrets {
    let hk = Hkdf::<Sha256>::new(Some(nonce), shared);
    let mut okm = Zeroizing::new([0u8; 48]);
    let info = [HKDF_INFO, session_id.as_bytes()].concat();
    hk.expand(&info, okm.as_mut())
        .expect("48 bytes is a valid HKDF-SHA256 length");
    let mut kek = Zeroizing::new([0u8; 16]);
    let mut mac_key = Zeroizing::new([0u8; 32]);
    kek.copy_from_slice(&okm[..16]);
    mac_key.copy_from_slice(&okm[16..]);
    SessionSecrets { kek, mac_key }
}

fn mac(mac_key: &[u8; 32], payload: &[u8]) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(mac_key).expect("HMAC takes any key size");
    m.update(payload);
    m
}

/// Parses challenge bytes (server side; the emulator may log the result: it holds no secret).
pub fn parse_challenge(challenge: &[u8]) -> Result<Challenge, LicenseError> {
    let c: Challenge = serde_json::from_slice(challenge)
        .map_err(|e| LicenseError::MalformedChallenge(format!("not a challenge: {e}")))?;
    if c.version != PROTOCOL_VERSION {
        return Err(LicenseError::MalformedChallenge(format!(
            "unsupported version {}",
            c.version
        )));
    }
    if c.key_ids.is_empty() {
        return Err(LicenseError::MalformedChallenge("no key ids".into()));
    }
    if b64_array::<32>(&c.client_public_key).is_none() {
        return Err(LicenseError::MalformedChallenge(
            "client_public_key is not 32 bytes of base64".into(),
        ));
    }
    if b64_array::<16>(&c.nonce).is_none() {
        return Err(LicenseError::MalformedChallenge(
            "nonce is not 16 bytes of base64".into(),
        ));
    }
    if c.session_id.is_empty() || c.session_id.len() > 64 {
        return Err(LicenseError::MalformedChallenge("bad session_id".into()));
    }
    c.parsed_key_ids()?;
    Ok(c)
}

/// The emulator's license server key (its X25519 secret). Published on purpose: the stub
/// protocol models a DRM, it protects nothing, and every user's emulator must be trusted by
/// every user's stub CDM. A server with another key is refused by a stub CDM provisioned with
/// this one's public half (its default).
const EMULATOR_SERVER_SECRET: [u8; 32] = *b"amzmusic-emulator license key v1";

/// A license server's long-term X25519 key. The license's MAC key comes from the ECDH of this
/// key with the session's, so only its holder can issue a license that verifies for its public
/// half: what a client pins, as a real CDM trusts only the servers of its provisioning.
pub struct ServerKey(StaticSecret);

impl ServerKey {
    /// The emulator's key ([`EMULATOR_SERVER_SECRET`]).
    pub fn emulator() -> ServerKey {
        ServerKey(StaticSecret::from(EMULATOR_SERVER_SECRET))
    }

    /// A fresh random key (another license server).
    pub fn generate() -> ServerKey {
        ServerKey(StaticSecret::random_from_rng(OsRng))
    }

    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }
}

/// The public key a stub CDM trusts by default: the emulator's.
pub fn emulator_server_public_key() -> [u8; 32] {
    ServerKey::emulator().public()
}

/// Reads a server public key as a property or a command line gives it: 32 bytes of base64.
pub fn parse_server_public_key(s: &str) -> Result<[u8; 32], String> {
    b64_array::<32>(s.trim()).ok_or_else(|| {
        format!("{s:?} is not a server public key (32 bytes of base64, as docs/license-protocol.md shows)")
    })
}

/// Server side: [`issue_license_as`] with the emulator's key.
pub fn issue_license(
    challenge: &[u8],
    key_for: impl FnMut(&KeyId) -> Option<[u8; 16]>,
    policy: &LicensePolicy,
) -> Result<Vec<u8>, LicenseError> {
    issue_license_as(&ServerKey::emulator(), challenge, key_for, policy)
}

/// Server side: answers a challenge with a license holding every key `key_for` knows, wrapped to
/// the challenge's session key, from the license server holding `server`. Key ids it does not
/// know are left out; if it knows none, the answer is [`LicenseError::UnknownKeyId`] (404).
/// Entitlement and token checks are the caller's (they are HTTP concerns).
pub fn issue_license_as(
    server: &ServerKey,
    challenge: &[u8],
    mut key_for: impl FnMut(&KeyId) -> Option<[u8; 16]>,
    policy: &LicensePolicy,
) -> Result<Vec<u8>, LicenseError> {
    let c = parse_challenge(challenge)?;
    let client_public = PublicKey::from(b64_array::<32>(&c.client_public_key).unwrap());
    let nonce = b64_array::<16>(&c.nonce).unwrap();

    let server_public = PublicKey::from(&server.0);
    let shared = server.0.diffie_hellman(&client_public);
    if !shared.was_contributory() {
        return Err(LicenseError::MalformedChallenge(
            "client_public_key is a low-order point".into(),
        ));
    }
    let secrets = derive(shared.as_bytes(), &nonce, &c.session_id);
    let kek = KekAes128::from(*secrets.kek);

    let mut keys = Vec::new();
    for kid in c.parsed_key_ids()? {
        let Some(key) = key_for(&kid) else { continue };
        let key = Zeroizing::new(key);
        let mut wrapped = [0u8; 24];
        kek.wrap(key.as_ref(), &mut wrapped)
            .expect("a 16-byte key always wraps into 24 bytes");
        keys.push(WrappedKey {
            kid: kid.to_string(),
            wrapped_key: B64.encode(wrapped),
        });
    }
    if keys.is_empty() {
        return Err(LicenseError::UnknownKeyId(c.key_ids));
    }

    let payload = serde_json::to_vec(&LicensePayload {
        version: PROTOCOL_VERSION,
        kind: c.kind,
        session_id: c.session_id,
        nonce: c.nonce,
        server_public_key: B64.encode(server_public.as_bytes()),
        policy: *policy,
        keys,
    })
    .expect("serialising plain data cannot fail");
    let tag = mac(&secrets.mac_key, &payload).finalize().into_bytes();
    Ok(serde_json::to_vec(&LicenseEnvelope {
        payload: B64.encode(&payload),
        mac: B64.encode(tag),
    })
    .expect("serialising plain data cannot fail"))
}

/// One content key out of a license. The key bytes are zeroized on drop and not `Debug`.
pub struct ContentKey {
    pub kid: KeyId,
    pub key: Zeroizing<[u8; 16]>,
}

/// A verified license, client side.
pub struct AcceptedLicense {
    pub kind: RequestKind,
    pub policy: LicensePolicy,
    pub keys: Vec<ContentKey>,
}

/// Client side of one session: the X25519 key pair lives as long as the session, so renewals
/// are wrapped to the same key; every challenge gets a fresh nonce.
pub struct ClientSession {
    secret: StaticSecret,
    public: PublicKey,
    session_id: String,
    key_ids: Vec<KeyId>,
    content_id: Vec<u8>,
    client_info: ClientInfo,
    pending_nonce: Option<[u8; 16]>,
    /// The only license server public key whose licenses this session accepts.
    trusted_server: [u8; 32],
}

impl ClientSession {
    pub fn new(key_ids: Vec<KeyId>, content_id: Vec<u8>, client_info: ClientInfo) -> Self {
        let secret = StaticSecret::random_from_rng(OsRng);
        let public = PublicKey::from(&secret);
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        ClientSession {
            secret,
            public,
            session_id: hex::encode(id),
            key_ids,
            content_id,
            client_info,
            pending_nonce: None,
            trusted_server: emulator_server_public_key(),
        }
    }

    /// A session whose key pair, id and pending nonce are fixed, so that a license issued to
    /// it once answers it again: for the fuzz targets and their seed corpus only (a real
    /// session's secret is random).
    #[doc(hidden)]
    pub fn fixed_for_fuzzing(
        secret: [u8; 32],
        session_id: &str,
        nonce: [u8; 16],
        key_ids: Vec<KeyId>,
    ) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret);
        ClientSession {
            secret,
            public,
            session_id: session_id.to_owned(),
            key_ids,
            content_id: Vec::new(),
            client_info: ClientInfo::default(),
            pending_nonce: Some(nonce),
            trusted_server: emulator_server_public_key(),
        }
    }

    /// Accept licenses only from the server holding `public`'s secret (the default: the
    /// emulator's).
    pub fn trust_server(mut self, public: [u8; 32]) -> Self {
        self.trusted_server = public;
        self
    }

    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    pub fn key_ids(&self) -> &[KeyId] {
        &self.key_ids
    }

    /// Builds a challenge; the license that answers it must echo its nonce.
    pub fn challenge(&mut self, kind: RequestKind) -> Vec<u8> {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        self.pending_nonce = Some(nonce);
        serde_json::to_vec(&Challenge {
            version: PROTOCOL_VERSION,
            kind,
            session_id: self.session_id.clone(),
            nonce: B64.encode(nonce),
            client_public_key: B64.encode(self.public.as_bytes()),
            key_ids: self.key_ids.iter().map(KeyId::to_string).collect(),
            content_id: B64.encode(&self.content_id),
            client_info: self.client_info.clone(),
        })
        .expect("serialising plain data cannot fail")
    }

    /// Verifies and opens a license answering the pending challenge.
    pub fn accept_license(&mut self, license: &[u8]) -> Result<AcceptedLicense, ProtocolError> {
        let envelope: LicenseEnvelope =
            serde_json::from_slice(license).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        let payload_bytes = B64
            .decode(&envelope.payload)
            .map_err(|_| ProtocolError::Malformed("payload is not base64".into()))?;
        let tag = B64
            .decode(&envelope.mac)
            .map_err(|_| ProtocolError::Malformed("mac is not base64".into()))?;
        let payload: LicensePayload = serde_json::from_slice(&payload_bytes)
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        if payload.version != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedVersion(payload.version));
        }
        let nonce = self
            .pending_nonce
            .ok_or(ProtocolError::NoPendingChallenge)?;
        if payload.session_id != self.session_id || b64_array::<16>(&payload.nonce) != Some(nonce) {
            return Err(ProtocolError::NotForThisChallenge);
        }
        let server_key =
            b64_array::<32>(&payload.server_public_key).ok_or(ProtocolError::BadPublicKey)?;
        if server_key != self.trusted_server {
            return Err(ProtocolError::UntrustedServer {
                got: B64.encode(server_key),
                trusted: B64.encode(self.trusted_server),
            });
        }
        let server_public = PublicKey::from(server_key);
        let shared = self.secret.diffie_hellman(&server_public);
        if !shared.was_contributory() {
            return Err(ProtocolError::BadPublicKey);
        }
        let secrets = derive(shared.as_bytes(), &nonce, &self.session_id);
        mac(&secrets.mac_key, &payload_bytes)
            .verify_slice(&tag)
            .map_err(|_| ProtocolError::BadMac)?;

        let kek = KekAes128::from(*secrets.kek);
        let mut keys = Vec::with_capacity(payload.keys.len());
        for wk in &payload.keys {
            let kid: KeyId = wk
                .kid
                .parse()
                .map_err(|_| ProtocolError::Malformed(format!("bad kid {:?}", wk.kid)))?;
            let wrapped: [u8; 24] = b64_array(&wk.wrapped_key)
                .ok_or_else(|| ProtocolError::UnwrapFailed(wk.kid.clone()))?;
            let mut key = Zeroizing::new([0u8; 16]);
            kek.unwrap(&wrapped, key.as_mut())
                .map_err(|_| ProtocolError::UnwrapFailed(wk.kid.clone()))?;
            keys.push(ContentKey { kid, key });
        }
        self.pending_nonce = None;
        Ok(AcceptedLicense {
            kind: payload.kind,
            policy: payload.policy,
            keys,
        })
    }
}

impl Drop for ClientSession {
    fn drop(&mut self) {
        // StaticSecret zeroizes itself; the nonce is not secret but costs nothing to clear.
        self.pending_nonce.zeroize();
    }
}

/// HTTP request body: `{"drmType":"WIDEVINE","licenseChallenge":"<base64 challenge>"}`.
pub fn encode_license_request_body(challenge: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "drmType": "WIDEVINE",
        "licenseChallenge": B64.encode(challenge),
    }))
    .expect("serialising plain data cannot fail")
}

/// Server side: the challenge bytes out of a request body.
pub fn decode_license_request_body(body: &[u8]) -> Result<Vec<u8>, LicenseError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        drm_type: Option<String>,
        license_challenge: String,
    }
    let b: Body = serde_json::from_slice(body)
        .map_err(|e| LicenseError::MalformedChallenge(format!("request body: {e}")))?;
    if b.drm_type.as_deref().is_some_and(|t| t != "WIDEVINE") {
        return Err(LicenseError::MalformedChallenge(
            "drmType must be WIDEVINE".into(),
        ));
    }
    B64.decode(b.license_challenge)
        .map_err(|_| LicenseError::MalformedChallenge("licenseChallenge is not base64".into()))
}

/// HTTP 200 response body: `{"license":"<base64 license>"}`.
pub fn encode_license_response_body(license: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "license": B64.encode(license) }))
        .expect("serialising plain data cannot fail")
}

/// Client side: the license bytes out of a 200 response body.
pub fn decode_license_response_body(body: &[u8]) -> Result<Vec<u8>, ProtocolError> {
    #[derive(Deserialize)]
    struct Body {
        license: String,
    }
    let b: Body =
        serde_json::from_slice(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    B64.decode(b.license)
        .map_err(|_| ProtocolError::Malformed("license is not base64".into()))
}

/// Server side in one call: request body in, 200 response body out (or the error whose
/// `status()`, `retry_after_secs()` and `to_json_body()` make the error response).
pub fn serve_license_request(
    request_body: &[u8],
    key_for: impl FnMut(&KeyId) -> Option<[u8; 16]>,
    policy: &LicensePolicy,
) -> Result<Vec<u8>, LicenseError> {
    let challenge = decode_license_request_body(request_body)?;
    let license = issue_license(&challenge, key_for, policy)?;
    Ok(encode_license_response_body(&license))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KID_A: KeyId = KeyId([0xa; 16]);
    const KID_B: KeyId = KeyId([0xb; 16]);
    const KID_C: KeyId = KeyId([0xc; 16]);

    fn keystore(kid: &KeyId) -> Option<[u8; 16]> {
        match kid.0[0] {
            0xa => Some([0x11; 16]),
            0xb => Some([0x22; 16]),
            _ => None,
        }
    }

    fn policy() -> LicensePolicy {
        LicensePolicy {
            license_duration_secs: 60,
            renewal_delay_secs: 0,
            can_renew: true,
        }
    }

    #[test]
    fn round_trip_through_http_bodies() {
        let mut session = ClientSession::new(
            vec![KID_A, KID_B, KID_C],
            b"cid".to_vec(),
            Default::default(),
        );
        let challenge = session.challenge(RequestKind::License);
        let parsed = parse_challenge(&challenge).unwrap();
        assert_eq!(parsed.client_info.security_level, 3);
        assert_eq!(parsed.key_ids.len(), 3);

        let request = encode_license_request_body(&challenge);
        let response = serve_license_request(&request, keystore, &policy()).unwrap();
        let license = decode_license_response_body(&response).unwrap();
        // Content keys never travel in clear.
        let text = String::from_utf8_lossy(&license);
        assert!(!text.contains(&B64.encode([0x11u8; 16])));
        assert!(!text.contains(&hex::encode([0x11u8; 16])));

        let accepted = session.accept_license(&license).unwrap();
        assert_eq!(accepted.kind, RequestKind::License);
        assert_eq!(accepted.policy, policy());
        assert_eq!(
            accepted.policy.renewal_after(),
            Some(Duration::from_secs(48))
        );
        let got: Vec<_> = accepted.keys.iter().map(|k| (k.kid, *k.key)).collect();
        assert_eq!(got, vec![(KID_A, [0x11; 16]), (KID_B, [0x22; 16])]);

        // The same license cannot be replayed, and a renewal works with the same session key.
        assert_eq!(
            session.accept_license(&license).err(),
            Some(ProtocolError::NoPendingChallenge)
        );
        let renewal = session.challenge(RequestKind::Renewal);
        assert_eq!(
            session.accept_license(&license).err(),
            Some(ProtocolError::NotForThisChallenge)
        );
        let renewed = issue_license(&renewal, keystore, &policy()).unwrap();
        assert_eq!(
            session.accept_license(&renewed).unwrap().kind,
            RequestKind::Renewal
        );
    }

    #[test]
    fn license_for_another_session_does_not_open() {
        let mut mine = ClientSession::new(vec![KID_A], vec![], Default::default());
        let mut theirs = ClientSession::new(vec![KID_A], vec![], Default::default());
        mine.challenge(RequestKind::License);
        let license =
            issue_license(&theirs.challenge(RequestKind::License), keystore, &policy()).unwrap();
        assert_eq!(
            mine.accept_license(&license).err(),
            Some(ProtocolError::NotForThisChallenge)
        );
    }

    #[test]
    fn only_the_provisioned_server_key_is_trusted() {
        let other = ServerKey::generate();
        let mut session = ClientSession::new(vec![KID_A], vec![], Default::default());
        let challenge = session.challenge(RequestKind::License);
        let license = issue_license_as(&other, &challenge, keystore, &policy()).unwrap();
        let err = session.accept_license(&license).err().unwrap();
        assert_eq!(
            err,
            ProtocolError::UntrustedServer {
                got: B64.encode(other.public()),
                trusted: B64.encode(emulator_server_public_key()),
            }
        );
        assert!(err.to_string().contains("does not trust"), "{err}");
        // The same license opens for a session provisioned with that server's key.
        let mut session = ClientSession::new(vec![KID_A], vec![], Default::default())
            .trust_server(other.public());
        let challenge = session.challenge(RequestKind::License);
        let license = issue_license_as(&other, &challenge, keystore, &policy()).unwrap();
        assert_eq!(session.accept_license(&license).unwrap().keys.len(), 1);
        // Public keys read back as written; anything else is a clear error.
        let b64 = B64.encode(other.public());
        assert_eq!(parse_server_public_key(&b64), Ok(other.public()));
        assert!(parse_server_public_key("c2hvcnQ=")
            .unwrap_err()
            .contains("32 bytes"));
    }

    #[test]
    fn tampered_license_fails_mac() {
        let mut session = ClientSession::new(vec![KID_A], vec![], Default::default());
        let challenge = session.challenge(RequestKind::License);
        let license = issue_license(&challenge, keystore, &LicensePolicy::default()).unwrap();
        let mut env: serde_json::Value = serde_json::from_slice(&license).unwrap();
        let payload = B64.decode(env["payload"].as_str().unwrap()).unwrap();
        let tampered = String::from_utf8(payload)
            .unwrap()
            .replace("\"license_duration_secs\":0", "\"license_duration_secs\":9");
        env["payload"] = B64.encode(tampered).into();
        let err = session
            .accept_license(&serde_json::to_vec(&env).unwrap())
            .err();
        assert_eq!(err, Some(ProtocolError::BadMac));
    }

    #[test]
    fn server_errors_follow_the_table() {
        let mut session = ClientSession::new(vec![KID_C], vec![], Default::default());
        let err = issue_license(
            &session.challenge(RequestKind::License),
            keystore,
            &policy(),
        )
        .unwrap_err();
        assert_eq!((err.status(), err.code()), (404, "unknown_key_id"));
        assert_eq!(err.client_action(), ClientAction::Fail);

        for bad in [&b"{}"[..], b"not json", br#"{"licenseChallenge":"!!"}"#] {
            let err = serve_license_request(bad, keystore, &policy()).unwrap_err();
            assert_eq!((err.status(), err.code()), (400, "malformed_challenge"));
        }
        let low_order = serde_json::to_vec(&Challenge {
            version: 1,
            kind: RequestKind::License,
            session_id: "00".into(),
            nonce: B64.encode([0u8; 16]),
            client_public_key: B64.encode([0u8; 32]),
            key_ids: vec![KID_A.to_string()],
            content_id: String::new(),
            client_info: Default::default(),
        })
        .unwrap();
        assert_eq!(
            issue_license(&low_order, keystore, &policy())
                .unwrap_err()
                .status(),
            400
        );

        // Every row survives the trip through an HTTP response.
        for e in [
            LicenseError::MalformedChallenge("x".into()),
            LicenseError::NotEntitled("no subscription".into()),
            LicenseError::InvalidToken("expired".into()),
            LicenseError::TooManyRequests {
                retry_after_secs: 3,
            },
            LicenseError::ServerError("boom".into()),
            LicenseError::Unavailable {
                retry_after_secs: Some(2),
            },
        ] {
            let back =
                LicenseError::from_response(e.status(), e.retry_after_secs(), &e.to_json_body());
            assert_eq!(back.status(), e.status());
            assert_eq!(back.code(), e.code());
            assert_eq!(back.client_action(), e.client_action());
            assert_eq!(back.retry_after_secs(), e.retry_after_secs());
        }
        let odd = LicenseError::from_response(418, None, b"teapot");
        assert_eq!((odd.status(), odd.code()), (418, "unknown"));
        assert_eq!(odd.client_action(), ClientAction::Fail);
    }
}
