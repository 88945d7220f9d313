//! The record codec without a server: what `load` does with the bytes of one profile's
//! record and the version kept beside it, and what `save` writes. For the fuzz targets and
//! their stable loop (`crates/mailup-auth-fuzz-bodies`); not a stable API.

use mailup_auth_core::{ProfileRecord, StoreError};

/// Decodes a stored record as `load` does, given the version kept in Redis beside it:
/// `Ok(None)` for a tombstone, a [`StoreError::Corrupt`] for anything it cannot read,
/// including an envelope whose own version disagrees with `stored_version`.
pub fn decode(
    profile: &str,
    stored_version: u64,
    bytes: &[u8],
) -> Result<Option<ProfileRecord>, StoreError> {
    crate::envelope::decode(profile, stored_version, bytes)
}

/// Encodes a record at `version` as `save` does.
pub fn encode(version: u64, record: &ProfileRecord) -> Result<Vec<u8>, StoreError> {
    crate::envelope::encode(version, record)
}
