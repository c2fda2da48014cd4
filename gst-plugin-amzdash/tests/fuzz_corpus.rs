//! Replays the committed fuzz corpora of this crate's parsers (mpd, sidx, clear_lead)
//! through the same entry points the fuzz targets call, without libFuzzer: every input must
//! return, Ok or Err, without a panic. The corpora live in fuzz/corpus/; see docs/fuzzing.md.

use amzmusic_common::fuzzing::replay_corpus;

#[test]
fn mpd_corpus() {
    let n = replay_corpus(env!("CARGO_MANIFEST_DIR"), "mpd", gstamzdash::fuzzing::mpd);
    eprintln!("mpd: {n} inputs");
}

#[test]
fn sidx_corpus() {
    let n = replay_corpus(
        env!("CARGO_MANIFEST_DIR"),
        "sidx",
        gstamzdash::fuzzing::sidx,
    );
    eprintln!("sidx: {n} inputs");
}

#[test]
fn clear_lead_corpus() {
    let n = replay_corpus(
        env!("CARGO_MANIFEST_DIR"),
        "clear_lead",
        gstamzdash::fuzzing::clear_lead,
    );
    eprintln!("clear_lead: {n} inputs");
}
