// SPDX-License-Identifier: MPL-2.0
//! A test OpenCDM module: the C API of `open_cdm.h` (our own declarations, written from the
//! header of rdkcentral/ThunderClientLibraries) with W3C Clear Key behind it, built as
//! `libamzmusic_test_ocdm.so` for widevinedecrypt's `cdm=ocdm:` tests.
//!
//! Key systems: `org.w3.clearkey`, and two that fail on purpose: `org.w3.clearkey.x-fail-update`
//! (every `opencdm_session_update` is refused, with an error message) and
//! `org.w3.clearkey.x-fail-decrypt` (every `opencdm_session_decrypt_v2` fails). Anything else
//! is `ERROR_KEYSYSTEM_NOT_SUPPORTED`.
//!
//! Messages: the first license request is sent from inside `opencdm_construct_session`, bare;
//! when a license carries `expiration_secs` (the emulator's Clear Key server answers
//! `license-expiration-secs` so), the module sends a renewal (prefixed `1:Type:`, WPE WebKit's
//! convention) from its own thread at 80 % of the lifetime. `opencdm_destruct_session` stops
//! and joins that thread, so no callback arrives after it returns. No export unwinds into C.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use amzmusic_common::cenc::{self, Key, Pattern, SampleProtection, Scheme, Subsample};
use amzmusic_common::clearkey;
use amzmusic_common::pssh::KeyId;

type OcdmResult = u32;
const ERROR_NONE: OcdmResult = 0;
const ERROR_KEYSYSTEM_NOT_SUPPORTED: OcdmResult = 0x8000_0002;
const ERROR_INVALID_SESSION: OcdmResult = 0x8000_0003;
const ERROR_INVALID_DECRYPT_BUFFER: OcdmResult = 0x8000_0004;
const ERROR_FAIL: OcdmResult = 0x8000_4005;
const ERROR_INVALID_ARG: OcdmResult = 0x8007_0057;

const STATUS_USABLE: u32 = 0;
const STATUS_EXPIRED: u32 = 1;
const STATUS_PENDING: u32 = 6;

#[repr(C)]
pub struct Callbacks {
    process_challenge:
        Option<unsafe extern "C" fn(*mut Session, *mut c_void, *const c_char, *const u8, u16)>,
    key_update: Option<unsafe extern "C" fn(*mut Session, *mut c_void, *const u8, u8)>,
    error_message: Option<unsafe extern "C" fn(*mut Session, *mut c_void, *const c_char)>,
    keys_updated: Option<unsafe extern "C" fn(*const Session, *mut c_void)>,
}

#[repr(C)]
pub struct Pattern_ {
    encrypted_blocks: u32,
    clear_blocks: u32,
}

#[repr(C)]
pub struct SubSampleInfo {
    clear_bytes: u16,
    encrypted_bytes: u32,
}

#[repr(C)]
pub struct SampleInfo {
    scheme: u32,
    pattern: Pattern_,
    iv: *mut u8,
    iv_length: u8,
    key_id: *mut u8,
    key_id_length: u8,
    sub_sample_count: u8,
    sub_sample: *mut SubSampleInfo,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Update,
    Decrypt,
}

fn fault_of(key_system: &str) -> Option<Fault> {
    match key_system {
        clearkey::KEY_SYSTEM => Some(Fault::None),
        "org.w3.clearkey.x-fail-update" => Some(Fault::Update),
        "org.w3.clearkey.x-fail-decrypt" => Some(Fault::Decrypt),
        _ => None,
    }
}

pub struct System {
    fault: Fault,
}

/// What the renewal thread and the API calls share.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

struct State {
    keys: HashMap<KeyId, (Key, Option<Instant>)>,
    /// When the next renewal message is due.
    renew_at: Option<Instant>,
    closed: bool,
}

pub struct Session {
    fault: Fault,
    kids: Vec<KeyId>,
    callbacks: Callbacks,
    user: *mut c_void,
    shared: Arc<Shared>,
    timer: Mutex<Option<JoinHandle<()>>>,
}

/// The callbacks' user data, carried to the renewal thread.
struct Caller {
    session: *mut Session,
    challenge:
        Option<unsafe extern "C" fn(*mut Session, *mut c_void, *const c_char, *const u8, u16)>,
    user: *mut c_void,
}
// SAFETY: the session outlives the thread (destruct joins it); the host's callbacks are
// callable from any thread (open_cdm.h delivers them from the module's threads).
unsafe impl Send for Caller {}

