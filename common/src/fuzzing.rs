//! The bodies of the fuzz targets in `fuzz/` and of their corpus replay
//! (`tests/fuzz_corpus.rs`): one function per parser family, so the two cannot drift. Each
//! takes untrusted bytes and only returns; any panic (overflow, index, unwrap) is a bug.

use std::sync::Mutex;
use std::time::Instant;

use crate::license::{
    decode_license_request_body, decode_license_response_body, parse_challenge, ClientSession,
    LicenseError,
};
use crate::pssh::{parse_pssh_boxes, widevine_init_data, KeyId, PsshBox, WidevinePsshData};

/// The fixed client session that the `license` target's seeds were issued to
/// (`fuzz/make_seeds.py` computes the same public key from this secret).
pub const SESSION_SECRET: [u8; 32] = [0x42; 32];
pub const SESSION_ID: &str = "00112233445566778899aabbccddeeff";
pub const SESSION_NONCE: [u8; 16] = [0x5a; 16];
pub const SESSION_KEY_ID: KeyId = KeyId([0xb3; 16]);
/// The license server key the seeds were issued with (`fuzz/make_seeds.py`: bytes 1 to 32),
/// the one the fixed session is provisioned to trust.
pub const SEED_SERVER_SECRET: [u8; 32] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
    27, 28, 29, 30, 31, 32,
];

/// The fixed session of the `license` target, trusting the seeds' server.
pub fn fixed_session() -> ClientSession {
    let server =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(SEED_SERVER_SECRET));
    ClientSession::fixed_for_fuzzing(
        SESSION_SECRET,
        SESSION_ID,
        SESSION_NONCE,
        vec![SESSION_KEY_ID],
    )
    .trust_server(server.to_bytes())
}

/// Init data as the decryptor receives it: `pssh` boxes (each written back and read again),
/// the Widevine protobuf, and the merged key ids a CDM session is made for.
pub fn pssh(data: &[u8]) {
    if let Ok(boxes) = parse_pssh_boxes(data) {
        for b in &boxes {
            let _ = b.is_widevine();
            // Written back (as version 0 when it has no header key ids), it reads the same.
            let again = parse_pssh_boxes(&b.to_bytes()).expect("a box written back reads back");
            let fields = |b: &PsshBox| (b.system_id, b.key_ids.clone(), b.data.clone());
            assert_eq!(again.iter().map(fields).collect::<Vec<_>>(), [fields(b)]);
            if let Ok(wv) = WidevinePsshData::parse(&b.data) {
                let _ = wv.to_pssh_box();
            }
        }
    }
    if let Ok(wv) = WidevinePsshData::parse(data) {
        let again = WidevinePsshData::parse(&wv.to_bytes()).expect("protobuf written back reads");
        assert_eq!(again, wv);
    }
    let _ = widevine_init_data(data);
}

static SESSION: Mutex<Option<ClientSession>> = Mutex::new(None);

/// What a license server and its clients read of each other: a challenge (server side), the
/// request and response bodies, an error answer for each status, and a license fed to the
/// client session (as the stub CDM's `update` does), also when it came wrapped in a body.
pub fn license(data: &[u8]) {
    if let Ok(c) = parse_challenge(data) {
        c.parsed_key_ids()
            .expect("parse_challenge checked the key ids");
    }
    let _ = decode_license_request_body(data);
    let wrapped = decode_license_response_body(data).ok();
    for status in [400, 401, 403, 404, 429, 500, 503, 418] {
        for retry_after in [None, Some(u64::MAX)] {
            let e = LicenseError::from_response(status, retry_after, data);
            let _ = (e.status(), e.code(), e.retry_after_secs(), e.meaning());
            let _ = (e.client_action(), e.to_json_body(), e.to_string());
        }
    }
    let mut guard = SESSION.lock().unwrap_or_else(|e| e.into_inner());
    for body in [Some(data), wrapped.as_deref()].into_iter().flatten() {
        let session = guard.get_or_insert_with(fixed_session);
        if let Ok(accepted) = session.accept_license(body) {
            // What the stub CDM makes of the policy.
            let now = Instant::now();
            let _ = accepted.policy.duration().and_then(|d| now.checked_add(d));
            let _ = accepted
                .policy
                .renewal_after()
                .and_then(|d| now.checked_add(d));
            // A license answers one challenge: the next input gets a fresh session.
            *guard = None;
        }
    }
}

/// Feeds every file of `fuzz/corpus/<target>/` to `body`, for the corpus replay in the normal
/// test suite (`tests/fuzz_corpus.rs` of each crate that owns a parser); `manifest_dir` is the
/// calling crate's `CARGO_MANIFEST_DIR`. Returns how many inputs ran; panics (failing the
/// test) when the corpus is missing or empty, so a renamed target cannot silently replay
/// nothing.
pub fn replay_corpus(manifest_dir: &str, target: &str, body: fn(&[u8])) -> usize {
    let dir = std::path::Path::new(manifest_dir)
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "fuzz corpus {} is empty", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // A panic names the input that caused it.
        eprintln!("replaying {}", f.display());
        body(&data);
    }
    files.len()
}
