// SPDX-License-Identifier: MPL-2.0
//! The OpenCDM backend (`cdm=ocdm:<library>[,<key system>]`): RDK's and WPE's CDM interface,
//! the C API of `open_cdm.h` (rdkcentral/ThunderClientLibraries), loaded with `dlopen` at READY.
//!
//! The declarations below are ours, written from reading that header. A library is loaded once
//! per path and never unloaded: a module's threads may still be running (or a callback in
//! flight) after its last session is destructed, and unloading its code under them would crash
//! the process. Every callback we hand the module catches unwinds; a session's callback context
//! is freed only after `opencdm_destruct_session` returned.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::Duration;

use libloading::Library;

use super::{
    Cdm, CdmError, InitDataType, KeyStatus, LicenseUpdate, MessageStream, MessageType,
    SecurityLevel, SessionId, SessionMessage,
};
use crate::cenc::{SampleProtection, Scheme};
use crate::protocol::KeyId;
use crate::CAT;

// ---- our declarations of open_cdm.h ----

#[repr(C)]
struct OpenCdmSystem {
    _opaque: [u8; 0],
}
#[repr(C)]
struct OpenCdmSession {
    _opaque: [u8; 0],
}

/// `OpenCDMError` (a C enum: `int`-sized).
type OcdmResult = u32;
const ERROR_NONE: OcdmResult = 0;

/// `LicenseType::Temporary`.
const LICENSE_TEMPORARY: u32 = 0;
/// `EncryptionScheme` values.
const SCHEME_AES_CTR_CENC: u32 = 1;
const SCHEME_AES_CBC_CBCS: u32 = 4;
/// `MediaType_Audio`.
const MEDIA_TYPE_AUDIO: u32 = 2;

#[repr(C)]
struct OcdmCallbacks {
    process_challenge: Option<
        unsafe extern "C" fn(*mut OpenCdmSession, *mut c_void, *const c_char, *const u8, u16),
    >,
    key_update: Option<unsafe extern "C" fn(*mut OpenCdmSession, *mut c_void, *const u8, u8)>,
    error_message: Option<unsafe extern "C" fn(*mut OpenCdmSession, *mut c_void, *const c_char)>,
    keys_updated: Option<unsafe extern "C" fn(*const OpenCdmSession, *mut c_void)>,
}