impl Caller {
    fn send(&self, message: &[u8]) {
        if let Some(f) = self.challenge {
            // SAFETY: the host's callback with its user data; `message` outlives the call.
            unsafe {
                f(
                    self.session,
                    self.user,
                    c"".as_ptr(),
                    message.as_ptr(),
                    message.len().min(u16::MAX as usize) as u16,
                )
            };
        }
    }
}

fn guarded(f: impl FnOnce() -> OcdmResult) -> OcdmResult {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(ERROR_FAIL)
}

unsafe fn c_str<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: the caller passes a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// # Safety
/// `key_system` is a NUL-terminated string or null.
#[no_mangle]
pub unsafe extern "C" fn opencdm_is_type_supported(
    key_system: *const c_char,
    _mime_type: *const c_char,
) -> OcdmResult {
    guarded(|| match unsafe { c_str(key_system) }.and_then(fault_of) {
        Some(_) => ERROR_NONE,
        None => ERROR_KEYSYSTEM_NOT_SUPPORTED,
    })
}

/// # Safety
/// `key_system` is a NUL-terminated string or null; `system` a valid out pointer.
#[no_mangle]
pub unsafe extern "C" fn opencdm_create_system_extended(
    key_system: *const c_char,
    system: *mut *mut System,
) -> OcdmResult {
    guarded(|| {
        if system.is_null() {
            return ERROR_INVALID_ARG;
        }
        match unsafe { c_str(key_system) }.and_then(fault_of) {
            Some(fault) => {
                // SAFETY: checked non-null.
                unsafe { *system = Box::into_raw(Box::new(System { fault })) };
                ERROR_NONE
            }
            None => ERROR_KEYSYSTEM_NOT_SUPPORTED,
        }
    })
}

/// # Safety
/// `system` comes from `opencdm_create_system_extended`, and every session of it is destructed.
#[no_mangle]
pub unsafe extern "C" fn opencdm_destruct_system(system: *mut System) -> OcdmResult {
    guarded(|| {
        if !system.is_null() {
            // SAFETY: ours, from Box::into_raw.
            drop(unsafe { Box::from_raw(system) });
        }
        ERROR_NONE
    })
}

/// # Safety
/// As open_cdm.h says: valid pointers for the given lengths, `callbacks` readable.
#[no_mangle]
pub unsafe extern "C" fn opencdm_construct_session(
    system: *mut System,
    _license_type: u32,
    init_data_type: *const c_char,
    init_data: *const u8,
    init_data_length: u16,
    _cdm_data: *const u8,
    _cdm_data_length: u16,
    callbacks: *mut Callbacks,
    user_data: *mut c_void,
    session: *mut *mut Session,
) -> OcdmResult {
    guarded(|| {
        if system.is_null() || session.is_null() || callbacks.is_null() || init_data.is_null() {
            return ERROR_INVALID_ARG;
        }
        // SAFETY: checked non-null; lengths as given.
        let (system, init, cbs) = unsafe {
            (
                &*system,
                std::slice::from_raw_parts(init_data, init_data_length.into()),
                &*callbacks,
            )
        };
        let kids = match unsafe { c_str(init_data_type) } {
            Some("cenc") => clearkey::key_ids(init).unwrap_or_default(),
            Some("keyids") => init
                .chunks_exact(16)
                .filter_map(KeyId::from_slice)
                .collect(),
            _ => Vec::new(),
        };
        if kids.is_empty() {
            return ERROR_INVALID_ARG;
        }
        let s = Box::into_raw(Box::new(Session {
            fault: system.fault,
            kids,
            callbacks: Callbacks {
                process_challenge: cbs.process_challenge,
                key_update: cbs.key_update,
                error_message: cbs.error_message,
                keys_updated: cbs.keys_updated,
            },
            user: user_data,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    keys: HashMap::new(),
                    renew_at: None,
                    closed: false,
                }),
                changed: Condvar::new(),
            }),
            timer: Mutex::new(None),
        }));
        // SAFETY: `session` checked non-null; `s` is ours.
        unsafe { *session = s };
        let sess = unsafe { &*s };
        let caller = Caller {
            session: s,
            challenge: sess.callbacks.process_challenge,
            user: sess.user,
        };
        caller.send(&clearkey::license_request(&sess.kids));
        // The renewal thread: sends a renewal whenever `renew_at` passes, until closed.
        let shared = sess.shared.clone();
        let request = clearkey::license_request(&sess.kids);
        let handle = std::thread::Builder::new()
            .name("test-ocdm-renewal".into())
            .spawn(move || {
                let mut state = shared.state.lock().unwrap();
                loop {
                    if state.closed {
                        return;
                    }
                    match state.renew_at {
                        Some(at) if Instant::now() >= at => {
                            state.renew_at = None;
                            drop(state);
                            let _ = catch_unwind(AssertUnwindSafe(|| {
                                caller.send(&[b"1:Type:".as_slice(), &request].concat())
                            }));
                            state = shared.state.lock().unwrap();
                        }
                        Some(at) => {
                            let wait = at.saturating_duration_since(Instant::now());
                            state = shared.changed.wait_timeout(state, wait).unwrap().0;
                        }
                        None => state = shared.changed.wait(state).unwrap(),
                    }
                }
            });
        match handle {
            Ok(h) => *sess.timer.lock().unwrap() = Some(h),
            Err(_) => return ERROR_FAIL,
        }
        ERROR_NONE
    })
}

