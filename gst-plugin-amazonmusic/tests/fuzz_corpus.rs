//! Replays the committed fuzz corpora of this crate's parsers (audio_object, api_json, and mpd for manifest_codecs)
//! through the same entry points the fuzz targets call, without libFuzzer: every input must
//! return, Ok or Err, without a panic. The corpora live in fuzz/corpus/; see docs/fuzzing.md.

use amzmusic_common::fuzzing::replay_corpus;

#[test]
fn audio_object_corpus() {
    let n = replay_corpus(
        env!("CARGO_MANIFEST_DIR"),
        "audio_object",
        gstamazonmusic::fuzzing::audio_object,
    );
    eprintln!("audio_object: {n} inputs");
}

#[test]
fn api_json_corpus() {
    let n = replay_corpus(
        env!("CARGO_MANIFEST_DIR"),
        "api_json",
        gstamazonmusic::fuzzing::api_json,
    );
    eprintln!("api_json: {n} inputs");
}

#[test]
fn mpd_corpus() {
    let n = replay_corpus(
        env!("CARGO_MANIFEST_DIR"),
        "mpd",
        gstamazonmusic::fuzzing::manifest_codecs,
    );
    eprintln!("mpd: {n} inputs");
}
