#![no_main]
//! Track lists, LWA answers, the token file, error bodies and FireFly answers (gstamazonmusic::fuzzing::api_json).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstamazonmusic::fuzzing::api_json(data);
});
