// SPDX-License-Identifier: MPL-2.0
//! The Chromium CDM backend (`cdm=chromium:<library>[,<key system>]`): we are the host of a
//! library implementing Chromium's `content_decryption_module.h` (Chrome's
//! `libwidevinecdm.so`, or the workspace's test module), loaded with `dlopen` at READY.
//!
//! That interface is a C++ ABI (the CDM and the host are classes with vtables), so its C++ half
//! is an in-tree shim (`cdm-shim/`, built by `cc`): a Host whose virtual methods forward to the
//! `extern "C"` callbacks below, and `extern "C"` wrappers of the CDM's virtual methods. The
//! declarations are ours (`cdm-shim/cdm_abi.h`). Interface versions 10 and 11.
//!
//! Calls into one CDM instance are serialized (Chromium calls a CDM from one thread at a time);
//! its timers (`Host::SetTimer`) and the answers the host owes it (platform challenge, output
//! protection, storage id: all refused) run on a host thread, never from inside a call. Promises
//! are waited for with a timeout. A library is loaded once per path and never unloaded: a
//! callback could otherwise run code that is gone. Every callback catches unwinds; the host
//! object and its context outlive the CDM instance (freed after `Destroy` returned).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use amzmusic_common::chromium_cdm::{
    self as abi, exception_name, EncryptedInput, KeyInfo, SubsampleEntry, INIT_CENC, INIT_KEYIDS,
    SCHEME_CBCS, SCHEME_CENC,
};
use amzmusic_common::clearkey;
use libloading::Library;

use super::{
    Cdm, CdmError, InitDataType, KeyStatus, LicenseUpdate, MessageStream, MessageType,
    SecurityLevel, SessionId, SessionMessage,
};
use crate::cenc::{SampleProtection, Scheme};
use crate::protocol::KeyId;
use crate::CAT;

/// The CDM interface versions this host speaks, in the order it asks for them (10 is the
/// stable one every current Widevine CDM offers).
pub const INTERFACE_VERSIONS: [c_int; 2] = [10, 11];

/// `InitializeCdmModule_<n>`: the module-interface version in the entry point's name.
const INITIALIZE_SYMBOL: &str = "InitializeCdmModule_4";

/// How long a promise (or the first license request) is waited for.
const PROMISE_TIMEOUT: Duration = Duration::from_secs(5);

// ---- our declarations of the shim (cdm-shim/host.cc) and of the library's entry points ----

const STATUS_OK: c_int = abi::STATUS_OK as c_int;
const STATUS_NO_KEY: c_int = abi::STATUS_NO_KEY as c_int;
const STATUS_DECRYPT_ERROR: c_int = abi::STATUS_DECRYPT_ERROR as c_int;

extern "C" {
    fn amz_chromium_host_new(ctx: *const c_void) -> *mut c_void;
    fn amz_chromium_host_free(host: *mut c_void);
    fn amz_chromium_initialize(
        m: *mut c_void,
        distinctive: bool,
        persistent: bool,
        hw: bool,
    ) -> c_int;
    fn amz_chromium_create_session(
        m: *mut c_void,
        promise: u32,
        init_data_type: u32,
        data: *const u8,
        size: u32,
    ) -> c_int;
    fn amz_chromium_update(
        m: *mut c_void,
        promise: u32,
        session: *const c_char,
        session_size: u32,
        response: *const u8,
        size: u32,
    ) -> c_int;
    fn amz_chromium_close(
        m: *mut c_void,
        promise: u32,
        session: *const c_char,
        session_size: u32,
    ) -> c_int;
    fn amz_chromium_timer_expired(m: *mut c_void, context: *mut c_void) -> c_int;
    fn amz_chromium_deferred(m: *mut c_void, kind: u32, arg: u32) -> c_int;
    fn amz_chromium_decrypt(
        m: *mut c_void,
        input: *const EncryptedInput,
        out: *mut u8,
        capacity: u32,
        out_size: *mut u32,
    ) -> c_int;
    fn amz_chromium_destroy(m: *mut c_void) -> c_int;
}

type HostGetter = unsafe extern "C" fn(c_int, *mut c_void) -> *mut c_void;
type InitializeModule = unsafe extern "C" fn();
type CreateInstance =
    unsafe extern "C" fn(c_int, *const c_char, u32, HostGetter, *mut c_void) -> *mut c_void;
