//! Secret newtypes: every credential and token the flow touches.
//!
//! Each type keeps its value out of `Debug` (which prints `Type([redacted])`), has no
//! `Display`, zeroizes its buffer on drop (an [`AccessToken`]'s clones share one buffer, wiped
//! when the last clone is dropped), and compares in constant time (`==` takes as long
//! for a value that differs in its first byte as for one that differs in its last, so a timing
//! probe learns nothing but the length). The raw value is reachable only through
//! `secret()`, whose name is meant to make every use stand out in review.
//!
//! With the `serde` feature the types *deserialize* (a store reads them back), but they do not
//! implement `Serialize`: `serde_json::to_string(&access_token)` in user code is a compile
//! error, and so is serializing a [`TokenSet`](crate::TokenSet) or a
//! [`ProfileRecord`](crate::ProfileRecord) that holds them. A token store writes records
//! through the one named path that exposes the secrets, `ExposeSecrets` (feature `serde`):
//!
//! ```
//! # #[cfg(feature = "serde")] {
//! use mailup_auth_core::ExposeSecrets;
//! use mailup_auth_core::{AccessToken, ProfileRecord, TokenSet, UnixTime};
//!
//! let record = ProfileRecord::with_tokens(TokenSet {
//!     access_token: AccessToken::new("at"),
//!     refresh_token: None,
//!     expires_at: UnixTime::from_secs(3600),
//!     obtained_at: UnixTime::from_secs(0),
//!     token_type: None,
//!     scope: None,
//! });
//! let json = serde_json::to_string(&ExposeSecrets(&record)).unwrap();
//! assert!(json.contains(r#""access_token":"at""#));
//! # }
//! ```
//!
//! ```compile_fail
//! // A secret cannot be serialized by accident.
//! let token = mailup_auth_core::AccessToken::new("at");
//! let _ = serde_json::to_string(&token);
//! ```

use std::sync::{Arc, OnceLock};

use http::HeaderValue;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The marker `Debug` prints in place of a secret value.
pub(crate) const REDACTED: &str = "[redacted]";

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident $(, $derive:ident)*) => {
        $(#[$meta])*
        #[derive(Zeroize, ZeroizeOnDrop $(, $derive)*)]
        pub struct $name(String);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The raw secret.
            ///
            /// Beware: whatever you do with the returned string is outside the redaction this
            /// type provides. Never log it, print it, or put it in an error or a browser URL.
            pub fn secret(&self) -> &str {
                &self.0
            }

            /// Whether the value is the empty string.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }
        }

        /// Constant time with respect to the content: only the lengths show in the timing.
        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                constant_time_eq(self.0.as_bytes(), other.0.as_bytes())
            }
        }

        impl Eq for $name {}

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&format_args!("{}", REDACTED)).finish()
            }
        }

        #[cfg(feature = "serde")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self)
            }
        }
    };
}

secret_type!(
    /// The client secret issued by MailUp's developer portal. Sent only in token requests'
    /// bodies, never in a LogOn URL.
    ClientSecret,
    Clone
);
secret_type!(
    /// The short-lived authorization code MailUp appends to the redirect URI.
    ///
    /// Not `Clone`: a code is exchanged at most once, and the type system helps keep it so.
    AuthorizationCode
);
/// A bearer access token for MailUp's REST API (lives about an hour).
///
/// Clones share one buffer: cloning counts a reference instead of copying the value, so the
/// facade hands out its cached token without allocating (every API call takes one). The buffer
/// is zeroized when the last clone is dropped. Like the other secrets, its `Debug` is
/// redacted, it has no `Display` and `==` takes constant time in the content.
///
/// The `Authorization: Bearer ...` header value is built once per token, the first time a
/// request needs it, and shared by every clone (see
/// [`bearer_header`](crate::api::bearer_header)): its bytes live in a buffer that is wiped
/// when the token and the last request that carried the header are gone.
#[derive(Clone)]
pub struct AccessToken(Arc<SharedToken>);

