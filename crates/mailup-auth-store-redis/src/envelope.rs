//! The record envelope: the same JSON as the sled store writes, so a record means the same in
//! both stores and tools that read one read the other.
//!
//! `{"format": 1, "version": N, "record": {...}}` for a record in clear, `{"format": 2,
//! "version": N, "sealed": "..."}` for a sealed one (a store with an encryption key; the
//! sealing is `mailup-auth-seal`'s, as in the sled store), and `{"format": 1, "version": N,
//! "deleted": true}` for a tombstone (written by the delete script itself).

use mailup_auth_core::ExposeSecrets;
use mailup_auth_core::{ProfileRecord, StoreError};
use mailup_auth_seal::Sealer;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The format of a record in clear (and of every tombstone).
pub(crate) const CLEAR_FORMAT: u32 = 1;
/// The newest format the envelope knows: a sealed record.
const SEALED_FORMAT: u32 = 2;

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: u32,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<ExposeSecrets<'a, ProfileRecord>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
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

#[derive(Deserialize)]
struct EnvelopeSealed {
    sealed: String,
}

/// The JSON written for `record` at `version`, in clear (no key).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn encode(version: u64, record: &ProfileRecord) -> Result<Vec<u8>, StoreError> {
    encode_with("", version, record, None)
}

/// The JSON written for `profile`'s `record` at `version`: sealed with `sealer` when the store
/// has a key (format 2), in clear otherwise (format 1).
pub(crate) fn encode_with(
    profile: &str,
    version: u64,
    record: &ProfileRecord,
    sealer: Option<&Sealer>,
) -> Result<Vec<u8>, StoreError> {
    // Cannot fail for these types (string keys only); the error text is dropped all the same,
    // since it could quote a value.
    let serialize_error = |_| StoreError::io_context("cannot serialize the record");
    let envelope = match sealer {
        None => EnvelopeOut {
            format: CLEAR_FORMAT,
            version,
            record: Some(ExposeSecrets(record)),
            sealed: None,
        },
        Some(sealer) => {
            let plaintext = Zeroizing::new(
                serde_json::to_vec(&ExposeSecrets(record)).map_err(serialize_error)?,
            );
            EnvelopeOut {
                format: SEALED_FORMAT,
                version,
                record: None,
                sealed: Some(
                    sealer
                        .seal_record(profile, version, &plaintext)
                        .map_err(StoreError::io_context)?,
                ),
            }
        }
    };
    serde_json::to_vec(&envelope).map_err(serialize_error)
}

/// The format of a stored envelope (`None`: not an envelope).
pub(crate) fn format(bytes: &[u8]) -> Option<u32> {
    serde_json::from_slice::<EnvelopeHead>(bytes)
        .ok()
        .map(|head| head.format)
}

/// Reads a stored envelope whose version field in Redis is `stored_version`, as a store
/// without a key does: `None` for a tombstone. For the fuzz targets too; its signature stays.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn decode(
    profile: &str,
    stored_version: u64,
    bytes: &[u8],
) -> Result<Option<ProfileRecord>, StoreError> {
    decode_with(profile, stored_version, bytes, None)
}

/// [`decode`] for a store whose key gives `sealer` (`None`: no key). A sealed record in a
/// store without a key, a record in clear in a store with one, and a sealed record that does
/// not open (another key, moved from another profile or version, damaged) are
/// [`StoreError::Corrupt`], as in the sled store.
pub(crate) fn decode_with(
    profile: &str,
    stored_version: u64,
    bytes: &[u8],
    sealer: Option<&Sealer>,
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
    match (sealer, head.format) {
        (None, CLEAR_FORMAT) => serde_json::from_slice::<EnvelopeRecord>(bytes)
            .map(|envelope| Some(envelope.record))
            .map_err(|error| corrupt(profile, "record", &error)),
        (Some(_), CLEAR_FORMAT) => Err(corrupt_because(
            profile,
            "it holds a record in clear, but the store is encrypted: this store did not write it"
                .into(),
        )),
        (None, _) => Err(corrupt_because(
            profile,
            "the record is sealed (encrypted at rest) and this store has no key for it".into(),
        )),
        (Some(sealer), _) => {
            let envelope: EnvelopeSealed = serde_json::from_slice(bytes)
                .map_err(|error| corrupt(profile, "envelope", &error))?;
            let plaintext = sealer
                .open_record(profile, head.version, &envelope.sealed)
                .ok_or_else(|| {
                    corrupt_because(
                        profile,
                        "it cannot be decrypted: it is damaged, or it was moved from another \
                         profile or version"
                            .into(),
                    )
                })?;
            serde_json::from_slice(&plaintext)
                .map(Some)
                .map_err(|error| corrupt(profile, "record", &error))
        }
    }
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
    use mailup_auth_core::{AccessToken, RefreshToken};
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

    #[test]
    fn a_sealed_record_opens_with_its_key_only_and_never_mixes_with_clear_ones() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = |name: &str| {
            let source = mailup_auth_seal::KeySource::File(dir.path().join(name));
            Sealer::new(&source.create(None).unwrap())
        };
        let (mine, other) = (sealer("mine.key"), sealer("other.key"));
        let record = ProfileRecord::with_tokens(TokenSet {
            access_token: AccessToken::new("at-secret"),
            refresh_token: Some(RefreshToken::new("rt-secret")),
            expires_at: UnixTime::from_secs(10),
            obtained_at: UnixTime::from_secs(1),
            token_type: None,
            scope: None,
        });
        let sealed = encode_with("p", 4, &record, Some(&mine)).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("secret"));
        assert_eq!(
            decode_with("p", 4, &sealed, Some(&mine)).unwrap(),
            Some(record.clone())
        );
        let corrupt = |result: Result<Option<ProfileRecord>, StoreError>| match result {
            Err(StoreError::Corrupt { message, .. }) => message,
            other => panic!("expected a corrupt record, got {other:?}"),
        };
        assert!(corrupt(decode_with("p", 4, &sealed, Some(&other))).contains("decrypted"));
        assert!(corrupt(decode_with("q", 4, &sealed, Some(&mine))).contains("decrypted"));
        assert!(corrupt(decode("p", 4, &sealed)).contains("no key"));
        let clear = encode(4, &record).unwrap();
        assert!(corrupt(decode_with("p", 4, &clear, Some(&mine))).contains("in clear"));
    }
}