type GetVersion = unsafe extern "C" fn() -> *const c_char;

struct Api {
    create: CreateInstance,
    version: String,
}

/// Loaded libraries, by path, for the life of the process (never unloaded).
static LIBRARIES: LazyLock<Mutex<HashMap<PathBuf, &'static Api>>> = LazyLock::new(Mutex::default);

fn load(path: &Path) -> Result<&'static Api, String> {
    let mut libs = LIBRARIES.lock().unwrap();
    if let Some(api) = libs.get(path) {
        return Ok(api);
    }
    // SAFETY: loading runs the library's initialisers; naming a library is trusting it.
    let lib = unsafe { Library::new(path) }.map_err(|e| {
        format!(
            "cannot load the Chromium CDM library {}: {e}",
            path.display()
        )
    })?;
    let lib: &'static Library = Box::leak(Box::new(lib));
    macro_rules! sym {
        ($name:expr, $ty:ty) => {{
            let name: &str = $name;
            // SAFETY: the type is content_decryption_module.h's declaration of the symbol; the
            // library lives for the rest of the process.
            *unsafe { lib.get::<$ty>(format!("{name}\0").as_bytes()) }.map_err(|_| {
                format!(
                    "the Chromium CDM library {} has no symbol {name} (not a \
                     content_decryption_module.h library, or one of another module version)",
                    path.display()
                )
            })?
        }};
    }
    let initialize = sym!(INITIALIZE_SYMBOL, InitializeModule);
    let create = sym!("CreateCdmInstance", CreateInstance);
    let get_version = sym!("GetCdmVersion", GetVersion);
    let _deinitialize = sym!("DeinitializeCdmModule", InitializeModule);
    // SAFETY: the module's initialiser, once per process (the library is never unloaded, so
    // DeinitializeCdmModule is never due).
    unsafe { initialize() };
    // SAFETY: a NUL-terminated string the library owns, or null.
    let version = unsafe {
        let v = get_version();
        (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
    }
    .filter(|v| !v.is_empty())
    .ok_or_else(|| {
        format!(
            "the Chromium CDM library {} reports no version (GetCdmVersion returned nothing)",
            path.display()
        )
    })?;
    let api: &'static Api = Box::leak(Box::new(Api { create, version }));
    libs.insert(path.to_owned(), api);
    Ok(api)
}

/// How a promise ended.
enum Outcome {
    Resolved,
    NewSession(Option<String>),
    KeyStatus,
    Rejected {
        exception: u32,
        system_code: u32,
        message: String,
    },
}

fn key_status(code: u32) -> KeyStatus {
    match code {
        abi::KEY_USABLE => KeyStatus::Usable,
        abi::KEY_EXPIRED => KeyStatus::Expired,
        abi::KEY_OUTPUT_RESTRICTED | abi::KEY_OUTPUT_DOWNSCALED => KeyStatus::OutputRestricted,
        abi::KEY_PENDING => KeyStatus::StatusPending,
        abi::KEY_RELEASED => KeyStatus::Released,
        _ => KeyStatus::InternalError,
    }
}

struct SessionState {
    kids: Vec<KeyId>,
    statuses: HashMap<KeyId, KeyStatus>,
    first: Option<SessionMessage>,
    first_taken: bool,
    last_renewal: Option<Vec<u8>>,
    tx: tokio::sync::mpsc::UnboundedSender<SessionMessage>,
    rx: Option<MessageStream>,
}

impl SessionState {
    fn new() -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        SessionState {
            kids: Vec::new(),
            statuses: HashMap::new(),
            first: None,
            first_taken: false,
            last_renewal: None,
            tx,
            rx: Some(rx),
        }
    }
}

#[derive(Default)]
struct HostState {
    initialized: Option<bool>,
    promises: HashMap<u32, Outcome>,
    next_promise: u32,
    sessions: HashMap<String, SessionState>,
    /// Host interface versions the module asked for (get_cdm_host_func).
    hosts_asked: Vec<c_int>,
    unsupported: Vec<&'static str>,
}

enum Job {
    Timer(usize),
    Deferred(u32, u32),
}

/// The host context the shim's Host object carries (`ctx`).
struct Inner {
    library: PathBuf,
    /// The CDM instance; null before creation and after `Destroy`. Locked for every call.
    module: Mutex<Raw>,
    host: Mutex<Raw>,
    state: Mutex<HostState>,
    changed: Condvar,
    jobs: Mutex<Option<mpsc::Sender<(Instant, Job)>>>,
}