fn session<'a>(s: *const Session) -> Option<&'a Session> {
    // SAFETY: the host passes a session of ours (or null).
    (!s.is_null()).then(|| unsafe { &*s })
}

/// # Safety
/// `session` comes from `opencdm_construct_session`; no call on it runs concurrently.
#[no_mangle]
pub unsafe extern "C" fn opencdm_destruct_session(session: *mut Session) -> OcdmResult {
    guarded(|| {
        let Some(s) = self::session(session) else {
            return ERROR_INVALID_SESSION;
        };
        s.shared.state.lock().unwrap().closed = true;
        s.shared.changed.notify_all();
        if let Some(h) = s.timer.lock().unwrap().take() {
            let _ = h.join();
        }
        // SAFETY: ours, from Box::into_raw; the renewal thread has ended.
        drop(unsafe { Box::from_raw(session) });
        ERROR_NONE
    })
}

/// # Safety
/// `session` is a live session of ours.
#[no_mangle]
pub unsafe extern "C" fn opencdm_session_close(session: *mut Session) -> OcdmResult {
    guarded(|| {
        let Some(s) = self::session(session) else {
            return ERROR_INVALID_SESSION;
        };
        let mut state = s.shared.state.lock().unwrap();
        state.closed = true;
        state.keys.clear();
        s.shared.changed.notify_all();
        ERROR_NONE
    })
}

fn error_message(s: &Session, session: *mut Session, text: &CStr) {
    if let Some(f) = s.callbacks.error_message {
        // SAFETY: the host's callback with its user data.
        unsafe { f(session, s.user, text.as_ptr()) };
    }
}

/// # Safety
/// `session` is a live session of ours; `message` holds `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn opencdm_session_update(
    session: *mut Session,
    message: *const u8,
    length: u16,
) -> OcdmResult {
    guarded(|| {
        let Some(s) = self::session(session) else {
            return ERROR_INVALID_SESSION;
        };
        if s.fault == Fault::Update {
            error_message(
                s,
                session,
                c"test module: every license is refused (x-fail-update)",
            );
            return ERROR_FAIL;
        }
        if message.is_null() {
            return ERROR_INVALID_ARG;
        }
        // SAFETY: as documented.
        let body = unsafe { std::slice::from_raw_parts(message, length.into()) };
        let license = match clearkey::parse_license(body) {
            Ok(l) => l,
            Err(_) => {
                error_message(s, session, c"test module: the license is not a JWK set");
                return ERROR_INVALID_ARG;
            }
        };
        let now = Instant::now();
        let lifetime = license.expiration_secs.map(Duration::from_secs);
        let expires = lifetime.and_then(|d| now.checked_add(d));
        let mut state = s.shared.state.lock().unwrap();
        for (kid, key) in license.keys {
            if s.kids.contains(&kid) {
                state.keys.insert(kid, (Key::new(*key), expires));
            }
        }
        state.renew_at = lifetime.and_then(|d| now.checked_add(d.mul_f64(0.8)));
        drop(state);
        s.shared.changed.notify_all();
        if let Some(f) = s.callbacks.keys_updated {
            // SAFETY: the host's callback with its user data.
            unsafe { f(session, s.user) };
        }
        ERROR_NONE
    })
}