/// What the clones of one [`AccessToken`] share.
struct SharedToken {
    value: Zeroizing<String>,
    /// `Bearer <value>`, marked sensitive, built on first use; its bytes are a zeroizing
    /// buffer (see [`AccessToken::bearer`]).
    bearer: OnceLock<HeaderValue>,
}

impl AccessToken {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::new(SharedToken {
            value: Zeroizing::new(value.into()),
            bearer: OnceLock::new(),
        }))
    }

    /// The raw secret.
    ///
    /// Beware: whatever you do with the returned string is outside the redaction this type
    /// provides. Never log it, print it, or put it in an error or a browser URL.
    pub fn secret(&self) -> &str {
        self.0.value.as_str()
    }

    /// Whether the value is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.value.is_empty()
    }

    /// The `Bearer <token>` header value, built by `build` the first time and then shared (a
    /// clone of a `HeaderValue` counts a reference to the same bytes).
    pub(crate) fn bearer(&self, build: impl FnOnce(&str) -> HeaderValue) -> HeaderValue {
        self.0.bearer.get_or_init(|| build(self.secret())).clone()
    }
}

/// Wipes the value now if this is the only clone; otherwise this clone lets go of the shared
/// buffer (and becomes empty), which is wiped when its last clone is dropped. The shared
/// `Bearer` header is let go of too (its buffer is wiped when no request holds it any more).
impl Zeroize for AccessToken {
    fn zeroize(&mut self) {
        match Arc::get_mut(&mut self.0) {
            Some(shared) => {
                shared.value.zeroize();
                shared.bearer = OnceLock::new();
            }
            None => *self = Self::new(String::new()),
        }
    }
}

/// The shared buffer is a `Zeroizing<String>`: it is wiped when the last clone is dropped.
impl ZeroizeOnDrop for AccessToken {}

/// Constant time with respect to the content: only the lengths show in the timing.
impl PartialEq for AccessToken {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.secret().as_bytes(), other.secret().as_bytes())
    }
}

impl Eq for AccessToken {}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AccessToken")
            .field(&format_args!("{}", REDACTED))
            .finish()
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for AccessToken {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}
secret_type!(
    /// A refresh token. MailUp rotates it on every refresh: the old one dies at once.
    RefreshToken,
    Clone
);
secret_type!(
    /// The CSRF `state` value sent with the LogOn URL and checked on the callback.
    ///
    /// The core never generates it (no RNG inside): the caller passes a fresh, unguessable
    /// value, e.g. 32 random bytes, URL-safe encoded.
    CsrfState,
    Clone
);
secret_type!(
    /// A user's password, for MailUp's password grant.
    Password,
    Clone
);

/// Serializes a record **with its secrets in clear**: the one path by which token stores (and
/// web apps keeping a [`PendingAuthorization`](crate::PendingAuthorization) server-side) write
/// secrets. Secret types and the records holding them do not implement `Serialize` themselves,
/// so a secret never reaches a log, a status page or an API answer by accident.
///
/// Implemented for [`ProfileRecord`](crate::ProfileRecord), [`TokenSet`](crate::TokenSet) and
/// [`StoredClient`](crate::StoredClient); the JSON it writes is what the derive of earlier
/// releases wrote, so stored records keep loading.
#[allow(
    clippy::exhaustive_structs,
    reason = "a one-field wrapper built as `ExposeSecrets(&record)` at the call site"
)]
#[cfg(feature = "serde")]
#[derive(Clone, Copy, Debug)]
pub struct ExposeSecrets<'a, T: ?Sized>(pub &'a T);

#[cfg(feature = "serde")]
mod expose {
    use serde::ser::{Serialize, SerializeStruct, Serializer};

    use super::ExposeSecrets;
    use crate::ports::{ProfileRecord, StoredClient};
    use crate::token::TokenSet;

