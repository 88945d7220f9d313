//! The process the kill -9 test kills: it logs in with the password grant against the emulator
//! named by its arguments, then refreshes in a loop (logging in again now and then, and whenever
//! its refresh token is rejected), saving to a sled store, until it is killed. It prints
//! `ready` once it holds tokens, so the test kills it mid-work and not at start-up.
//!
//! Usage: `crash-helper <store dir> <emulator base URL>`.

use std::io::Write as _;

use mailup_auth::{ClientSecret, MailUpClient, Password};
use mailup_auth_emulator::{
    DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_PASSWORD, DEFAULT_USERNAME,
};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(store), Some(base)) = (args.next(), args.next()) else {
        eprintln!("usage: crash-helper <store dir> <emulator base URL>");
        std::process::exit(2);
    };
    let builder =
        MailUpClient::builder(DEFAULT_CLIENT_ID, ClientSecret::new(DEFAULT_CLIENT_SECRET))
            .auth_base(base);
    // Optional (tests/tests/saves_in_place.rs): `CRASH_HELPER_WRITE_THREAD=calling` opens
    // the sled store itself with its saves on the calling thread, with the store's own lease.
    let builder = if std::env::var_os("CRASH_HELPER_WRITE_THREAD").is_some_and(|v| v == "calling") {
        let store = mailup_auth::SledTokenStore::open(&store)
            .expect("the store opens")
            .with_write_thread(mailup_auth::WriteThread::CallingThread);
        builder
            .refresh_lease(Some(std::sync::Arc::new(store.refresh_lease())))
            .store(std::sync::Arc::new(store))
    } else {
        builder.store_path(store)
    };
    let client = builder.build().await.expect("the client builds");
    let password = Password::new(DEFAULT_PASSWORD);
    if client.cached_access_token().is_none() && client.refresh().await.is_err() {
        client
            .login_with_password(DEFAULT_USERNAME, &password)
            .await
            .expect("the login works");
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    for round in 0u64.. {
        let result = if round % 7 == 6 {
            client
                .login_with_password(DEFAULT_USERNAME, &password)
                .await
                .map(drop)
        } else {
            client.refresh().await.map(drop)
        };
        match result {
            Ok(()) => {}
            Err(error) if error.is_reauthorization_required() => client
                .login_with_password(DEFAULT_USERNAME, &password)
                .await
                .expect("the login works"),
            Err(error) => panic!("unexpected failure: {error}"),
        }
    }
}
