// SPDX-License-Identifier: MPL-2.0
//! A test CDM with Chromium's library CDM ABI (`content_decryption_module.h`, through our own
//! declarations in gst-plugin-widevine-stub/cdm-shim/cdm_abi.h) and W3C Clear Key behind it,
//! built as `libamzmusic_test_chromium_cdm.so` for widevinedecrypt's `cdm=chromium:` tests.
//!
//! Exports `InitializeCdmModule_4`, `DeinitializeCdmModule`, `GetCdmVersion` and
//! `CreateCdmInstance` (interfaces 10 and 11). Key systems: `org.w3.clearkey`, and ones that
//! fail on purpose: `org.w3.clearkey.x-fail-update` (every UpdateSession is rejected, with a
//! message), `org.w3.clearkey.x-fail-decrypt` (every Decrypt is kDecryptError) and
//! `org.w3.clearkey.x-host-9` (asks the host for Host interface 9, which no host of this
//! project speaks, and so creates no CDM); `org.w3.clearkey.x-only-11` is Clear Key at
//! interface 11 only (null for 10, so a host must fall back). Anything else: CreateCdmInstance
//! returns null.
//!
//! Messages: the license request (EME keyids JSON) is sent from inside
//! CreateSessionAndGenerateRequest, after its promise is resolved; when a license carries
//! `expiration_secs` (the emulator's Clear Key server answers `license-expiration-secs` so),
//! the module asks the host for a timer at 80 % of the lifetime and sends a kLicenseRenewal
//! message when it fires. It has no threads: everything happens in calls the host makes.
//! No Rust panic unwinds into C++.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use amzmusic_common::cenc::{self, Key, Pattern, SampleProtection, Scheme, Subsample};
use amzmusic_common::chromium_cdm::{
    EncryptedInput, KeyInfo, EXCEPTION_INVALID_STATE, EXCEPTION_NOT_SUPPORTED,
    EXCEPTION_TYPE_ERROR, INIT_CENC, INIT_KEYIDS, KEY_RELEASED, KEY_USABLE, MESSAGE_RENEWAL,
    MESSAGE_REQUEST, SCHEME_CBCS, SCHEME_CENC, STATUS_DECRYPT_ERROR, STATUS_NO_KEY, STATUS_OK,
};
use amzmusic_common::clearkey;
use amzmusic_common::pssh::KeyId;

/// The system code this module rejects with (x-fail-update).
const REFUSED_CODE: u32 = 0x7e57;

extern "C" {
    fn amz_test_module_new(cdm: *mut c_void) -> *mut c_void;
    fn amz_test_host_initialized(h: *mut c_void, ok: bool);
    fn amz_test_host_new_session(h: *mut c_void, promise: u32, s: *const c_char, n: u32);
    fn amz_test_host_resolve(h: *mut c_void, promise: u32);
    fn amz_test_host_reject(
        h: *mut c_void,
        promise: u32,
        exception: u32,
        code: u32,
        message: *const c_char,
        n: u32,
    );
    fn amz_test_host_message(
        h: *mut c_void,
        s: *const c_char,
        n: u32,
        kind: u32,
        m: *const c_char,
        mn: u32,
    );
    fn amz_test_host_keys(h: *mut c_void, s: *const c_char, n: u32, keys: *const KeyInfo, c: u32);
    fn amz_test_host_expiration(h: *mut c_void, s: *const c_char, n: u32, at: f64);
    fn amz_test_host_closed(h: *mut c_void, s: *const c_char, n: u32);
    fn amz_test_host_set_timer(h: *mut c_void, delay_ms: i64, context: *mut c_void);
    fn amz_test_host_wall_time(h: *mut c_void) -> f64;
    fn amz_test_block_alloc(h: *mut c_void, block: *mut c_void, n: u32) -> *mut u8;
}

type HostGetter = unsafe extern "C" fn(c_int, *mut c_void) -> *mut c_void;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Update,
    Decrypt,
}

struct Session {
    kids: Vec<KeyId>,
    keys: HashMap<KeyId, (Key, Option<Instant>)>,
    closed: bool,
}

/// One CDM instance's state (the C++ TestModule's `cdm_`).
struct TestCdm {
    host: *mut c_void,
    fault: Fault,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sessions: HashMap<u64, Session>,
    next: u64,
}

fn session_name(n: u64) -> String {
    format!("test-chromium-{n}")
}

fn session_number(id: &[u8]) -> Option<u64> {
    std::str::from_utf8(id)
        .ok()?
        .strip_prefix("test-chromium-")?
        .parse()
        .ok()
}

