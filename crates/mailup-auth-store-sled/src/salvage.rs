//! Salvage: rebuilding a store that sled refuses to open (bit flips, a truncated file) from
//! the records that can still be read and verified.
//!
//! sled refuses a damaged database as a whole, so one flipped bit would cost every profile.
//! sled's files are a log of checksummed messages, though: each message starts with a header
//! holding a CRC32 of the header and the body, and a message that carries tree data holds
//! either one update (a key and its new value) or a whole tree node (its keys, then its
//! values). This module reads those files itself, byte by byte, without sled:
//!
//! - a message is used only when its CRC32 verifies (the same check sled makes), so a record
//!   with a flipped byte is never taken as a record (a damaged message passes by chance with
//!   a probability of 2^-32);
//! - a value is a record only when it decodes completely as the store's envelope, and a sealed
//!   one only when the store key opens it (XChaCha20-Poly1305, with the profile name and the
//!   version as associated data: a sealed record also cannot land under another name or
//!   version);
//! - the log holds older versions of a record next to the current one (until sled reuses the
//!   space), so the highest version of each profile is taken, and a tombstone beats a record
//!   of its own version: a deleted profile stays deleted.
//!
//! Names seen only in messages whose checksum fails are reported as lost, never recovered.
//! Every file is read in a window of at most [`WINDOW`] bytes, at most [`MAX_SCAN`] bytes per
//! store, so a huge or garbage file costs bounded memory and time.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use mailup_auth_core::{validate_profile_name, KeyProblem, ProfileRecord, StoreError};

use mailup_auth_seal::{EncryptionMarker, Sealer};

use crate::{decode_clear_record, decode_head, KeySource, CLEAR_FORMAT, SEALED_FORMAT};

/// The most bytes of a file held in memory at once.
const WINDOW: usize = 16 << 20;
/// The longest message kept inline in sled's log: a quarter of the largest segment (16 MiB);
/// anything longer goes to a blob file.
const MAX_INLINE: usize = 4 << 20;
/// The most bytes read from one store's files in all.
pub(crate) const MAX_SCAN: u64 = 1 << 30;
/// The largest blob file read, and the most blob files read per database.
const MAX_BLOB: u64 = 64 << 20;
const MAX_BLOBS: usize = 10_000;
/// The longest message header: CRC32 (4), kind (1), then three variable-length integers.
const MAX_HEADER: usize = 5 + 3 * 9;

/// sled 0.34's message kinds that carry tree data: a whole node, or one update to it.
const INLINE_NODE: u8 = 8;
const BLOB_NODE: u8 = 9;
const INLINE_LINK: u8 = 10;
const BLOB_LINK: u8 = 11;

/// How every envelope this store writes begins (serde writes the fields in order).
const ENVELOPE_PREFIX: &[u8] = b"{\"format\":";
/// The key of the encryption marker in the `meta` tree.
const MARKER_KEY: &[u8] = crate::META_ENCRYPTION;

/// What [`SledTokenStore::salvage`](crate::SledTokenStore::salvage) found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SalvageReport {
    /// Where the damaged store was moved (it is never deleted).
    pub moved_to: PathBuf,
    /// The profiles written to the fresh store, by name.
    pub recovered: Vec<RecoveredProfile>,
    /// Profiles whose newest intact copy is a tombstone (deleted before the damage): not
    /// recreated.
    pub deleted: Vec<String>,
    /// Profiles seen in the damaged files of which no intact, verified record was found, with
    /// why. A profile whose every trace was damaged may be missing from this list too.
    pub lost: Vec<LostProfile>,
    /// Messages whose checksum failed but which looked like tree data (what the damage hit).
    pub damaged_messages: u64,
    /// Bytes of the store's files that were read.
    pub scanned_bytes: u64,
    /// Whether a limit stopped the scan before the end of the files (then more records may
    /// have been recoverable).
    pub truncated_scan: bool,
}

/// A profile written to the fresh store.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveredProfile {
    /// The profile.
    pub profile: String,
    /// The version of the copy that was recovered, which the fresh store keeps.
    pub version: u64,
    /// Whether a copy that claims a newer version was seen but could not be verified: the
    /// recovered record may be an older one (its refresh token may have been rotated since;
    /// a refresh then asks for a new login).
    pub newer_unverified: bool,
}

