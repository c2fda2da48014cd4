#![no_main]
//! A SegmentBase index range (gstamzdash::fuzzing::sidx).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstamzdash::fuzzing::sidx(data);
});