struct Raw(*mut c_void);
// SAFETY: the pointers are only used under their mutex (module) or handed to the module.
unsafe impl Send for Raw {}

impl Inner {
    fn prefix(&self) -> String {
        format!("chromium CDM {}", self.library.display())
    }

    fn schedule(&self, at: Instant, job: Job) {
        if let Some(tx) = self.jobs.lock().unwrap().as_ref() {
            let _ = tx.send((at, job));
        }
    }

    fn settle(&self, promise: u32, outcome: Outcome) {
        self.state.lock().unwrap().promises.insert(promise, outcome);
        self.changed.notify_all();
    }

    fn new_promise(&self) -> u32 {
        let mut s = self.state.lock().unwrap();
        s.next_promise = s.next_promise.wrapping_add(1);
        s.next_promise
    }

    /// Calls the CDM (under its lock) and waits for the promise the call settles.
    fn call(
        &self,
        what: &str,
        f: impl FnOnce(*mut c_void, u32) -> c_int,
    ) -> Result<Outcome, CdmError> {
        let promise = self.new_promise();
        {
            let module = self.module.lock().unwrap();
            if module.0.is_null() {
                return Err(CdmError::Module(format!(
                    "{}: {what}: the CDM instance is gone",
                    self.prefix()
                )));
            }
            if f(module.0, promise) != 0 {
                return Err(CdmError::Module(format!(
                    "{}: {what} threw a C++ exception",
                    self.prefix()
                )));
            }
        }
        let state = self.state.lock().unwrap();
        let (mut state, _) = self
            .changed
            .wait_timeout_while(state, PROMISE_TIMEOUT, |s| {
                !s.promises.contains_key(&promise)
            })
            .unwrap();
        state.promises.remove(&promise).ok_or_else(|| {
            CdmError::Module(format!(
                "{}: {what}: the CDM settled no promise within {PROMISE_TIMEOUT:?}",
                self.prefix()
            ))
        })
    }

    fn rejected(&self, what: &str, outcome: Outcome) -> CdmError {
        match outcome {
            Outcome::Rejected {
                exception,
                system_code,
                message,
            } => CdmError::Module(format!(
                "{}: {what} rejected: {} {system_code} {message}",
                self.prefix(),
                exception_name(exception)
            )),
            _ => CdmError::Module(format!(
                "{}: {what}: the CDM settled its promise with the wrong kind of answer",
                self.prefix()
            )),
        }
    }
}

// ---- callbacks from the shim's Host (cdm-shim/host.cc) ----

/// # Safety
/// `ctx` is the `Inner` a live host was created with.
unsafe fn with_ctx(ctx: *mut c_void, f: impl FnOnce(&Inner)) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: as documented: Inner outlives the host object.
    let inner = unsafe { &*(ctx as *const Inner) };
    let _ = catch_unwind(AssertUnwindSafe(|| f(inner)));
}

/// # Safety
/// `p` holds `n` bytes or is null.
unsafe fn bytes<'a>(p: *const c_char, n: u32) -> &'a [u8] {
    if p.is_null() || n == 0 {
        &[]
    } else {
        // SAFETY: as documented.
        unsafe { std::slice::from_raw_parts(p as *const u8, n as usize) }
    }
}

