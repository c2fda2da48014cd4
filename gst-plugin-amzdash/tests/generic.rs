//! Generic DASH through `souphttpsrc ! amzdashdemux ! qtdemux ! flacparse ! flacdec`: the
//! emulator's open mirror (SegmentTemplate + SegmentTimeline), sample-identical to the source.

mod common;

use amzmusic_emulator::content::catalog::Addressing;
use common::*;

#[test]
fn open_mirror_template_plays_sample_identical() {
    init();
    let emu = Emulator::start(Addressing::Template);
    let track = "B0EMUHD001";
    let url = format!("{}/open/{track}/manifest.mpd", emu.base());
    let bw = bandwidth(&emu.get(&url), "flac-44k16");
    let d = amzmusic_tests::run_pipeline(
        &format!(
            "souphttpsrc location={url} ! amzdashdemux max-bitrate={bw} ! qtdemux ! flacparse ! \
             flacdec ! audio/x-raw,format=S16LE ! appsink name=sink"
        ),
        TIMEOUT,
    )
    .unwrap();
    assert!(d.error.is_none(), "{:?}", d.error);
    assert!(d.eos);
    assert_eq!(d.rate(), Some(44100));
    amzmusic_tests::assert_same_pcm(&d.bytes, &source_pcm(track, "flac-44k16"), 4, "open mirror");
}