impl TestCdm {
    fn resolve(&self, promise: u32) {
        // SAFETY: the host outlives its CDM instance.
        unsafe { amz_test_host_resolve(self.host, promise) }
    }

    fn reject(&self, promise: u32, exception: u32, code: u32, message: &str) {
        // SAFETY: as above; the message outlives the call.
        unsafe {
            amz_test_host_reject(
                self.host,
                promise,
                exception,
                code,
                message.as_ptr() as *const c_char,
                message.len() as u32,
            )
        }
    }

    fn message(&self, session: &str, kind: u32, payload: &[u8]) {
        // SAFETY: as above.
        unsafe {
            amz_test_host_message(
                self.host,
                session.as_ptr() as *const c_char,
                session.len() as u32,
                kind,
                payload.as_ptr() as *const c_char,
                payload.len() as u32,
            )
        }
    }

    fn keys_change(&self, session: &str, kids: &[KeyId], status: u32) {
        let infos: Vec<KeyInfo> = kids
            .iter()
            .map(|k| KeyInfo {
                key_id: k.0.as_ptr(),
                key_id_size: 16,
                status,
                system_code: 0,
            })
            .collect();
        // SAFETY: as above; `infos` and the key ids it points to outlive the call.
        unsafe {
            amz_test_host_keys(
                self.host,
                session.as_ptr() as *const c_char,
                session.len() as u32,
                infos.as_ptr(),
                infos.len() as u32,
            )
        }
    }
}

fn guarded<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

/// # Safety
/// `cdm` is a TestCdm from CreateCdmInstance, not yet destroyed.
unsafe fn cdm<'a>(cdm: *mut c_void) -> &'a TestCdm {
    // SAFETY: as documented.
    unsafe { &*(cdm as *const TestCdm) }
}

/// # Safety
/// `p` holds `n` bytes or is null.
unsafe fn bytes<'a, T>(p: *const T, n: u32) -> &'a [T] {
    if p.is_null() || n == 0 {
        &[]
    } else {
        // SAFETY: as documented.
        unsafe { std::slice::from_raw_parts(p, n as usize) }
    }
}

// ---- the exports of a CDM library ----

#[no_mangle]
pub extern "C" fn InitializeCdmModule_4() {}

#[no_mangle]
pub extern "C" fn DeinitializeCdmModule() {}

#[no_mangle]
pub extern "C" fn GetCdmVersion() -> *const c_char {
    concat!(
        "amzmusic-test-chromium-cdm ",
        env!("CARGO_PKG_VERSION"),
        " (Clear Key)\0"
    )
    .as_ptr() as *const c_char
}

/// # Safety
/// As content_decryption_module.h says: `key_system` holds `key_system_size` bytes,
/// `get_host` is callable with `user_data`.
#[no_mangle]
pub unsafe extern "C" fn CreateCdmInstance(
    interface_version: c_int,
    key_system: *const c_char,
    key_system_size: u32,
    get_host: Option<HostGetter>,
    user_data: *mut c_void,
) -> *mut c_void {
    guarded(std::ptr::null_mut(), || {
        let Some(get_host) = get_host else {
            return std::ptr::null_mut();
        };
        if !(10..=11).contains(&interface_version) {
            return std::ptr::null_mut();
        }
        // SAFETY: as documented.
        let ks = unsafe { bytes(key_system as *const u8, key_system_size) };
        let (fault, host_version) = match std::str::from_utf8(ks).unwrap_or("") {
            clearkey::KEY_SYSTEM => (Fault::None, interface_version),
            "org.w3.clearkey.x-only-11" if interface_version == 11 => (Fault::None, 11),
            "org.w3.clearkey.x-fail-update" => (Fault::Update, interface_version),
            "org.w3.clearkey.x-fail-decrypt" => (Fault::Decrypt, interface_version),
            "org.w3.clearkey.x-host-9" => (Fault::None, 9),
            _ => return std::ptr::null_mut(),
        };
        // SAFETY: the host's getter with its user data.
        let host = unsafe { get_host(host_version, user_data) };
        if host.is_null() {
            return std::ptr::null_mut();
        }
        let state = Box::into_raw(Box::new(TestCdm {
            host,
            fault,
            state: Mutex::default(),
        }));
        // SAFETY: the module keeps `state` until Destroy (amz_test_cdm_destroy frees it).
        let module = unsafe { amz_test_module_new(state as *mut c_void) };
        if module.is_null() {
            // SAFETY: ours, never handed out.
            drop(unsafe { Box::from_raw(state) });
        }
        module
    })
}

// ---- the module's methods (called by shim/module.cc) ----

#[no_mangle]
unsafe extern "C" fn amz_test_cdm_initialize(c: *mut c_void) {
    guarded((), || {
        // SAFETY: a live instance; the host outlives it.
        unsafe { amz_test_host_initialized(cdm(c).host, true) }
    })
}

