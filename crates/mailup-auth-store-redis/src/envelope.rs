//! The record envelope: the same JSON as the sled store writes, so a record means the same in
//! both stores and tools that read one read the other.
//!
//! `{"format": 1, "version": N, "record": {...}}` for a record, `{"format": 1, "version": N,
//! "deleted": true}` for a tombstone (written by the delete script itself). Format 2 (a sealed
//! record of an encrypted sled store) is recognised and refused with a message that says so.

use mailup_auth_core::ports::{ProfileRecord, StoreError};
use mailup_auth_core::secret::ExposeSecrets;
use serde::{Deserialize, Serialize};

/// The format of a record in clear (and of every tombstone).
pub(crate) const CLEAR_FORMAT: u32 = 1;
/// The newest format the envelope knows: a sealed record.
const SEALED_FORMAT: u32 = 2;

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: u32,
    version: u64,
    record: ExposeSecrets<'a, ProfileRecord>,
}

#[derive(Deserialize)]
struct EnvelopeHead {
    format: u32,
    version: u64,
    #[serde(default)]
    deleted: bool,
}

#[derive(Deserialize)]
struct EnvelopeRecord {
    record: ProfileRecord,
}

/// The JSON written for `record` at `version`.
pub(crate) fn encode(version: u64, record: &ProfileRecord) -> Result<Vec<u8>, StoreError> {
    // Cannot fail for these types (string keys only); the error text is dropped all the same,
    // since it could quote a value.
    serde_json::to_vec(&EnvelopeOut {
        format: CLEAR_FORMAT,
        version,
        record: ExposeSecrets(record),
    })
    .map_err(|_| StoreError::Io("cannot serialize the record".into()))
}

/// Reads a stored envelope whose version field in Redis is `stored_version`: `None` for a
/// tombstone.
pub(crate) fn decode(
    profile: &str,
    stored_version: u64,
    bytes: &[u8],
) -> Result<Option<ProfileRecord>, StoreError> {
    let head: EnvelopeHead =
        serde_json::from_slice(bytes).map_err(|error| corrupt(profile, "envelope", &error))?;
    if head.format > SEALED_FORMAT {
        return Err(corrupt_because(
            profile,
            format!(
                "written by a newer version of mailup-auth (record format {}, this version \
                 reads formats up to {SEALED_FORMAT}); upgrade to read it",
                head.format
            ),
        ));
    }
    if head.format == SEALED_FORMAT {
        return Err(corrupt_because(
            profile,
            "the record is sealed (encrypted at rest) and this store has no key for it".into(),
        ));
    }
    if head.format == 0 || head.version == 0 || head.version != stored_version {
        return Err(corrupt_because(
            profile,
            format!(
                "invalid envelope (format {}, version {}, stored version {stored_version})",
                head.format, head.version
            ),
        ));
    }
    if head.deleted {
        return Ok(None);
    }
    serde_json::from_slice::<EnvelopeRecord>(bytes)
        .map(|envelope| Some(envelope.record))
        .map_err(|error| corrupt(profile, "record", &error))
}

pub(crate) fn corrupt_because(profile: &str, message: String) -> StoreError {
    StoreError::Corrupt {
        profile: profile.to_owned(),
        message,
    }
}

/// A corrupt-record error that says where decoding failed but never quotes the content
/// (serde's messages can quote values, and values may be tokens).
fn corrupt(profile: &str, part: &str, error: &serde_json::Error) -> StoreError {
    let category = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "unexpected content",
        serde_json::error::Category::Eof => "truncated",
    };
    corrupt_because(
        profile,
        format!(
            "{part} is {category} (line {}, column {})",
            error.line(),
            error.column()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailup_auth_core::secret::{AccessToken, RefreshToken};
    use mailup_auth_core::{TokenSet, UnixTime};

    #[test]
    fn a_record_round_trips_and_errors_never_quote_it() {
        let record = ProfileRecord::with_tokens(TokenSet {
            access_token: AccessToken::new("at-secret"),
            refresh_token: Some(RefreshToken::new("rt-secret")),
            expires_at: UnixTime::from_secs(10),
            obtained_at: UnixTime::from_secs(1),
            token_type: None,
            scope: None,
        });
        let bytes = encode(7, &record).unwrap();
        assert_eq!(decode("p", 7, &bytes).unwrap(), Some(record));
        // A version that disagrees with the stored one is damage, not a record.
        assert!(matches!(
            decode("p", 8, &bytes),
            Err(StoreError::Corrupt { .. })
        ));
        let mut broken = bytes.clone();
        let at = broken.len() - 20;
        broken[at] = b'"';
        let error = decode("p", 7, &broken).unwrap_err().to_string();
        assert!(!error.contains("secret"), "{error}");
        let tombstone = br#"{"format":1,"version":3,"deleted":true}"#;
        assert_eq!(decode("p", 3, tombstone).unwrap(), None);
    }
}
