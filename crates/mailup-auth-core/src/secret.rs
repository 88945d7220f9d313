//! Secret newtypes: every credential and token the flow touches.
//!
//! Each type keeps its value out of `Debug` (which prints `Type([redacted])`), has no
//! `Display`, and zeroizes its buffer on drop. The raw value is reachable only through
//! `secret()`, whose name is meant to make every use stand out in review.

use zeroize::{Zeroize, ZeroizeOnDrop};

/// The marker `Debug` prints in place of a secret value.
pub const REDACTED: &str = "[redacted]";

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident $(, $derive:ident)*) => {
        $(#[$meta])*
        #[derive(Zeroize, ZeroizeOnDrop, PartialEq, Eq $(, $derive)*)]
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

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&format_args!("{}", REDACTED)).finish()
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
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
secret_type!(
    /// A bearer access token for MailUp's REST API (lives about an hour).
    AccessToken,
    Clone
);
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

impl CsrfState {
    /// Compares in constant time with respect to the content, so a timing probe learns nothing
    /// about the expected state beyond its length.
    pub fn matches(&self, other: &str) -> bool {
        let a = self.0.as_bytes();
        let b = other.as_bytes();
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
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

    #[test]
    fn csrf_state_matches_only_the_exact_value() {
        let state = CsrfState::new("abc123");
        assert!(state.matches("abc123"));
        assert!(!state.matches("abc124"));
        assert!(!state.matches("abc12"));
        assert!(!state.matches(""));
    }
}