/// A profile that could not be recovered.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LostProfile {
    /// The profile.
    pub profile: String,
    /// Why.
    pub reason: LostReason,
}

/// Why a profile could not be recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// Every copy found was in a damaged message (its checksum failed).
    Damaged,
    /// An intact copy did not decode as a record, or a sealed one did not open with the key.
    Unreadable,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Damaged => "every copy found was damaged",
            Self::Unreadable => "its intact copies do not decode or authenticate",
        })
    }
}

/// One key/value pair found in the files, and whether its message verified.
struct Found {
    key: Vec<u8>,
    value: Vec<u8>,
    intact: bool,
}

/// Everything the scan found.
#[derive(Default)]
pub(crate) struct Scan {
    found: Vec<Found>,
    damaged_messages: u64,
    scanned: u64,
    truncated: bool,
}

/// Reads every sled database in `store` (every generation, and the 0.1.0 files at the top).
pub(crate) fn scan_store(store: &Path) -> Result<Scan, StoreError> {
    let mut databases = Vec::new();
    if store.join("db").is_file() {
        databases.push(store.to_path_buf());
    }
    for generation in crate::layout::generations(store)? {
        databases.push(crate::layout::generation_dir(store, generation));
    }
    let mut scan = Scan::default();
    for dir in databases {
        scan_file(&dir.join("db"), &mut scan)?;
        scan_blobs(&dir.join("blobs"), &mut scan)?;
    }
    Ok(scan)
}

/// Refuses a log in which a message holding a record fails its checksum, before sled sees it:
/// sled takes a bad message for the torn end of its log, and on opening it discards every
/// message after it, rewriting the file, so records saved after the damaged one would vanish
/// without a word (a profile would look logged out, or an older, rotated refresh token would
/// come back). A log cut at its end by a crash holds no such message (sled writes each
/// buffer of messages whole), so this refuses only damage.
///
/// Returns the newest version of each profile found in an intact message (a record or a
/// tombstone): what sled must still serve once it has opened the log.
pub(crate) fn check_log(dir: &Path) -> Result<BTreeMap<Vec<u8>, u64>, StoreError> {
    let mut scan = Scan::default();
    scan_file(&dir.join("db"), &mut scan)?;
    if scan.damaged_messages == 0 {
        let mut newest: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for found in scan.found.iter().filter(|found| found.intact) {
            let Ok(name) = std::str::from_utf8(&found.key) else {
                continue;
            };
            if let Ok(head) = decode_head(name, &found.value) {
                let version = newest.entry(found.key.clone()).or_insert(0);
                *version = (*version).max(head.version);
            }
        }
        return Ok(newest);
    }
    Err(StoreError::Damaged {
        path: dir.display().to_string(),
        message: format!(
            "{} record message(s) in sled's log fail their checksum, and sled would silently \
             drop everything after them; nothing was changed; {}",
            scan.damaged_messages,
            crate::SALVAGE_HINT
        ),
    })
}

fn scan_blobs(dir: &Path, scan: &mut Scan) -> Result<(), StoreError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(dir, error)),
    };
    for (count, entry) in entries.enumerate() {
        let entry = entry.map_err(|error| io_error(dir, error))?;
        let path = entry.path();
        let len = entry.metadata().map_or(u64::MAX, |meta| meta.len());
        if count >= MAX_BLOBS || len > MAX_BLOB || scan.scanned + len > MAX_SCAN {
            scan.truncated = true;
            continue;
        }
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|error| io_error(&path, error))?;
        scan.scanned += len;
        // A blob: CRC32 of the rest (not inverted), the message kind, the body.
        if bytes.len() < 5 {
            continue;
        }
        let expected = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let kind = bytes[4];
        let body = &bytes[5..];
        let intact = crc32fast::hash(&bytes[4..]) == expected;
        let kind = match kind {
            BLOB_NODE => INLINE_NODE,
            BLOB_LINK => INLINE_LINK,
            _ => continue,
        };
        let _ = collect(kind, body, intact, scan);
    }
    Ok(())
}