#[repr(C)]
struct OcdmPattern {
    encrypted_blocks: u32,
    clear_blocks: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct OcdmSubSample {
    clear_bytes: u16,
    encrypted_bytes: u32,
}

/// Subsamples a sample's map fits in without an allocation (an audio sample has one or none).
const INLINE_SUBSAMPLES: usize = 8;

#[repr(C)]
struct OcdmSampleInfo {
    scheme: u32,
    pattern: OcdmPattern,
    iv: *mut u8,
    iv_length: u8,
    key_id: *mut u8,
    key_id_length: u8,
    sub_sample_count: u8,
    sub_sample: *mut OcdmSubSample,
}

#[repr(C)]
struct OcdmMediaProperties {
    height: u16,
    width: u16,
    media_type: u32,
}

type IsTypeSupported = unsafe extern "C" fn(*const c_char, *const c_char) -> OcdmResult;
type CreateSystemExtended =
    unsafe extern "C" fn(*const c_char, *mut *mut OpenCdmSystem) -> OcdmResult;
type DestructSystem = unsafe extern "C" fn(*mut OpenCdmSystem) -> OcdmResult;
type ConstructSession = unsafe extern "C" fn(
    *mut OpenCdmSystem,
    u32,
    *const c_char,
    *const u8,
    u16,
    *const u8,
    u16,
    *mut OcdmCallbacks,
    *mut c_void,
    *mut *mut OpenCdmSession,
) -> OcdmResult;
type DestructSession = unsafe extern "C" fn(*mut OpenCdmSession) -> OcdmResult;
type SessionUpdate = unsafe extern "C" fn(*mut OpenCdmSession, *const u8, u16) -> OcdmResult;
type SessionStatus = unsafe extern "C" fn(*const OpenCdmSession, *const u8, u8) -> u32;
type SessionClose = unsafe extern "C" fn(*mut OpenCdmSession) -> OcdmResult;
type SessionDecryptV2 = unsafe extern "C" fn(
    *mut OpenCdmSession,
    *mut u8,
    u32,
    *const OcdmSampleInfo,
    *const OcdmMediaProperties,
) -> OcdmResult;

/// The entry points we call, resolved once per library.
struct Api {
    is_type_supported: IsTypeSupported,
    create_system_extended: CreateSystemExtended,
    destruct_system: DestructSystem,
    construct_session: ConstructSession,
    destruct_session: DestructSession,
    session_update: SessionUpdate,
    session_status: SessionStatus,
    session_close: SessionClose,
    session_decrypt_v2: SessionDecryptV2,
}

/// The names of `OpenCDMError` values, for messages.
fn error_name(code: OcdmResult) -> String {
    let name = match code {
        0 => "ERROR_NONE",
        1 => "ERROR_UNKNOWN",
        2 => "ERROR_MORE_DATA_AVAILABLE",
        3 => "ERROR_INTERFACE_NOT_IMPLEMENTED",
        4 => "ERROR_BUFFER_TOO_SMALL",
        0x8000_0001 => "ERROR_INVALID_ACCESSOR",
        0x8000_0002 => "ERROR_KEYSYSTEM_NOT_SUPPORTED",
        0x8000_0003 => "ERROR_INVALID_SESSION",
        0x8000_0004 => "ERROR_INVALID_DECRYPT_BUFFER",
        0x8000_0005 => "ERROR_OUT_OF_MEMORY",
        0x8000_0006 => "ERROR_METHOD_NOT_IMPLEMENTED",
        0x8000_4005 => "ERROR_FAIL",
        0x8007_0057 => "ERROR_INVALID_ARG",
        0x8004_C600 => "ERROR_SERVER_INTERNAL_ERROR",
        0x8004_C601 => "ERROR_SERVER_INVALID_MESSAGE",
        0x8004_C604 => "ERROR_SERVER_SERVICE_SPECIFIC",
        0x8004_DD00 => "ERROR_BUSY_CANNOT_INITIALIZE",
        _ => return format!("error 0x{code:08x}"),
    };
    name.to_owned()
}

/// `KeyStatus` of open_cdm.h.
fn key_status(code: u32) -> KeyStatus {
    match code {
        0 => KeyStatus::Usable,
        1 => KeyStatus::Expired,
        2 => KeyStatus::Released,
        3..=5 => KeyStatus::OutputRestricted,
        6 => KeyStatus::StatusPending,
        _ => KeyStatus::InternalError,
    }
}

/// Loaded libraries, by path, for the life of the process (never unloaded: see the module
/// documentation).
static LIBRARIES: LazyLock<Mutex<HashMap<PathBuf, &'static Api>>> = LazyLock::new(Mutex::default);

fn load(path: &Path) -> Result<&'static Api, String> {
    let mut libs = LIBRARIES.lock().unwrap();
    if let Some(api) = libs.get(path) {
        return Ok(api);
    }
    // SAFETY: loading runs the library's initialisers; naming a library is trusting it.
    let lib = unsafe { Library::new(path) }
        .map_err(|e| format!("cannot load the OpenCDM library {}: {e}", path.display()))?;
    let lib: &'static Library = Box::leak(Box::new(lib));
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the type is open_cdm.h's declaration of the symbol; the library lives
            // for the rest of the process.
            *unsafe { lib.get(concat!($name, "\0").as_bytes()) }.map_err(|_| {
                format!(
                    "the OpenCDM library {} has no symbol {} (not an open_cdm.h library, or \
                     one too old: {} is needed)",
                    path.display(),
                    $name,
                    "opencdm_session_decrypt_v2"
                )
            })?
        };
    }
    let api = Api {
        is_type_supported: sym!("opencdm_is_type_supported"),
        create_system_extended: sym!("opencdm_create_system_extended"),
        destruct_system: sym!("opencdm_destruct_system"),
        construct_session: sym!("opencdm_construct_session"),
        destruct_session: sym!("opencdm_destruct_session"),
        session_update: sym!("opencdm_session_update"),
        session_status: sym!("opencdm_session_status"),
        session_close: sym!("opencdm_session_close"),
        session_decrypt_v2: sym!("opencdm_session_decrypt_v2"),
    };
    let api: &'static Api = Box::leak(Box::new(api));
    libs.insert(path.to_owned(), api);
    Ok(api)
}

