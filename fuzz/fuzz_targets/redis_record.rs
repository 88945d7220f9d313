//! `cargo +nightly fuzz run redis_record`: the body and its invariants are
//! `mailup_auth_fuzz_bodies::targets::redis_record`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    mailup_auth_fuzz_bodies::targets::redis_record(data);
});
