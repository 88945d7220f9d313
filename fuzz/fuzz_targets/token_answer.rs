//! `cargo +nightly fuzz run token_answer`: the body and its invariants are
//! `mailup_auth_fuzz_bodies::targets::token_answer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailup_auth_fuzz_bodies::targets::token_answer(data);
});