/// How long `create_session` waits for the module's first challenge.
const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the module's callbacks for one session write into (`userData`).
struct Context {
    state: Mutex<ContextState>,
    changed: Condvar,
    tx: tokio::sync::mpsc::UnboundedSender<SessionMessage>,
}

#[derive(Default)]
struct ContextState {
    /// The first challenge, until `create_session` takes it.
    first: Option<SessionMessage>,
    first_taken: bool,
    /// The last renewal message, for `renewal_request` (a failed renewal is retried with it).
    last_renewal: Option<Vec<u8>>,
    /// The module's last `error_message_callback` text.
    last_error: Option<String>,
}

/// A challenge's message type: WPE WebKit's OpenCDM convention prefixes `"<n>:Type:"`, `n` an
/// EME `MediaKeyMessageType` index (0 request, 1 renewal, 2 release, 3 individualization).
fn split_message_type(payload: &[u8]) -> (Option<MessageType>, &[u8]) {
    match payload {
        [n @ b'0'..=b'3', b':', b'T', b'y', b'p', b'e', b':', rest @ ..] => (
            match n {
                b'0' => Some(MessageType::LicenseRequest),
                b'1' => Some(MessageType::LicenseRenewal),
                _ => None,
            },
            rest,
        ),
        _ => (Some(MessageType::LicenseRequest), payload),
    }
}

unsafe extern "C" fn on_challenge(
    _session: *mut OpenCdmSession,
    user: *mut c_void,
    _url: *const c_char,
    challenge: *const u8,
    length: u16,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if user.is_null() || (challenge.is_null() && length > 0) {
            return;
        }
        // SAFETY: `user` is the Context we passed, alive until destruct_session returned;
        // the module gives `length` bytes at `challenge`.
        let ctx = unsafe { &*(user as *const Context) };
        let bytes = if length == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(challenge, length.into()) }
        };
        let (kind, payload) = split_message_type(bytes);
        let Some(kind) = kind else {
            gst::warning!(
                CAT,
                "OpenCDM module sent a message type this element does not serve"
            );
            return;
        };
        let message = SessionMessage {
            kind,
            payload: payload.to_vec(),
        };
        let mut state = ctx.state.lock().unwrap();
        if kind == MessageType::LicenseRenewal {
            state.last_renewal = Some(message.payload.clone());
        }
        if !state.first_taken && state.first.is_none() {
            state.first = Some(message);
            ctx.changed.notify_all();
        } else {
            let _ = ctx.tx.send(message);
        }
    }));
}

unsafe extern "C" fn on_key_update(
    _session: *mut OpenCdmSession,
    _user: *mut c_void,
    _kid: *const u8,
    _length: u8,
) {
    // Key statuses are read with opencdm_session_status when they matter.
}

unsafe extern "C" fn on_error(
    _session: *mut OpenCdmSession,
    user: *mut c_void,
    text: *const c_char,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if user.is_null() || text.is_null() {
            return;
        }
        // SAFETY: as in on_challenge; `text` is a NUL-terminated string of the module's.
        let ctx = unsafe { &*(user as *const Context) };
        let text = unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned();
        gst::warning!(CAT, "OpenCDM module error: {text}");
        ctx.state.lock().unwrap().last_error = Some(text);
        ctx.changed.notify_all();
    }));
}