/// Walks a log file: at each offset, a message whose header parses and whose CRC32 verifies
/// is read and skipped whole; anything else moves on by one byte (resynchronising after
/// damage). A candidate is checksummed only when its kind carries tree data and its length
/// fits, so garbage costs little more than one pass.
fn scan_file(path: &Path, scan: &mut Scan) -> Result<(), StoreError> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(io_error(path, error)),
    };
    // What is left to read, as far as the file system knows: the buffer never grows past it
    // (a small log costs a small buffer), and a file that grows meanwhile is read to its end.
    let mut left = file
        .metadata()
        .map_err(|error| io_error(path, error))?
        .len();
    let mut buffer: Vec<u8> = Vec::new();
    let mut at = 0usize;
    let mut eof = false;
    loop {
        if !eof && buffer.len() - at < MAX_INLINE + MAX_HEADER {
            buffer.drain(..at);
            at = 0;
            let budget = MAX_SCAN.saturating_sub(scan.scanned);
            let want = (WINDOW - buffer.len())
                .min(usize::try_from(budget).unwrap_or(usize::MAX))
                .min(usize::try_from(left.max(1)).unwrap_or(usize::MAX));
            if want == 0 {
                scan.truncated = true;
                eof = true;
            } else {
                let start = buffer.len();
                buffer.resize(start + want, 0);
                let read = read_full(&mut file, &mut buffer[start..])
                    .map_err(|error| io_error(path, error))?;
                buffer.truncate(start + read);
                scan.scanned += read as u64;
                left = left.saturating_sub(read as u64);
                if read < want {
                    eof = true;
                }
            }
        }
        if at >= buffer.len() {
            return Ok(());
        }
        let rest = &buffer[at..];
        // sled leaves the unwritten part of a segment zeroed: a run of zeros holds no message
        // start whose kind byte lies inside it, so it is skipped a word at a time.
        let zeros = zero_prefix(rest);
        if zeros > 4 {
            at += zeros - 4;
            continue;
        }
        match message_at(rest) {
            Some((header_len, body_len, kind)) if rest.len() >= header_len + body_len => {
                let body = &rest[header_len..header_len + body_len];
                let expected = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(body);
                hasher.update(&rest[4..header_len]);
                if hasher.finalize() ^ 0xFFFF_FFFF == expected {
                    let _ = collect(kind, body, true, scan);
                    at += header_len + body_len;
                    continue;
                }
                let _ = collect(kind, body, false, scan);
            }
            // Cut off by a truncation: what is there can still name the profiles lost.
            Some((header_len, _, kind)) if eof && rest.len() > header_len => {
                let _ = collect(kind, &rest[header_len..], false, scan);
            }
            _ => {}
        }
        at += 1;
    }
}

/// How many bytes at the start of `bytes` are zero, counted in 16-byte words (a shorter
/// count than the true one is fine).
fn zero_prefix(bytes: &[u8]) -> usize {
    let mut zeros = 0;
    for word in bytes.chunks_exact(16) {
        let word: [u8; 16] = word.try_into().unwrap_or([1; 16]);
        if u128::from_ne_bytes(word) != 0 {
            break;
        }
        zeros += 16;
    }
    zeros
}

