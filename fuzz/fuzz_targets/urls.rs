//! `cargo +nightly fuzz run urls`: the body and its invariants are
//! `mailup_auth_fuzz_bodies::targets::urls`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailup_auth_fuzz_bodies::targets::urls(data);
});