/// # Safety
/// As [`bytes`].
unsafe fn text(p: *const c_char, n: u32) -> String {
    String::from_utf8_lossy(unsafe { bytes(p, n) }).into_owned()
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_timer(ctx: *mut c_void, delay_ms: i64, context: *mut c_void) {
    unsafe {
        with_ctx(ctx, |i| {
            let delay = Duration::from_millis(delay_ms.max(0) as u64);
            i.schedule(Instant::now() + delay, Job::Timer(context as usize));
        })
    }
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_initialized(ctx: *mut c_void, success: bool) {
    unsafe {
        with_ctx(ctx, |i| {
            i.state.lock().unwrap().initialized = Some(success);
            i.changed.notify_all();
        })
    }
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_key_status(ctx: *mut c_void, promise: u32, _status: u32) {
    unsafe { with_ctx(ctx, |i| i.settle(promise, Outcome::KeyStatus)) }
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_new_session(
    ctx: *mut c_void,
    promise: u32,
    session: *const c_char,
    size: u32,
) {
    unsafe {
        with_ctx(ctx, |i| {
            let id = (!session.is_null()).then(|| text(session, size));
            i.settle(promise, Outcome::NewSession(id));
        })
    }
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_resolved(ctx: *mut c_void, promise: u32) {
    unsafe { with_ctx(ctx, |i| i.settle(promise, Outcome::Resolved)) }
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_rejected(
    ctx: *mut c_void,
    promise: u32,
    exception: u32,
    system_code: u32,
    message: *const c_char,
    size: u32,
) {
    unsafe {
        with_ctx(ctx, |i| {
            let message = text(message, size);
            i.settle(
                promise,
                Outcome::Rejected {
                    exception,
                    system_code,
                    message,
                },
            )
        })
    }
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_message(
    ctx: *mut c_void,
    session: *const c_char,
    session_size: u32,
    kind: u32,
    message: *const c_char,
    size: u32,
) {
    unsafe {
        with_ctx(ctx, |i| {
            let id = text(session, session_size);
            let payload = bytes(message, size).to_vec();
            let kind = match kind {
                0 => MessageType::LicenseRequest,
                1 => MessageType::LicenseRenewal,
                other => {
                    gst::warning!(
                        CAT,
                        "{}: ignoring a message of type {other} (release or individualization) \
                         for session {id}",
                        i.prefix()
                    );
                    return;
                }
            };
            let mut state = i.state.lock().unwrap();
            let s = state.sessions.entry(id).or_insert_with(SessionState::new);
            if kind == MessageType::LicenseRenewal {
                s.last_renewal = Some(payload.clone());
            }
            if !s.first_taken && s.first.is_none() && kind == MessageType::LicenseRequest {
                s.first = Some(SessionMessage { kind, payload });
            } else {
                let _ = s.tx.send(SessionMessage { kind, payload });
            }
            drop(state);
            i.changed.notify_all();
        })
    }
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_keys_change(
    ctx: *mut c_void,
    session: *const c_char,
    session_size: u32,
    keys: *const KeyInfo,
    count: u32,
) {
    unsafe {
        with_ctx(ctx, |i| {
            let id = text(session, session_size);
            let keys = if keys.is_null() || count == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(keys, count as usize)
            };
            let mut state = i.state.lock().unwrap();
            let s = state.sessions.entry(id).or_insert_with(SessionState::new);
            for k in keys {
                if let Some(kid) =
                    KeyId::from_slice(bytes(k.key_id as *const c_char, k.key_id_size))
                {
                    s.statuses.insert(kid, key_status(k.status));
                }
            }
            drop(state);
            i.changed.notify_all();
        })
    }
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_expiration(
    ctx: *mut c_void,
    session: *const c_char,
    session_size: u32,
    expiry: f64,
) {
    unsafe {
        with_ctx(ctx, |i| {
            gst::debug!(
                CAT,
                "{}: session {} expires at {expiry} (wall time; renewals are the module's own)",
                i.prefix(),
                text(session, session_size)
            );
        })
    }
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_closed(
    ctx: *mut c_void,
    session: *const c_char,
    session_size: u32,
) {
    unsafe {
        with_ctx(ctx, |i| {
            let id = text(session, session_size);
            if let Some(s) = i.state.lock().unwrap().sessions.get_mut(&id) {
                for status in s.statuses.values_mut() {
                    *status = KeyStatus::Released;
                }
            }
            i.changed.notify_all();
        })
    }
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_deferred(ctx: *mut c_void, kind: u32, arg: u32) {
    unsafe {
        with_ctx(ctx, |i| {
            i.schedule(Instant::now(), Job::Deferred(kind, arg))
        })
    }
}

#[no_mangle]
unsafe extern "C" fn amz_chromium_on_unsupported(ctx: *mut c_void, what: *const c_char) {
    unsafe {
        with_ctx(ctx, |i| {
            let what = if what.is_null() {
                "?".into()
            } else {
                CStr::from_ptr(what).to_string_lossy()
            };
            gst::warning!(CAT, "{}: the host does not support {what}", i.prefix());
            let what: &'static str = match what.as_ref() {
                w if w.starts_with("SendPlatformChallenge") => "platform verification",
                w if w.starts_with("CreateFileIO") => "storage",
                w if w.starts_with("RequestStorageId") => "storage id",
                _ => "output protection",
            };
            let mut state = i.state.lock().unwrap();
            if !state.unsupported.contains(&what) {
                state.unsupported.push(what);
            }
        })
    }
}

/// `GetCdmHostFunc`: hands the module our host for the versions we speak.
unsafe extern "C" fn get_host(version: c_int, user: *mut c_void) -> *mut c_void {
    let mut host = std::ptr::null_mut();
    unsafe {
        with_ctx(user, |i| {
            i.state.lock().unwrap().hosts_asked.push(version);
            if INTERFACE_VERSIONS.contains(&version) {
                host = i.host.lock().unwrap().0;
            }
        })
    };
    host
}

/// The timer thread: runs `SetTimer` expiries and deferred answers, in time order, with the
/// CDM lock held, until the sender is dropped.
fn run_jobs(inner: Arc<Inner>, rx: mpsc::Receiver<(Instant, Job)>) {
    let mut queue: BTreeMap<(Instant, u64), Job> = BTreeMap::new();
    let mut seq = 0u64;
    loop {
        let next = queue.keys().next().map(|(at, _)| *at);
        let received = match next {
            Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match received {
            Ok((at, job)) => {
                seq += 1;
                queue.insert((at, seq), job);
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        while let Some(entry) = queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let job = entry.remove();
            let module = inner.module.lock().unwrap();
            if module.0.is_null() {
                return;
            }
            // SAFETY: the CDM instance is alive (we hold its lock); a context the CDM gave us.
            let r = unsafe {
                match job {
                    Job::Timer(context) => {
                        amz_chromium_timer_expired(module.0, context as *mut c_void)
                    }
                    Job::Deferred(kind, arg) => amz_chromium_deferred(module.0, kind, arg),
                }
            };
            if r != 0 {
                gst::warning!(CAT, "{}: a timer call threw", inner.prefix());
            }
        }
    }
}

/// A CDM instance of a Chromium CDM library, with our host.
pub struct ChromiumCdm {
    inner: Arc<Inner>,
    version: c_int,
    system_ids: Vec<[u8; 16]>,
    timer: Option<JoinHandle<()>>,
}

impl ChromiumCdm {
    /// Loads `library` (once per process), creates a CDM instance for `key_system` and
    /// initializes it. The error names the library and what is wrong with it.
    pub fn open(
        library: &Path,
        key_system: &str,
        system_ids: Vec<[u8; 16]>,
    ) -> Result<Self, String> {
        let api = load(library)?;
        let inner = Arc::new(Inner {
            library: library.to_owned(),
            module: Mutex::new(Raw(std::ptr::null_mut())),
            host: Mutex::new(Raw(std::ptr::null_mut())),
            state: Mutex::default(),
            changed: Condvar::new(),
            jobs: Mutex::new(None),
        });
        let ctx = Arc::as_ptr(&inner) as *mut c_void;
        // SAFETY: the host keeps `ctx`, which outlives it (freed in Drop after Destroy).
        let host = unsafe { amz_chromium_host_new(ctx) };
        if host.is_null() {
            return Err(format!(
                "chromium CDM {}: cannot allocate the host",
                library.display()
            ));
        }
        inner.host.lock().unwrap().0 = host;
        let (tx, rx) = mpsc::channel();
        *inner.jobs.lock().unwrap() = Some(tx);
        let thread_inner = inner.clone();
        let timer = std::thread::Builder::new()
            .name("chromium-cdm-timer".into())
            .spawn(move || run_jobs(thread_inner, rx))
            .map_err(|e| format!("cannot start the CDM timer thread: {e}"))?;
        let mut cdm = ChromiumCdm {
            inner,
            version: 0,
            system_ids,
            timer: Some(timer),
        };
        let mut created = std::ptr::null_mut();
        for version in INTERFACE_VERSIONS {
            // SAFETY: the key system is valid for `len` bytes; `get_host` with our context.
            created = unsafe {
                (api.create)(
                    version,
                    key_system.as_ptr() as *const c_char,
                    key_system.len() as u32,
                    get_host,
                    ctx,
                )
            };
            if !created.is_null() {
                cdm.version = version;
                break;
            }
        }
        if created.is_null() {
            let mut asked = cdm.inner.state.lock().unwrap().hosts_asked.clone();
            asked.sort_unstable();
            asked.dedup();
            let foreign: Vec<String> = asked
                .iter()
                .filter(|v| !INTERFACE_VERSIONS.contains(v))
                .map(|v| v.to_string())
                .collect();
            return Err(if !foreign.is_empty() {
                format!(
                    "the Chromium CDM {} (version {}) asks for host interface version {}: this \
                     host speaks 10 and 11",
                    library.display(),
                    api.version,
                    foreign.join(", ")
                )
            } else {
                format!(
                    "the Chromium CDM {} (version {}) creates no CDM for key system {key_system} \
                     at interface version 10 or 11 (CreateCdmInstance returned null): it does \
                     not support that key system or these interface versions",
                    library.display(),
                    api.version
                )
            });
        }
        cdm.inner.module.lock().unwrap().0 = created;
        {
            let module = cdm.inner.module.lock().unwrap();
            // SAFETY: a live CDM instance, called under its lock.
            if unsafe { amz_chromium_initialize(module.0, false, false, false) } != 0 {
                return Err(format!(
                    "the Chromium CDM {} threw in Initialize",
                    library.display()
                ));
            }
        }
        let state = cdm.inner.state.lock().unwrap();
        let (state, _) = cdm
            .inner
            .changed
            .wait_timeout_while(state, PROMISE_TIMEOUT, |s| s.initialized.is_none())
            .unwrap();
        let initialized = state.initialized;
        drop(state);
        match initialized {
            Some(true) => {}
            Some(false) => {
                return Err(format!(
                    "the Chromium CDM {} (version {}, interface {}) failed to initialize \
                     (OnInitialized(false)); this host offers no storage, platform verification \
                     or output protection",
                    library.display(),
                    api.version,
                    cdm.version
                ))
            }
            None => {
                return Err(format!(
                    "the Chromium CDM {} did not answer Initialize within {PROMISE_TIMEOUT:?}",
                    library.display()
                ))
            }
        }
        gst::info!(
            CAT,
            "chromium CDM {} version {} at interface {} for {key_system}",
            library.display(),
            api.version,
            cdm.version
        );
        Ok(cdm)
    }

    /// The CDM interface version in use (10 or 11).
    pub fn interface_version(&self) -> i32 {
        self.version
    }
}

impl Drop for ChromiumCdm {
    fn drop(&mut self) {
        // Stop the timer thread first: no call after Destroy.
        self.inner.jobs.lock().unwrap().take();
        if let Some(t) = self.timer.take() {
            let _ = t.join();
        }
        let mut module = self.inner.module.lock().unwrap();
        if !module.0.is_null() {
            // SAFETY: a live CDM instance; nothing else calls it (we hold the lock).
            unsafe { amz_chromium_destroy(module.0) };
            module.0 = std::ptr::null_mut();
        }
        drop(module);
        let mut host = self.inner.host.lock().unwrap();
        if !host.0.is_null() {
            // SAFETY: ours; the CDM that used it is destroyed.
            unsafe { amz_chromium_host_free(host.0) };
            host.0 = std::ptr::null_mut();
        }
    }
}

impl Cdm for ChromiumCdm {
    fn system_id(&self) -> [u8; 16] {
        self.system_ids[0]
    }

    fn system_ids(&self) -> Vec<[u8; 16]> {
        self.system_ids.clone()
    }

    fn security_level(&self) -> SecurityLevel {
        // Decrypt() hands clear samples back to this element: a software-output CDM.
        SecurityLevel::L3
    }

    fn create_session(
        &self,
        init_data_type: InitDataType,
        init_data: &[u8],
    ) -> Result<(SessionId, SessionMessage), CdmError> {
        let kids = super::init_data_key_ids(init_data_type, init_data, &self.system_ids)?;
        // Chromium's keyids init data is the JSON form.
        let (type_code, data) = match init_data_type {
            InitDataType::Cenc => (INIT_CENC, init_data.to_vec()),
            InitDataType::KeyIds => (INIT_KEYIDS, clearkey::license_request(&kids)),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            CdmError::Module(format!("{}: init data over 4 GiB", self.inner.prefix()))
        })?;
        let outcome = self.inner.call("CreateSessionAndGenerateRequest", |m, p| {
            // SAFETY: a live CDM instance; `data` outlives the call.
            unsafe { amz_chromium_create_session(m, p, type_code, data.as_ptr(), size) }
        })?;
        let id = match outcome {
            Outcome::NewSession(Some(id)) => id,
            Outcome::NewSession(None) => {
                return Err(CdmError::Module(format!(
                    "{}: CreateSessionAndGenerateRequest resolved with no session id",
                    self.inner.prefix()
                )))
            }
            other => {
                return Err(self
                    .inner
                    .rejected("CreateSessionAndGenerateRequest", other))
            }
        };
        let state = self.inner.state.lock().unwrap();
        let (mut state, _) = self
            .inner
            .changed
            .wait_timeout_while(state, PROMISE_TIMEOUT, |s| {
                s.sessions.get(&id).is_none_or(|s| s.first.is_none())
            })
            .unwrap();
        let s = state
            .sessions
            .entry(id.clone())
            .or_insert_with(SessionState::new);
        s.kids = kids;
        s.first_taken = true;
        let first = s.first.take();
        drop(state);
        match first {
            Some(first) => Ok((id, first)),
            None => {
                self.close_session(&id);
                Err(CdmError::Module(format!(
                    "{}: session {id} sent no license request within {PROMISE_TIMEOUT:?}",
                    self.inner.prefix()
                )))
            }
        }
    }

    fn take_messages(&self, session: &SessionId) -> Option<MessageStream> {
        self.inner
            .state
            .lock()
            .unwrap()
            .sessions
            .get_mut(session)?
            .rx
            .take()
    }

    fn session_key_ids(&self, session: &SessionId) -> Result<Vec<KeyId>, CdmError> {
        self.inner
            .state
            .lock()
            .unwrap()
            .sessions
            .get(session)
            .map(|s| s.kids.clone())
            .ok_or_else(|| CdmError::NoSuchSession(session.clone()))
    }

    fn update(&self, session: &SessionId, response: &[u8]) -> Result<LicenseUpdate, CdmError> {
        if !self
            .inner
            .state
            .lock()
            .unwrap()
            .sessions
            .contains_key(session)
        {
            return Err(CdmError::NoSuchSession(session.clone()));
        }
        let size = u32::try_from(response.len()).map_err(|_| {
            CdmError::Module(format!("{}: a license over 4 GiB", self.inner.prefix()))
        })?;
        let outcome = self.inner.call("UpdateSession", |m, p| {
            // SAFETY: a live CDM instance; the id and the response outlive the call.
            unsafe {
                amz_chromium_update(
                    m,
                    p,
                    session.as_ptr() as *const c_char,
                    session.len() as u32,
                    response.as_ptr(),
                    size,
                )
            }
        })?;
        if !matches!(outcome, Outcome::Resolved) {
            return Err(self.inner.rejected("UpdateSession", outcome));
        }
        let state = self.inner.state.lock().unwrap();
        let s = state
            .sessions
            .get(session)
            .ok_or_else(|| CdmError::NoSuchSession(session.clone()))?;
        let key_statuses = s
            .kids
            .iter()
            .map(|k| {
                (
                    *k,
                    s.statuses
                        .get(k)
                        .copied()
                        .unwrap_or(KeyStatus::StatusPending),
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
        let state = self.inner.state.lock().unwrap();
        let s = state
            .sessions
            .get(session)
            .ok_or_else(|| CdmError::NoSuchSession(session.clone()))?;
        s.last_renewal
            .clone()
            .map(|payload| SessionMessage {
                kind: MessageType::LicenseRenewal,
                payload,
            })
            .ok_or(CdmError::RenewalNotAllowed)
    }

    fn close_session(&self, session: &SessionId) {
        let known = self
            .inner
            .state
            .lock()
            .unwrap()
            .sessions
            .contains_key(session);
        if !known {
            return;
        }
        let outcome = self.inner.call("CloseSession", |m, p| {
            // SAFETY: a live CDM instance; the id outlives the call.
            unsafe {
                amz_chromium_close(
                    m,
                    p,
                    session.as_ptr() as *const c_char,
                    session.len() as u32,
                )
            }
        });
        match outcome {
            Ok(Outcome::Resolved) => {}
            Ok(other) => gst::debug!(CAT, "{}", self.inner.rejected("CloseSession", other)),
            Err(e) => gst::debug!(CAT, "{e}"),
        }
        self.inner.state.lock().unwrap().sessions.remove(session);
    }

    fn key_status(&self, kid: &KeyId) -> Option<KeyStatus> {
        let state = self.inner.state.lock().unwrap();
        let status = state
            .sessions
            .values()
            .filter(|s| s.kids.contains(kid) || s.statuses.contains_key(kid))
            .filter_map(|s| s.statuses.get(kid).copied())
            .next()?;
        // A key the module holds no license for yet is pending: "no key" to the caller.
        (status != KeyStatus::StatusPending).then_some(status)
    }

    fn decrypt(
        &self,
        kid: &KeyId,
        protection: &SampleProtection<'_>,
        data: &mut [u8],
    ) -> Result<(), CdmError> {
        // Per sample, so the usual map (one subsample, or none) needs no allocation.
        let entry = |s: &crate::cenc::Subsample| SubsampleEntry {
            clear: s.clear,
            cipher: s.protected,
        };
        let mut inline = [SubsampleEntry::default(); 8];
        let heap: Vec<SubsampleEntry>;
        let subsamples: &[SubsampleEntry] = if protection.subsamples.len() <= inline.len() {
            for (slot, s) in inline.iter_mut().zip(protection.subsamples) {
                *slot = entry(s);
            }
            &inline[..protection.subsamples.len()]
        } else {
            heap = protection.subsamples.iter().map(entry).collect();
            &heap
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            CdmError::Module(format!("{}: a sample over 4 GiB", self.inner.prefix()))
        })?;
        // One pointer for both: the CDM reads the input before it writes its own buffer, and
        // the shim copies that buffer over the input when Decrypt has returned, so the sample
        // is decrypted in place with one copy.
        let sample = data.as_mut_ptr();
        let input = EncryptedInput {
            data: sample.cast_const(),
            data_size: size,
            scheme: match protection.scheme {
                Scheme::Cenc => SCHEME_CENC,
                Scheme::Cbcs => SCHEME_CBCS,
            },
            key_id: kid.0.as_ptr(),
            key_id_size: 16,
            pad0: 0,
            iv: protection.iv.as_ptr(),
            iv_size: protection.iv.len() as u32,
            pad1: 0,
            subsamples: if subsamples.is_empty() {
                std::ptr::null()
            } else {
                subsamples.as_ptr()
            },
            subsample_count: subsamples.len() as u32,
            pad2: 0,
            crypt: protection.pattern.crypt.into(),
            skip: protection.pattern.skip.into(),
            timestamp: 0,
        };
        let mut written = 0u32;
        let status = {
            let module = self.inner.module.lock().unwrap();
            if module.0.is_null() {
                return Err(CdmError::Module(format!(
                    "{}: Decrypt: the CDM instance is gone",
                    self.inner.prefix()
                )));
            }
            // SAFETY: a live CDM instance under its lock; every pointer outlives the call.
            unsafe { amz_chromium_decrypt(module.0, &input, sample, size, &mut written) }
        };
        match status {
            STATUS_OK if written == size => Ok(()),
            STATUS_OK => Err(CdmError::Module(format!(
                "{}: Decrypt returned {written} bytes for a sample of {size}",
                self.inner.prefix()
            ))),
            STATUS_NO_KEY => Err(CdmError::Module(format!(
                "{}: Decrypt: the CDM has no key {kid} (kNoKey)",
                self.inner.prefix()
            ))),
            STATUS_DECRYPT_ERROR => Err(CdmError::Module(format!(
                "{}: Decrypt failed (kDecryptError) with key {kid}",
                self.inner.prefix()
            ))),
            -1 => Err(CdmError::Module(format!(
                "{}: Decrypt threw a C++ exception",
                self.inner.prefix()
            ))),
            -2 => Err(CdmError::Module(format!(
                "{}: Decrypt succeeded without a buffer that fits the sample",
                self.inner.prefix()
            ))),
            other => Err(CdmError::Module(format!(
                "{}: Decrypt returned status {other}",
                self.inner.prefix()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_statuses() {
        assert_eq!(key_status(0), KeyStatus::Usable);
        assert_eq!(key_status(2), KeyStatus::Expired);
        assert_eq!(key_status(5), KeyStatus::StatusPending);
    }

    #[test]
    fn a_missing_library_is_named() {
        let e = ChromiumCdm::open(
            Path::new("/nonexistent/libwidevinecdm.so"),
            "com.widevine.alpha",
            vec![],
        )
        .err()
        .unwrap();
        assert!(
            e.contains("cannot load the Chromium CDM library /nonexistent/libwidevinecdm.so"),
            "{e}"
        );
    }
}
