#![no_main]
//! The music API's audio object (gstamazonmusic::fuzzing::audio_object).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstamazonmusic::fuzzing::audio_object(data);
});
