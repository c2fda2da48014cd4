//! Replays the committed fuzz corpora of this crate's parsers (pssh, license)
//! through the same entry points the fuzz targets call, without libFuzzer: every input must
//! return, Ok or Err, without a panic. The corpora live in fuzz/corpus/; see docs/fuzzing.md.

use amzmusic_common::fuzzing::replay_corpus;

#[test]
fn pssh_corpus() {
    let n = replay_corpus(
        env!("CARGO_MANIFEST_DIR"),
        "pssh",
        amzmusic_common::fuzzing::pssh,
    );
    eprintln!("pssh: {n} inputs");
}

#[test]
fn license_corpus() {
    let n = replay_corpus(
        env!("CARGO_MANIFEST_DIR"),
        "license",
        amzmusic_common::fuzzing::license,
    );
    eprintln!("license: {n} inputs");
}

static ACCEPTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The corpus still holds licenses that pass the fixed session's MAC, so fuzzing starts from
/// inputs that reach the key unwrapping.
#[test]
fn license_corpus_reaches_past_the_mac() {
    fn accept(data: &[u8]) {
        let mut s = amzmusic_common::fuzzing::fixed_session();
        if s.accept_license(data).is_ok() {
            ACCEPTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
    replay_corpus(env!("CARGO_MANIFEST_DIR"), "license", accept);
    assert!(ACCEPTED.load(std::sync::atomic::Ordering::Relaxed) > 0);
}