unsafe extern "C" fn on_keys_updated(_session: *const OpenCdmSession, _user: *mut c_void) {}

/// A pointer the module owns, used under [`OcdmCdm`]'s locks only.
struct Raw<T>(*mut T);
// SAFETY: open_cdm.h objects may be used from any thread; we serialise calls per session.
unsafe impl<T> Send for Raw<T> {}
unsafe impl<T> Sync for Raw<T> {}

struct Session {
    raw: Raw<OpenCdmSession>,
    context: *const Context,
    kids: Vec<KeyId>,
    messages: Option<MessageStream>,
    /// Keeps the callbacks table alive as long as the session (the module may keep the pointer).
    _callbacks: Box<OcdmCallbacks>,
}
// SAFETY: the raw pointers are the module's session and our Context (an Arc's), both only
// touched under the sessions lock or by the module's callbacks, which synchronise themselves.
unsafe impl Send for Session {}

pub struct OcdmCdm {
    api: &'static Api,
    library: PathBuf,
    key_system: String,
    system_ids: Vec<[u8; 16]>,
    system: Raw<OpenCdmSystem>,
    sessions: Mutex<HashMap<SessionId, Session>>,
    next: Mutex<u64>,
}

impl OcdmCdm {
    /// Loads `library` (once per process) and creates its system for `key_system`. The error
    /// names the library and what is wrong with it.
    pub fn open(
        library: &Path,
        key_system: &str,
        system_ids: Vec<[u8; 16]>,
    ) -> Result<Self, String> {
        let api = load(library)?;
        let ks = CString::new(key_system).map_err(|_| "the key system holds a NUL".to_owned())?;
        let mime = c"audio/mp4";
        let call = |what: &str, f: &dyn Fn() -> OcdmResult| -> Result<OcdmResult, String> {
            catch_unwind(AssertUnwindSafe(f)).map_err(|_| format!("{what} panicked"))
        };
        // SAFETY: both are NUL-terminated strings that outlive the call.
        let supported = call("opencdm_is_type_supported", &|| unsafe {
            (api.is_type_supported)(ks.as_ptr(), mime.as_ptr())
        })?;
        if supported != ERROR_NONE {
            return Err(format!(
                "the OpenCDM library {} does not support key system {key_system} \
                 (opencdm_is_type_supported: {})",
                library.display(),
                error_name(supported)
            ));
        }
        let mut system: *mut OpenCdmSystem = std::ptr::null_mut();
        // SAFETY: `system` is an out pointer for the call.
        let created = unsafe { (api.create_system_extended)(ks.as_ptr(), &mut system) };
        if created != ERROR_NONE || system.is_null() {
            return Err(format!(
                "the OpenCDM library {} cannot create a system for key system {key_system} \
                 (opencdm_create_system_extended: {})",
                library.display(),
                error_name(created)
            ));
        }
        Ok(OcdmCdm {
            api,
            library: library.to_owned(),
            key_system: key_system.to_owned(),
            system_ids,
            system: Raw(system),
            sessions: Mutex::default(),
            next: Mutex::new(0),
        })
    }

    fn module_error(&self, call: &str, code: OcdmResult, context: Option<&Context>) -> CdmError {
        let said = context
            .and_then(|c| c.state.lock().unwrap().last_error.clone())
            .map(|t| format!(": {t}"))
            .unwrap_or_default();
        CdmError::Module(format!(
            "the OpenCDM module {} ({}) failed {call}: {}{said}",
            self.library.display(),
            self.key_system,
            error_name(code)
        ))
    }

    fn destroy(&self, session: Session) {
        // SAFETY: the session is ours and no other call on it runs (we hold it by value).
        unsafe {
            (self.api.session_close)(session.raw.0);
            (self.api.destruct_session)(session.raw.0);
            // Only now can no callback arrive with this context.
            drop(Arc::from_raw(session.context));
        }
    }
}