#[no_mangle]
unsafe extern "C" fn amz_test_cdm_reject(c: *mut c_void, promise: u32, what: *const c_char) {
    guarded((), || {
        // SAFETY: a live instance; `what` is a C string literal of the shim.
        let what = unsafe { std::ffi::CStr::from_ptr(what) }.to_string_lossy();
        unsafe { cdm(c) }.reject(
            promise,
            EXCEPTION_NOT_SUPPORTED,
            0,
            &format!("test module: {what} is not supported"),
        )
    })
}

#[no_mangle]
unsafe extern "C" fn amz_test_cdm_create_session(
    c: *mut c_void,
    promise: u32,
    init_data_type: u32,
    data: *const u8,
    size: u32,
) {
    guarded((), || {
        // SAFETY: a live instance; `data` holds `size` bytes.
        let (cdm, init) = unsafe { (cdm(c), bytes(data, size)) };
        let kids = match init_data_type {
            INIT_CENC => clearkey::key_ids(init).unwrap_or_default(),
            INIT_KEYIDS => clearkey::parse_license_request(init).unwrap_or_default(),
            _ => Vec::new(),
        };
        if kids.is_empty() {
            cdm.reject(
                promise,
                EXCEPTION_TYPE_ERROR,
                0,
                "test module: the init data names no Clear Key key id",
            );
            return;
        }
        let id = {
            let mut state = cdm.state.lock().unwrap();
            state.next += 1;
            let n = state.next;
            state.sessions.insert(
                n,
                Session {
                    kids: kids.clone(),
                    keys: HashMap::new(),
                    closed: false,
                },
            );
            session_name(n)
        };
        // SAFETY: a live host; the id outlives the call.
        unsafe {
            amz_test_host_new_session(
                cdm.host,
                promise,
                id.as_ptr() as *const c_char,
                id.len() as u32,
            )
        };
        cdm.message(&id, MESSAGE_REQUEST, &clearkey::license_request(&kids));
    })
}

#[no_mangle]
unsafe extern "C" fn amz_test_cdm_update(
    c: *mut c_void,
    promise: u32,
    session: *const c_char,
    session_size: u32,
    response: *const u8,
    size: u32,
) {
    guarded((), || {
        // SAFETY: a live instance; the pointers hold their sizes.
        let (cdm, id, body) = unsafe {
            (
                cdm(c),
                bytes(session as *const u8, session_size),
                bytes(response, size),
            )
        };
        if cdm.fault == Fault::Update {
            cdm.reject(
                promise,
                EXCEPTION_INVALID_STATE,
                REFUSED_CODE,
                "test module: every license is refused (x-fail-update)",
            );
            return;
        }
        let Some(n) = session_number(id) else {
            cdm.reject(
                promise,
                EXCEPTION_INVALID_STATE,
                0,
                "test module: no such session",
            );
            return;
        };
        let license = match clearkey::parse_license(body) {
            Ok(l) => l,
            Err(_) => {
                cdm.reject(
                    promise,
                    EXCEPTION_TYPE_ERROR,
                    0,
                    "test module: the license is not a JWK set",
                );
                return;
            }
        };
        let now = Instant::now();
        let lifetime = license.expiration_secs.map(Duration::from_secs);
        let expires = lifetime.and_then(|d| now.checked_add(d));
        let kids = {
            let mut state = cdm.state.lock().unwrap();
            let Some(s) = state.sessions.get_mut(&n).filter(|s| !s.closed) else {
                drop(state);
                cdm.reject(
                    promise,
                    EXCEPTION_INVALID_STATE,
                    0,
                    "test module: session closed",
                );
                return;
            };
            for (kid, key) in license.keys {
                if s.kids.contains(&kid) {
                    s.keys.insert(kid, (Key::new(*key), expires));
                }
            }
            s.keys.keys().copied().collect::<Vec<_>>()
        };
        let name = session_name(n);
        cdm.keys_change(&name, &kids, KEY_USABLE);
        if let Some(d) = lifetime {
            // SAFETY: a live host.
            unsafe {
                let at = amz_test_host_wall_time(cdm.host) + d.as_secs_f64();
                amz_test_host_expiration(
                    cdm.host,
                    name.as_ptr() as *const c_char,
                    name.len() as u32,
                    at,
                );
                // The renewal is due at 80 % of the lifetime; the timer's context is the
                // session number.
                amz_test_host_set_timer(
                    cdm.host,
                    d.mul_f64(0.8).as_millis() as i64,
                    n as usize as *mut c_void,
                );
            }
        }
        cdm.resolve(promise);
    })
}

