//! The configuration and token sets the core's test harness drives a [`Session`] with, shared
//! with the fuzz targets (`crates/mailup-auth-fuzz-bodies/src/targets.rs` includes this file
//! with `#[path]`). Plain functions over the core's public API and nothing else, so that both
//! crates can compile it without a test-support feature or module in the core.
//!
//! [`Session`]: mailup_auth_core::Session

use std::time::Duration;

use mailup_auth_core::{
    AccessToken, Backoff, ClientConfig, ClientSecret, RefreshToken, TokenSet, UnixTime,
};

/// The refresh skew of [`config`].
pub(crate) const SKEW: Duration = Duration::from_secs(60);

/// The configuration every harness session (and every fuzzed session) uses: loopback
/// endpoints, a 60 s skew, backoff from 1 s up to 30 s.
pub(crate) fn config() -> ClientConfig {
    ClientConfig::builder("client", ClientSecret::new("client-secret"))
        .redirect_uri("http://127.0.0.1:8400/callback")
        .auth_base("http://127.0.0.1:1")
        .refresh_skew(SKEW)
        .backoff(Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        })
        .build()
        .expect("a valid configuration")
}

/// A token set of `access` (and `refresh`, if any) obtained at `obtained`, expiring at
/// `expires`, with no token type or scope.
pub(crate) fn token_set(
    access: &str,
    refresh: Option<&str>,
    obtained: UnixTime,
    expires: UnixTime,
) -> TokenSet {
    TokenSet {
        access_token: AccessToken::new(access),
        refresh_token: refresh.map(RefreshToken::new),
        expires_at: expires,
        obtained_at: obtained,
        token_type: None,
        scope: None,
    }
}
