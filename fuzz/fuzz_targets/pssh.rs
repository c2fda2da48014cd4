#![no_main]
//! Init data: pssh boxes and the Widevine protobuf (amzmusic_common::fuzzing::pssh).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    amzmusic_common::fuzzing::pssh(data);
});