fn read_full(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut read = 0;
    while read < buffer.len() {
        match file.read(&mut buffer[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(read)
}

/// The header of a message that could carry tree data at the start of `bytes`: its length,
/// the body's length and the kind. sled 0.34 writes the CRC32 (4 bytes), the kind (1), then
/// the body length, the segment number and the page id as variable-length integers.
fn message_at(bytes: &[u8]) -> Option<(usize, usize, u8)> {
    let kind = *bytes.get(4)?;
    if kind != INLINE_NODE && kind != INLINE_LINK {
        return None;
    }
    let mut cursor = bytes.get(5..)?;
    let before = cursor.len();
    let len = varint(&mut cursor)?;
    varint(&mut cursor)?;
    varint(&mut cursor)?;
    let header_len = 5 + before - cursor.len();
    let len = usize::try_from(len).ok().filter(|len| *len <= MAX_INLINE)?;
    Some((header_len, len, kind))
}

/// Adds the key/value pairs of a message body to the scan, and returns whether it holds a
/// record. A body that does not parse adds nothing.
fn collect(kind: u8, body: &[u8], intact: bool, scan: &mut Scan) -> bool {
    let pairs = match kind {
        INLINE_LINK => parse_link(body),
        INLINE_NODE => parse_node(body),
        _ => None,
    };
    let Some(pairs) = pairs else { return false };
    let mut relevant = false;
    for (key, value) in pairs {
        let envelope = value.starts_with(ENVELOPE_PREFIX);
        if envelope || key == MARKER_KEY {
            relevant |= envelope;
            scan.found.push(Found { key, value, intact });
        }
    }
    if relevant && !intact {
        scan.damaged_messages += 1;
    }
    relevant
}

/// An update: `0`, then the key and the value (a set). Deletes and merges carry no record.
fn parse_link(mut body: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let (&tag, rest) = body.split_first()?;
    body = rest;
    if tag != 0 {
        return None;
    }
    let key = ivec(&mut body)?;
    let value = ivec(&mut body)?;
    Some(vec![(key.to_vec(), value.to_vec())])
}

/// A node: next, merging child, merging, prefix length, low and high bounds, then for a leaf
/// `0`, the count, the keys (without the prefix they share with the low bound) and the values.
fn parse_node(mut body: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    varint(&mut body)?;
    varint(&mut body)?;
    let (_merging, rest) = body.split_first()?;
    let (&prefix_len, rest) = rest.split_first()?;
    body = rest;
    let lo = ivec(&mut body)?;
    ivec(&mut body)?;
    let prefix = lo.get(..usize::from(prefix_len))?;
    let (&tag, rest) = body.split_first()?;
    body = rest;
    if tag != 0 {
        return None;
    }
    let count = usize::try_from(varint(&mut body)?).ok()?;
    // Every key and value takes at least one byte.
    if count > body.len() / 2 {
        return None;
    }
    let mut keys = Vec::with_capacity(count);
    for _ in 0..count {
        let suffix = ivec(&mut body)?;
        keys.push([prefix, suffix].concat());
    }
    let mut pairs = Vec::with_capacity(count);
    for key in keys {
        pairs.push((key, ivec(&mut body)?.to_vec()));
    }
    Some(pairs)
}

/// A length-prefixed byte string.
fn ivec<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(varint(bytes)?).ok()?;
    let value = bytes.get(..len)?;
    *bytes = &bytes[len..];
    Some(value)
}

/// sled 0.34's variable-length integer: up to 240 in one byte, up to 2287 in two, up to 67823
/// in three, otherwise a length byte and that many little-endian bytes.
fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let (&first, rest) = bytes.split_first()?;
    let (value, used) = match first {
        0..=240 => (u64::from(first), 0),
        241..=248 => (
            240 + 256 * (u64::from(first) - 241) + u64::from(*rest.first()?),
            1,
        ),
        249 => (
            2288 + 256 * u64::from(*rest.first()?) + u64::from(*rest.get(1)?),
            2,
        ),
        other => {
            let size = usize::from(other) - 247;
            let mut aligned = [0u8; 8];
            aligned[..size].copy_from_slice(rest.get(..size)?);
            (u64::from_le_bytes(aligned), size)
        }
    };
    *bytes = &rest[used..];
    Some(value)
}

/// What the scan says each profile is, with `sealer` to open sealed records.
pub(crate) struct Plan {
    pub(crate) recovered: Vec<(String, u64, ProfileRecord, bool)>,
    /// Deleted profiles with the version of their tombstone.
    pub(crate) deleted: Vec<(String, u64)>,
    pub(crate) lost: Vec<LostProfile>,
}

/// Checks the key against what the scan found: a store with sealed records or an encryption
/// marker needs its key, and a key that does not fit the marker is refused.
pub(crate) fn check_key(
    store: &Path,
    scan: &Scan,
    key: Option<&KeySource>,
) -> Result<Option<Sealer>, StoreError> {
    let key_error = |problem: KeyProblem| StoreError::Key {
        path: store.display().to_string(),
        problem,
    };
    let markers: Vec<EncryptionMarker> = scan
        .found
        .iter()
        .filter(|found| found.intact && found.key == MARKER_KEY)
        .filter_map(|found| serde_json::from_slice(&found.value).ok())
        .collect();
    let sealed_seen = scan.found.iter().any(|found| {
        found.value.starts_with(ENVELOPE_PREFIX)
            && decode_head("", &found.value).is_ok_and(|head| head.format == SEALED_FORMAT)
    });
    let Some(source) = key else {
        if let Some(marker) = markers.into_iter().next() {
            return Err(key_error(KeyProblem::Missing {
                expected: marker.key_source,
            }));
        }
        if sealed_seen {
            return Err(key_error(KeyProblem::Missing {
                expected: "the key the store was created with".into(),
            }));
        }
        return Ok(None);
    };
    let loaded = source
        .load(Some(store))
        .map_err(key_error)?
        .ok_or_else(|| {
            key_error(KeyProblem::NotFound {
                source_name: source.describe(),
            })
        })?;
    let sealer = Sealer::new(&loaded);
    let wrong = || {
        key_error(KeyProblem::Wrong {
            source_name: source.describe(),
            expected: markers.first().map_or_else(
                || "the key the store was created with".to_owned(),
                |marker| marker.key_source.clone(),
            ),
        })
    };
    // Without an intact marker, the sealed records tell: a key that opens none of the intact
    // ones is not this store's (a new store sealed with it would lock the user out).
    let intact_sealed: Vec<&Found> = scan
        .found
        .iter()
        .filter(|found| {
            found.intact
                && found.value.starts_with(ENVELOPE_PREFIX)
                && decode_head("", &found.value)
                    .is_ok_and(|head| head.format == SEALED_FORMAT && !head.deleted)
        })
        .collect();
    if markers.is_empty()
        && !intact_sealed.is_empty()
        && !intact_sealed.iter().any(|found| {
            std::str::from_utf8(&found.key).is_ok_and(|name| {
                decode_head(name, &found.value).is_ok_and(|head| {
                    open_sealed(name, head.version, &found.value, &sealer).is_some()
                })
            })
        })
    {
        return Err(wrong());
    }
    if !markers.is_empty() {
        if !markers.iter().any(|marker| sealer.fits(marker)) {
            return Err(wrong());
        }
    } else if !sealed_seen
        && scan
            .found
            .iter()
            .any(|found| found.value.starts_with(ENVELOPE_PREFIX))
    {
        return Err(key_error(KeyProblem::NotEncrypted {
            source_name: source.describe(),
        }));
    }
    Ok(Some(sealer))
}

/// Decides every profile: the highest intact version that decodes (and opens) wins, a
/// tombstone over a record of its version.
pub(crate) fn plan(scan: &Scan, sealer: Option<&Sealer>) -> Plan {
    // Per profile: the best verified copy, the highest version of any copy, whether an
    // intact copy was unreadable.
    struct Seen {
        best: Option<(u64, Option<ProfileRecord>)>,
        highest_claimed: u64,
        unreadable: bool,
    }
    let mut profiles: BTreeMap<String, Seen> = BTreeMap::new();
    for found in &scan.found {
        if !found.value.starts_with(ENVELOPE_PREFIX) {
            continue;
        }
        let Ok(name) = std::str::from_utf8(&found.key) else {
            continue;
        };
        if validate_profile_name(name).is_err() {
            continue;
        }
        let seen = profiles.entry(name.to_owned()).or_insert(Seen {
            best: None,
            highest_claimed: 0,
            unreadable: false,
        });
        let head = decode_head(name, &found.value).ok();
        if let Some(head) = &head {
            seen.highest_claimed = seen.highest_claimed.max(head.version);
        }
        if !found.intact {
            continue;
        }
        let verified = head.and_then(|head| {
            if head.deleted {
                return Some((head.version, None));
            }
            let record = match head.format {
                CLEAR_FORMAT => decode_clear_record(name, &found.value).ok()?,
                SEALED_FORMAT => open_sealed(name, head.version, &found.value, sealer?)?,
                _ => return None,
            };
            Some((head.version, Some(record)))
        });
        let Some((version, record)) = verified else {
            seen.unreadable = true;
            continue;
        };
        let better = match &seen.best {
            None => true,
            Some((best, best_record)) => {
                version > *best || (version == *best && record.is_none() && best_record.is_some())
            }
        };
        if better {
            seen.best = Some((version, record));
        }
    }
    let mut plan = Plan {
        recovered: Vec::new(),
        deleted: Vec::new(),
        lost: Vec::new(),
    };
    for (name, seen) in profiles {
        match seen.best {
            Some((version, Some(record))) => {
                let newer_unverified = seen.highest_claimed > version;
                plan.recovered
                    .push((name, version, record, newer_unverified));
            }
            Some((version, None)) => plan.deleted.push((name, version)),
            None => plan.lost.push(LostProfile {
                profile: name,
                reason: if seen.unreadable {
                    LostReason::Unreadable
                } else {
                    LostReason::Damaged
                },
            }),
        }
    }
    plan
}

fn open_sealed(
    profile: &str,
    version: u64,
    bytes: &[u8],
    sealer: &Sealer,
) -> Option<ProfileRecord> {
    let envelope: crate::EnvelopeSealed = serde_json::from_slice(bytes).ok()?;
    let plaintext = sealer.open_record(profile, version, &envelope.sealed)?;
    serde_json::from_slice(&plaintext).ok()
}

impl Scan {
    pub(crate) fn damaged_messages(&self) -> u64 {
        self.damaged_messages
    }

    pub(crate) fn scanned(&self) -> u64 {
        self.scanned
    }

    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }
}