#[no_mangle]
unsafe extern "C" fn amz_test_cdm_close(
    c: *mut c_void,
    promise: u32,
    session: *const c_char,
    session_size: u32,
) {
    guarded((), || {
        // SAFETY: a live instance; the id holds its size.
        let (cdm, id) = unsafe { (cdm(c), bytes(session as *const u8, session_size)) };
        let kids = session_number(id).and_then(|n| {
            let mut state = cdm.state.lock().unwrap();
            let s = state.sessions.get_mut(&n)?;
            s.closed = true;
            s.keys.clear();
            Some(s.kids.clone())
        });
        cdm.resolve(promise);
        if let Some(kids) = kids {
            let name = String::from_utf8_lossy(id).into_owned();
            cdm.keys_change(&name, &kids, KEY_RELEASED);
            // SAFETY: a live host.
            unsafe {
                amz_test_host_closed(cdm.host, name.as_ptr() as *const c_char, name.len() as u32)
            };
        }
    })
}

#[no_mangle]
unsafe extern "C" fn amz_test_cdm_timer(c: *mut c_void, context: *mut c_void) {
    guarded((), || {
        // SAFETY: a live instance.
        let cdm = unsafe { cdm(c) };
        let n = context as usize as u64;
        let kids = {
            let state = cdm.state.lock().unwrap();
            match state.sessions.get(&n) {
                Some(s) if !s.closed => s.kids.clone(),
                _ => return,
            }
        };
        cdm.message(
            &session_name(n),
            MESSAGE_RENEWAL,
            &clearkey::license_request(&kids),
        );
    })
}

#[no_mangle]
unsafe extern "C" fn amz_test_cdm_decrypt(
    c: *mut c_void,
    input: *const EncryptedInput,
    block: *mut c_void,
) -> u32 {
    guarded(STATUS_DECRYPT_ERROR, || {
        if input.is_null() || block.is_null() {
            return STATUS_DECRYPT_ERROR;
        }
        // SAFETY: a live instance; the host's input is valid for the call.
        let (cdm, input) = unsafe { (cdm(c), &*input) };
        if cdm.fault == Fault::Decrypt {
            return STATUS_DECRYPT_ERROR;
        }
        // SAFETY: the input's pointers hold their sizes.
        let (data, kid, iv, subsamples) = unsafe {
            (
                bytes(input.data, input.data_size),
                KeyId::from_slice(bytes(input.key_id, input.key_id_size)),
                bytes(input.iv, input.iv_size),
                bytes(input.subsamples, input.subsample_count),
            )
        };
        let Some(kid) = kid else {
            return STATUS_DECRYPT_ERROR;
        };
        let scheme = match input.scheme {
            SCHEME_CENC => Scheme::Cenc,
            SCHEME_CBCS => Scheme::Cbcs,
            _ => return STATUS_DECRYPT_ERROR,
        };
        let key = {
            let state = cdm.state.lock().unwrap();
            let found = state
                .sessions
                .values()
                .filter(|s| !s.closed)
                .find_map(|s| s.keys.get(&kid).cloned());
            match found {
                Some((_, Some(t))) if Instant::now() >= t => return STATUS_NO_KEY,
                Some((k, _)) => k,
                None => return STATUS_NO_KEY,
            }
        };
        // No allocation per sample for the usual map (one subsample, or none).
        let convert = |s: &amzmusic_common::chromium_cdm::SubsampleEntry| Subsample {
            clear: s.clear,
            protected: s.cipher,
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
                crypt: input.crypt.min(255) as u8,
                skip: input.skip.min(255) as u8,
            },
        };
        // As a real CDM does: the clear sample is written once, into the host's buffer.
        // SAFETY: a live host; `block` is the host's DecryptedBlock for this call.
        let out = unsafe { amz_test_block_alloc(cdm.host, block, data.len() as u32) };
        if out.is_null() {
            return STATUS_DECRYPT_ERROR;
        }
        // SAFETY: the host's buffer holds `data.len()` bytes and is not the input's.
        let clear = unsafe { std::slice::from_raw_parts_mut(out, data.len()) };
        clear.copy_from_slice(data);
        if cenc::decrypt_in_place(&key, &protection, clear).is_err() {
            return STATUS_DECRYPT_ERROR;
        }
        STATUS_OK
    })
}

#[no_mangle]
unsafe extern "C" fn amz_test_cdm_destroy(c: *mut c_void) {
    guarded((), || {
        if !c.is_null() {
            // SAFETY: ours, from Box::into_raw in CreateCdmInstance; the module is going away.
            drop(unsafe { Box::from_raw(c as *mut TestCdm) });
        }
    })
}
