#![no_main]
//! An MPD, parsed and planned as amzdashdemux does (gstamzdash::fuzzing::mpd), and read for its codecs as amazonmusicsrc does.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstamzdash::fuzzing::mpd(data);
    gstamazonmusic::fuzzing::manifest_codecs(data);
});
