#![no_main]
//! License challenges, request and response bodies, error answers and licenses (amzmusic_common::fuzzing::license).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amzmusic_common::fuzzing::license(data);
});