impl Drop for OcdmCdm {
    fn drop(&mut self) {
        let sessions: Vec<Session> = self
            .sessions
            .get_mut()
            .unwrap()
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in sessions {
            self.destroy(s);
        }
        // SAFETY: every session of the system is destructed.
        unsafe { (self.api.destruct_system)(self.system.0) };
    }
}

impl Cdm for OcdmCdm {
    fn system_id(&self) -> [u8; 16] {
        self.system_ids[0]
    }

    fn system_ids(&self) -> Vec<[u8; 16]> {
        self.system_ids.clone()
    }

    fn security_level(&self) -> SecurityLevel {
        // What the module guarantees is its own; this element reads clear frames back, so the
        // module is used as an L3 (software-output) CDM.
        SecurityLevel::L3
    }

    fn create_session(
        &self,
        init_data_type: InitDataType,
        init_data: &[u8],
    ) -> Result<(SessionId, SessionMessage), CdmError> {
        let length = u16::try_from(init_data.len()).map_err(|_| {
            CdmError::Module(format!(
                "init data of {} bytes is more than OpenCDM takes (65535)",
                init_data.len()
            ))
        })?;
        let kids = super::init_data_key_ids(init_data_type, init_data, &self.system_ids)?;
        let type_name = match init_data_type {
            InitDataType::Cenc => c"cenc",
            InitDataType::KeyIds => c"keyids",
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let context = Arc::into_raw(Arc::new(Context {
            state: Mutex::default(),
            changed: Condvar::new(),
            tx,
        }));
        let mut callbacks = Box::new(OcdmCallbacks {
            process_challenge: Some(on_challenge),
            key_update: Some(on_key_update),
            error_message: Some(on_error),
            keys_updated: Some(on_keys_updated),
        });
        let mut raw: *mut OpenCdmSession = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `callbacks` and `context` stay alive
        // until the session is destructed.
        let result = unsafe {
            (self.api.construct_session)(
                self.system.0,
                LICENSE_TEMPORARY,
                type_name.as_ptr(),
                init_data.as_ptr(),
                length,
                std::ptr::null(),
                0,
                &mut *callbacks,
                context as *mut c_void,
                &mut raw,
            )
        };
        // SAFETY: `context` is alive (we hold its Arc until destruct).
        let ctx = unsafe { &*context };
        if result != ERROR_NONE || raw.is_null() {
            let e = self.module_error("opencdm_construct_session", result, Some(ctx));
            if !raw.is_null() {
                // SAFETY: a session the module made despite the error.
                unsafe { (self.api.destruct_session)(raw) };
            }
            // SAFETY: no session holds the context any more.
            unsafe { drop(Arc::from_raw(context)) };
            return Err(e);
        }
        let id = {
            let mut next = self.next.lock().unwrap();
            *next += 1;
            format!("ocdm-{next}")
        };
        let session = Session {
            raw: Raw(raw),
            context,
            kids,
            messages: Some(rx),
            _callbacks: callbacks,
        };
        // The first challenge may come during construct_session or from the module's thread.
        let first = {
            let state = ctx.state.lock().unwrap();
            let (mut state, _) = ctx
                .changed
                .wait_timeout_while(state, FIRST_MESSAGE_TIMEOUT, |s| {
                    s.first.is_none() && s.last_error.is_none()
                })
                .unwrap();
            state.first_taken = true;
            state.first.take()
        };
        let Some(first) = first else {
            let said = ctx.state.lock().unwrap().last_error.clone();
            self.destroy(session);
            return Err(CdmError::Module(format!(
                "the OpenCDM module {} ({}) sent no license challenge{}",
                self.library.display(),
                self.key_system,
                said.map(|t| format!(": {t}"))
                    .unwrap_or_else(|| format!(" within {FIRST_MESSAGE_TIMEOUT:?}"))
            )));
        };
        self.sessions.lock().unwrap().insert(id.clone(), session);
        Ok((id, first))
    }

    fn take_messages(&self, session: &SessionId) -> Option<MessageStream> {
        self.sessions
            .lock()
            .unwrap()
            .get_mut(session)?
            .messages
            .take()
    }

    fn session_key_ids(&self, session: &SessionId) -> Result<Vec<KeyId>, CdmError> {
        self.sessions
            .lock()
            .unwrap()
            .get(session)
            .map(|s| s.kids.clone())
            .ok_or_else(|| CdmError::NoSuchSession(session.clone()))
    }

    fn update(&self, session: &SessionId, response: &[u8]) -> Result<LicenseUpdate, CdmError> {
        let length = u16::try_from(response.len()).map_err(|_| {
            CdmError::Module(format!(
                "a license of {} bytes is more than OpenCDM takes (65535)",
                response.len()
            ))
        })?;
        let sessions = self.sessions.lock().unwrap();
        let s = sessions
            .get(session)
            .ok_or_else(|| CdmError::NoSuchSession(session.clone()))?;
        // SAFETY: the session is open (we hold the lock); `response` is valid for the call.
        let result = unsafe { (self.api.session_update)(s.raw.0, response.as_ptr(), length) };
        // SAFETY: the context lives as long as the session.
        let ctx = unsafe { &*s.context };
        if result != ERROR_NONE {
            return Err(self.module_error("opencdm_session_update", result, Some(ctx)));
        }
        let key_statuses = s
            .kids
            .iter()
            // SAFETY: as above; the key id is 16 bytes.
            .map(|k| {
                (
                    *k,
                    key_status(unsafe { (self.api.session_status)(s.raw.0, k.0.as_ptr(), 16) }),
                )
            })
            .collect();
        // The module keeps its own clock: renewals come as its messages (take_messages).
        Ok(LicenseUpdate {
            key_statuses,
            expires_at: None,
            renew_at: None,
        })
    }

    fn renewal_request(&self, session: &SessionId) -> Result<SessionMessage, CdmError> {
        let sessions = self.sessions.lock().unwrap();
        let s = sessions
            .get(session)
            .ok_or_else(|| CdmError::NoSuchSession(session.clone()))?;
        // SAFETY: the context lives as long as the session.
        let ctx = unsafe { &*s.context };
        let last = ctx.state.lock().unwrap().last_renewal.clone();
        last.map(|payload| SessionMessage {
            kind: MessageType::LicenseRenewal,
            payload,
        })
        .ok_or(CdmError::RenewalNotAllowed)
    }

    fn close_session(&self, session: &SessionId) {
        let s = self.sessions.lock().unwrap().remove(session);
        if let Some(s) = s {
            self.destroy(s);
        }
    }

    fn key_status(&self, kid: &KeyId) -> Option<KeyStatus> {
        let sessions = self.sessions.lock().unwrap();
        let s = sessions.values().find(|s| s.kids.contains(kid))?;
        // SAFETY: the session is open (we hold the lock); the key id is 16 bytes.
        let status = key_status(unsafe { (self.api.session_status)(s.raw.0, kid.0.as_ptr(), 16) });
        // A key the module holds no license for yet is pending: "no key" to the caller.
        (status != KeyStatus::StatusPending).then_some(status)
    }

    fn decrypt(
        &self,
        kid: &KeyId,
        protection: &SampleProtection<'_>,
        data: &mut [u8],
    ) -> Result<(), CdmError> {
        // Per sample, so no allocation for what fits on the stack (the map, the IV).
        let convert = |s: &crate::cenc::Subsample| {
            Ok(OcdmSubSample {
                clear_bytes: u16::try_from(s.clear).map_err(|_| {
                    CdmError::Module(format!(
                        "a subsample of {} clear bytes is more than OpenCDM takes (65535)",
                        s.clear
                    ))
                })?,
                encrypted_bytes: s.protected,
            })
        };
        let mut inline = [OcdmSubSample::default(); INLINE_SUBSAMPLES];
        let mut heap: Vec<OcdmSubSample>;
        let subsamples: &mut [OcdmSubSample] = if protection.subsamples.len() <= INLINE_SUBSAMPLES {
            for (slot, s) in inline.iter_mut().zip(protection.subsamples) {
                *slot = convert(s)?;
            }
            &mut inline[..protection.subsamples.len()]
        } else {
            heap = protection
                .subsamples
                .iter()
                .map(convert)
                .collect::<Result<Vec<_>, CdmError>>()?;
            &mut heap
        };
        let count = u8::try_from(subsamples.len()).map_err(|_| {
            CdmError::Module(format!(
                "{} subsamples are more than OpenCDM takes (255)",
                subsamples.len()
            ))
        })?;
        let length = u32::try_from(data.len())
            .map_err(|_| CdmError::Module("a sample over 4 GiB".into()))?;
        let mut iv_buf = [0u8; 16];
        let iv = iv_buf
            .get_mut(..protection.iv.len())
            .ok_or_else(|| CdmError::Module("an IV longer than 16 bytes".into()))?;
        iv.copy_from_slice(protection.iv);
        let mut key_id = kid.0;
        let info = OcdmSampleInfo {
            scheme: match protection.scheme {
                Scheme::Cenc => SCHEME_AES_CTR_CENC,
                Scheme::Cbcs => SCHEME_AES_CBC_CBCS,
            },
            pattern: OcdmPattern {
                encrypted_blocks: protection.pattern.crypt.into(),
                clear_blocks: protection.pattern.skip.into(),
            },
            iv: iv.as_mut_ptr(),
            iv_length: iv.len() as u8,
            key_id: key_id.as_mut_ptr(),
            key_id_length: 16,
            sub_sample_count: count,
            sub_sample: if count == 0 {
                std::ptr::null_mut()
            } else {
                subsamples.as_mut_ptr()
            },
        };
        let props = OcdmMediaProperties {
            height: 0,
            width: 0,
            media_type: MEDIA_TYPE_AUDIO,
        };
        let sessions = self.sessions.lock().unwrap();
        let s = sessions
            .values()
            .find(|s| s.kids.contains(kid))
            .ok_or(CdmError::NoKey(*kid))?;
        // SAFETY: the session is open; `data`, `info` and what it points to outlive the call.
        let result = unsafe {
            (self.api.session_decrypt_v2)(s.raw.0, data.as_mut_ptr(), length, &info, &props)
        };
        if result != ERROR_NONE {
            // SAFETY: the context lives as long as the session.
            let ctx = unsafe { &*s.context };
            return Err(self.module_error("opencdm_session_decrypt_v2", result, Some(ctx)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_follow_the_webkit_prefix() {
        assert_eq!(
            split_message_type(b"1:Type:{\"kids\":[]}"),
            (Some(MessageType::LicenseRenewal), &b"{\"kids\":[]}"[..])
        );
        assert_eq!(
            split_message_type(b"0:Type:x"),
            (Some(MessageType::LicenseRequest), &b"x"[..])
        );
        assert_eq!(split_message_type(b"3:Type:x").0, None);
        assert_eq!(
            split_message_type(b"{}"),
            (Some(MessageType::LicenseRequest), &b"{}"[..])
        );
        assert_eq!(error_name(0x8000_0002), "ERROR_KEYSYSTEM_NOT_SUPPORTED");
        assert_eq!(error_name(7), "error 0x00000007");
    }

    #[test]
    fn a_missing_library_is_named() {
        let e = OcdmCdm::open(
            Path::new("/nonexistent/libocdm.so"),
            "org.w3.clearkey",
            vec![],
        )
        .err()
        .unwrap();
        assert!(
            e.contains("cannot load the OpenCDM library /nonexistent/libocdm.so"),
            "{e}"
        );
    }
}
