//! `cargo +nightly fuzz run session_ops`: the body and its invariants are
//! `mailup_auth_fuzz_bodies::targets::session_ops`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailup_auth_fuzz_bodies::targets::session_ops(data);
});
