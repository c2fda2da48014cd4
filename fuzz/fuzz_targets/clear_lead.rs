#![no_main]
//! An init segment and its media through the clear-lead marker (gstamzdash::fuzzing::clear_lead).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gstamzdash::fuzzing::clear_lead(data);
});