    impl Serialize for ExposeSecrets<'_, TokenSet> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let tokens = self.0;
            let mut out = serializer.serialize_struct("TokenSet", 6)?;
            out.serialize_field("access_token", tokens.access_token.secret())?;
            out.serialize_field(
                "refresh_token",
                &tokens.refresh_token.as_ref().map(|t| t.secret()),
            )?;
            out.serialize_field("expires_at", &tokens.expires_at)?;
            out.serialize_field("obtained_at", &tokens.obtained_at)?;
            out.serialize_field("token_type", &tokens.token_type)?;
            out.serialize_field("scope", &tokens.scope)?;
            out.end()
        }
    }

    impl Serialize for ExposeSecrets<'_, StoredClient> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let client = self.0;
            let mut out = serializer.serialize_struct("StoredClient", 6)?;
            out.serialize_field("client_id", &client.client_id)?;
            out.serialize_field(
                "client_secret",
                &client.client_secret.as_ref().map(|s| s.secret()),
            )?;
            out.serialize_field("logon_url", &client.logon_url)?;
            out.serialize_field("token_url", &client.token_url)?;
            out.serialize_field("api_base", &client.api_base)?;
            out.serialize_field("redirect_uri", &client.redirect_uri)?;
            out.end()
        }
    }

    impl Serialize for ExposeSecrets<'_, ProfileRecord> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let record = self.0;
            let fields = 3 + usize::from(record.reauthorization_required.is_some());
            let mut out = serializer.serialize_struct("ProfileRecord", fields)?;
            out.serialize_field("tokens", &record.tokens.as_ref().map(ExposeSecrets))?;
            out.serialize_field("client", &record.client.as_ref().map(ExposeSecrets))?;
            out.serialize_field("last_refreshed_at", &record.last_refreshed_at)?;
            if let Some(reason) = &record.reauthorization_required {
                out.serialize_field("reauthorization_required", reason)?;
            }
            out.end()
        }
    }
}

impl CsrfState {
    /// Compares in constant time with respect to the content, so a timing probe learns nothing
    /// about the expected state beyond its length.
    pub fn matches(&self, other: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), other.as_bytes())
    }
}

