//! `cargo +nightly fuzz run api_answer`: the body and its invariants are
//! `mailup_auth_fuzz_bodies::targets::api_answer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailup_auth_fuzz_bodies::targets::api_answer(data);
});
