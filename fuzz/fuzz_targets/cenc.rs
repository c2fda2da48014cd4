#![no_main]
//! One sample's CENC protection, decrypted in place (gstwidevinestub::fuzzing::cenc).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstwidevinestub::fuzzing::cenc(data);
});
