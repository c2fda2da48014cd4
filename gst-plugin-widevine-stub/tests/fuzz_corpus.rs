//! Replays the committed fuzz corpora of this crate's parsers (cenc)
//! through the same entry points the fuzz targets call, without libFuzzer: every input must
//! return, Ok or Err, without a panic. The corpora live in fuzz/corpus/; see docs/fuzzing.md.

use amzmusic_common::fuzzing::replay_corpus;

#[test]
fn cenc_corpus() {
    let n = replay_corpus(
        env!("CARGO_MANIFEST_DIR"),
        "cenc",
        gstwidevinestub::fuzzing::cenc,
    );
    eprintln!("cenc: {n} inputs");
}