/// Whether `a == b`, in time that depends on the lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_for_every_secret() {
        let cases = [
            (
                format!("{:?}", ClientSecret::new("s3cr3t-client")),
                "ClientSecret",
            ),
            (
                format!("{:?}", AuthorizationCode::new("s3cr3t-code")),
                "AuthorizationCode",
            ),
            (
                format!("{:?}", AccessToken::new("s3cr3t-access")),
                "AccessToken",
            ),
            (
                format!("{:?}", RefreshToken::new("s3cr3t-refresh")),
                "RefreshToken",
            ),
            (format!("{:?}", CsrfState::new("s3cr3t-state")), "CsrfState"),
            (
                format!("{:?}", Password::new("s3cr3t-password")),
                "Password",
            ),
        ];
        for (printed, name) in cases {
            assert_eq!(printed, format!("{name}([redacted])"));
            assert!(!printed.contains("s3cr3t"));
        }
        // Pretty Debug too.
        assert!(!format!("{:#?}", AccessToken::new("s3cr3t")).contains("s3cr3t"));
    }

    #[test]
    fn secret_accessor_returns_the_value() {
        assert_eq!(RefreshToken::new("r1").secret(), "r1");
        assert!(AccessToken::new("").is_empty());
    }

    /// `Wrapper::<T>::SERIALIZE` is `true` only when `T: Serialize` (an inherent constant wins
    /// over the blanket trait's when its bound holds), so a test can assert a missing impl.
    #[cfg(feature = "serde")]
    mod probe {
        pub(super) struct Wrapper<T>(std::marker::PhantomData<T>);
        pub(super) trait Fallback {
            const SERIALIZE: bool = false;
        }
        impl<T> Fallback for Wrapper<T> {}
        impl<T: serde::Serialize> Wrapper<T> {
            pub(super) const SERIALIZE: bool = true;
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn secrets_and_records_do_not_serialize_except_through_expose_secrets() {
        use probe::{Fallback as _, Wrapper};
        const { assert!(!Wrapper::<AccessToken>::SERIALIZE) };
        const { assert!(!Wrapper::<RefreshToken>::SERIALIZE) };
        const { assert!(!Wrapper::<ClientSecret>::SERIALIZE) };
        const { assert!(!Wrapper::<AuthorizationCode>::SERIALIZE) };
        const { assert!(!Wrapper::<Password>::SERIALIZE) };
        const { assert!(!Wrapper::<CsrfState>::SERIALIZE) };
        const { assert!(!Wrapper::<crate::TokenSet>::SERIALIZE) };
        const { assert!(!Wrapper::<crate::ProfileRecord>::SERIALIZE) };
        const { assert!(!Wrapper::<crate::StoredClient>::SERIALIZE) };
        // The probe itself works (these are checked when the test compiles).
        const { assert!(Wrapper::<String>::SERIALIZE) };
        const { assert!(Wrapper::<ExposeSecrets<'static, crate::TokenSet>>::SERIALIZE) };
    }

    #[cfg(feature = "serde")]
    #[test]
    fn expose_secrets_round_trips_a_record() {
        use crate::ports::{ProfileRecord, StoredClient};
        use crate::{TokenSet, UnixTime};
        let record = ProfileRecord {
            tokens: Some(TokenSet {
                access_token: AccessToken::new("at"),
                refresh_token: Some(RefreshToken::new("rt")),
                expires_at: UnixTime::from_secs(20),
                obtained_at: UnixTime::from_secs(10),
                token_type: Some("bearer".into()),
                scope: None,
            }),
            client: Some(StoredClient {
                client_id: "id".into(),
                client_secret: Some(ClientSecret::new("cs")),
                ..StoredClient::default()
            }),
            last_refreshed_at: Some(UnixTime::from_secs(10)),
            reauthorization_required: Some("why".into()),
        };
        let json = serde_json::to_string(&ExposeSecrets(&record)).unwrap();
        let back: ProfileRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn secrets_compare_by_value() {
        assert_eq!(AccessToken::new("at-1"), AccessToken::new("at-1"));
        assert_ne!(AccessToken::new("at-1"), AccessToken::new("at-2"));
        assert_ne!(RefreshToken::new("rt"), RefreshToken::new("rt-longer"));
        assert_ne!(RefreshToken::new(""), RefreshToken::new("x"));
        assert_eq!(ClientSecret::new(""), ClientSecret::new(""));
        assert_eq!(
            AuthorizationCode::new("c0de"),
            AuthorizationCode::new("c0de")
        );
        assert_ne!(Password::new("pw"), Password::new("pW"));
        assert_eq!(Some(RefreshToken::new("r1")), Some(RefreshToken::new("r1")));
    }

    #[test]
    fn access_token_clones_share_one_buffer_that_zeroizes() {
        fn zeroizes_on_drop<T: ZeroizeOnDrop + Zeroize>() {}
        zeroizes_on_drop::<AccessToken>();

        let token = AccessToken::new("s3cr3t-access");
        let clone = token.clone();
        assert!(Arc::ptr_eq(&token.0, &clone.0));
        assert_eq!(clone.secret(), "s3cr3t-access");
        assert_eq!(Arc::strong_count(&token.0), 2);

        // A shared clone lets go of the buffer; the other clone keeps the value.
        let mut shared = clone;
        shared.zeroize();
        assert!(shared.is_empty());
        assert_eq!(token.secret(), "s3cr3t-access");
        assert_eq!(Arc::strong_count(&token.0), 1);

        // The only clone wipes the buffer in place.
        let mut only = token;
        only.zeroize();
        assert!(only.is_empty());
    }

    #[test]
    fn csrf_state_matches_only_the_exact_value() {
        let state = CsrfState::new("abc123");
        assert!(state.matches("abc123"));
        assert!(!state.matches("abc124"));
        assert!(!state.matches("abc12"));
        assert!(!state.matches(""));
    }
}