fn io_error(path: &Path, error: std::io::Error) -> StoreError {
    StoreError::io(path.display().to_string(), error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_varint(out: &mut Vec<u8>, value: u64) {
        // The inverse of `varint`, for the sizes the tests use.
        if value <= 240 {
            out.push(value as u8);
        } else if value <= 2287 {
            out.push(((value - 240) / 256 + 241) as u8);
            out.push(((value - 240) % 256) as u8);
        } else {
            out.push(249);
            out.push(((value - 2288) / 256) as u8);
            out.push(((value - 2288) % 256) as u8);
        }
    }

    fn put_ivec(out: &mut Vec<u8>, bytes: &[u8]) {
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    #[test]
    fn varints_read_as_sled_writes_them() {
        for value in [0u64, 1, 240, 241, 1000, 2287, 2288, 50_000, 67_823] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut cursor = out.as_slice();
            assert_eq!(varint(&mut cursor), Some(value));
            assert!(cursor.is_empty());
        }
        let mut four = &[250u8, 1, 2, 3][..];
        assert_eq!(varint(&mut four), Some(0x03_02_01));
        assert_eq!(varint(&mut &[251u8, 1][..]), None, "cut short");
        assert_eq!(varint(&mut &[][..]), None);
    }

    #[test]
    fn a_leaf_node_gives_its_keys_with_their_prefix() {
        let mut body = Vec::new();
        put_varint(&mut body, 0);
        put_varint(&mut body, 0);
        body.push(0);
        body.push(2); // prefix length
        put_ivec(&mut body, b"pr");
        put_ivec(&mut body, b"");
        body.push(0);
        put_varint(&mut body, 2);
        put_ivec(&mut body, b"o1");
        put_ivec(&mut body, b"o2");
        put_ivec(&mut body, b"v1");
        put_ivec(&mut body, b"v2");
        let pairs = parse_node(&body).unwrap();
        assert_eq!(
            pairs,
            [
                (b"pro1".to_vec(), b"v1".to_vec()),
                (b"pro2".to_vec(), b"v2".to_vec())
            ]
        );
        // Any cut is refused, never misread.
        for len in 0..body.len() {
            assert!(parse_node(&body[..len]).is_none(), "cut at {len}");
        }
    }

    #[test]
    fn garbage_parses_as_nothing_in_bounded_steps() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let garbage: Vec<u8> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, &garbage).unwrap();
        let mut scan = Scan::default();
        scan_file(&path, &mut scan).unwrap();
        assert!(scan.found.is_empty());
        assert_eq!(scan.scanned, garbage.len() as u64);
    }

    #[test]
    fn runs_of_zeros_are_skipped_but_a_message_after_them_is_read() {
        // A message right after a run of zeros (as in a sled segment) is still found.
        let mut body = vec![0u8];
        body.extend_from_slice(&[5]);
        body.extend_from_slice(b"alpha");
        let value = br#"{"format":1,"version":1,"deleted":true}"#;
        body.push(value.len() as u8);
        body.extend_from_slice(value);
        let mut header = vec![0, 0, 0, 0, INLINE_LINK, body.len() as u8, 1, 1];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&body);
        hasher.update(&header[4..]);
        let crc = (hasher.finalize() ^ 0xFFFF_FFFF).to_le_bytes();
        header[..4].copy_from_slice(&crc);
        for leading in [0usize, 3, 16, 17, 100, 4096] {
            let mut file = vec![0u8; leading];
            file.extend_from_slice(&header);
            file.extend_from_slice(&body);
            file.extend_from_slice(&[0u8; 1000]);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            std::fs::write(&path, &file).unwrap();
            let mut scan = Scan::default();
            scan_file(&path, &mut scan).unwrap();
            assert_eq!(scan.found.len(), 1, "after {leading} zeros");
            assert!(scan.found[0].intact);
            assert_eq!(scan.found[0].key, b"alpha");
        }
    }
}