/// # Safety
/// `session` is a live session of ours; `key_id` holds `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn opencdm_session_status(
    session: *const Session,
    key_id: *const u8,
    length: u8,
) -> u32 {
    catch_unwind(AssertUnwindSafe(|| {
        let Some(s) = self::session(session) else {
            return STATUS_PENDING;
        };
        if key_id.is_null() {
            return STATUS_PENDING;
        }
        // SAFETY: as documented.
        let Some(kid) =
            KeyId::from_slice(unsafe { std::slice::from_raw_parts(key_id, length.into()) })
        else {
            return STATUS_PENDING;
        };
        match s.shared.state.lock().unwrap().keys.get(&kid) {
            Some((_, Some(t))) if Instant::now() >= *t => STATUS_EXPIRED,
            Some(_) => STATUS_USABLE,
            None => STATUS_PENDING,
        }
    }))
    .unwrap_or(STATUS_PENDING)
}

/// # Safety
/// `session` is a live session of ours; `data` holds `length` bytes; `info` and what it
/// points to are valid.
#[no_mangle]
pub unsafe extern "C" fn opencdm_session_decrypt_v2(
    session: *mut Session,
    data: *mut u8,
    length: u32,
    info: *const SampleInfo,
    _properties: *const c_void,
) -> OcdmResult {
    guarded(|| {
        let Some(s) = self::session(session) else {
            return ERROR_INVALID_SESSION;
        };
        if s.fault == Fault::Decrypt {
            return ERROR_INVALID_DECRYPT_BUFFER;
        }
        if data.is_null() || info.is_null() {
            return ERROR_INVALID_ARG;
        }
        // SAFETY: as documented.
        let info = unsafe { &*info };
        if info.key_id.is_null() || info.iv.is_null() {
            return ERROR_INVALID_ARG;
        }
        let (kid, iv, subsamples) = unsafe {
            (
                KeyId::from_slice(std::slice::from_raw_parts(
                    info.key_id,
                    info.key_id_length.into(),
                )),
                std::slice::from_raw_parts(info.iv, info.iv_length.into()),
                if info.sub_sample.is_null() {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(info.sub_sample, info.sub_sample_count.into())
                },
            )
        };
        let Some(kid) = kid else {
            return ERROR_INVALID_ARG;
        };
        let scheme = match info.scheme {
            1 => Scheme::Cenc,
            4 => Scheme::Cbcs,
            _ => return ERROR_INVALID_ARG,
        };
        let key = match s.shared.state.lock().unwrap().keys.get(&kid) {
            Some((_, Some(t))) if Instant::now() >= *t => return ERROR_INVALID_SESSION,
            Some((k, _)) => k.clone(),
            None => return ERROR_INVALID_SESSION,
        };
        // No allocation per sample for the usual map (one subsample, or none).
        let convert = |s: &SubSampleInfo| Subsample {
            clear: s.clear_bytes.into(),
            protected: s.encrypted_bytes,
        };
        let mut inline = [Subsample {
            clear: 0,
            protected: 0,
        }; 8];
        let heap: Vec<Subsample>;
        let subsamples: &[Subsample] = if subsamples.len() <= inline.len() {
            for (slot, s) in inline.iter_mut().zip(subsamples) {
                *slot = convert(s);
            }
            &inline[..subsamples.len()]
        } else {
            heap = subsamples.iter().map(convert).collect();
            &heap
        };
        let protection = SampleProtection {
            scheme,
            iv,
            subsamples,
            pattern: Pattern {
                crypt: info.pattern.encrypted_blocks.min(255) as u8,
                skip: info.pattern.clear_blocks.min(255) as u8,
            },
        };
        // SAFETY: as documented.
        let buf = unsafe { std::slice::from_raw_parts_mut(data, length as usize) };
        match cenc::decrypt_in_place(&key, &protection, buf) {
            Ok(()) => ERROR_NONE,
            Err(_) => ERROR_INVALID_DECRYPT_BUFFER,
        }
    })
}
