#![doc = include_str!("../README.md")]
//!
//! ## What this crate is for, and what it is not for
//!
//! It is the one implementation of encryption at rest that the token stores share
//! (`mailup-auth-store-sled`, `mailup-auth-store-redis`): where a store key is kept
//! ([`KeySource`]), how a record is sealed and opened ([`Sealer`]), and how a store tells the
//! right key from a wrong one ([`EncryptionMarker`]). It knows nothing of envelopes, trees or
//! Redis keys: each store writes the sealed text in its own envelope
//! (`{"format": 2, "version": N, "sealed": "..."}` in both). It is not a general-purpose
//! encryption library.
//!
//! ## The scheme
//!
//! Records are sealed with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`): a 256-bit key,
//! a random 192-bit nonce per record (random nonces of that size never collide in practice),
//! and as associated data the profile name and the record's version, so a sealed record
//! cannot be moved to another profile or given another version without failing to open.
//!
//! A store remembers that it is encrypted with an [`EncryptionMarker`]: the scheme, where its
//! key was kept (to name it in errors), and a sealed check value that tells a wrong key from
//! damage. The labels in the associated data (`mailup-auth-store-sled/...`) are part of the
//! format: they date from when only the sled store sealed records, and both stores use them,
//! so a record sealed by one opens in the other under the same key.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Public types stay open to new variants and fields unless one is exhaustive on purpose (each
// such item says why at its `allow`).
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
use mailup_auth_core::KeyProblem;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The only scheme so far.
const SCHEME: &str = "xchacha20poly1305";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
/// How a key is written (in a key file, in a keychain entry): this prefix, then the key in
/// standard base64. The prefix says what the file is to a person who finds it.
const KEY_TEXT_PREFIX: &str = "mailup-auth-store-key-v1:";
/// What the check value seals (with [`CHECK_AAD`]).
const CHECK_PLAINTEXT: &[u8] = b"mailup-auth-store-sled key check";
const CHECK_AAD: &[u8] = b"mailup-auth-store-sled/key-check";
const RECORD_AAD: &[u8] = b"mailup-auth-store-sled/record";
/// A key file longer than this is not one of ours.
const MAX_KEY_FILE: u64 = 1024;

/// Where an encrypted store's key is kept. The store never writes the key next to its records.
///
/// Shared by the stores: `mailup_auth_store_sled::KeySource` and
/// `mailup_auth_store_redis::KeySource` are this type.
///
/// - [`KeySource::File`]: a file of its own, mode `0600`, outside the store directory. It
///   protects a copied store directory, backups and synced folders (whoever has the store but
///   not the key file reads nothing), not other programs running as the same user.
/// - `KeySource::Keychain` (feature `keyring`): the OS keychain. It also protects against
///   programs that can read the user's files but cannot unlock the keychain.
///
/// When a new store is created with a source that holds no key yet, a random key is created
/// there; an existing store never gets a new key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// A key file. On Unix it is created `0600` (its directory `0700` when created), and one
    /// that other users can read or write is refused: move it somewhere private or
    /// `chmod 600` it. A key file inside the store directory is refused.
    File(PathBuf),
    /// An entry of the OS keychain: macOS Keychain, Windows Credential Manager, the Secret
    /// Service (GNOME Keyring, KWallet) on Linux and the BSDs.
    #[cfg(feature = "keyring")]
    Keychain {
        /// The entry's service name, e.g. `mailup-auth`.
        service: String,
        /// The entry's account (user) name, e.g. the store directory.
        account: String,
    },
}

impl KeySource {
    /// The key source in words, for messages: "the key file /path" or "the keychain entry
    /// service/account". Holds no key material.
    pub fn describe(&self) -> String {
        match self {
            Self::File(path) => format!("the key file {}", path.display()),
            #[cfg(feature = "keyring")]
            Self::Keychain { service, account } => {
                format!("the keychain entry {service}/{account}")
            }
        }
    }

    /// Reads the key; `Ok(None)` when the source holds none yet.
    ///
    /// `store` is the store's directory when it has one (a key file inside it is refused: a
    /// key kept with the records protects nothing); `None` for a store that is not on this
    /// machine's disk (Redis).
    pub fn load(&self, store: Option<&Path>) -> Result<Option<StoreKey>, KeyProblem> {
        match self {
            Self::File(path) => self.load_file(path, store),
            #[cfg(feature = "keyring")]
            Self::Keychain { service, account } => {
                let entry = keychain_entry(self, service, account)?;
                match entry.get_password() {
                    Ok(text) => StoreKey::from_text(&Zeroizing::new(text))
                        .map(Some)
                        .ok_or_else(|| self.unusable("the entry does not hold a store key")),
                    Err(keyring::Error::NoEntry) => Ok(None),
                    Err(error) => Err(self.unusable(&format!("the keychain failed: {error}"))),
                }
            }
        }
    }

    /// Creates a random key in the source; when another process created one first, that one.
    /// `store` as for [`load`](Self::load).
    pub fn create(&self, store: Option<&Path>) -> Result<StoreKey, KeyProblem> {
        let key = StoreKey::random().map_err(|message| self.unusable(&message))?;
        match self {
            Self::File(path) => {
                self.refuse_inside(path, store)?;
                match write_new_key_file(path, &key.to_text()) {
                    Ok(()) => Ok(key),
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => self
                        .load(store)?
                        .ok_or_else(|| self.unusable("it appeared empty")),
                    Err(error) => Err(self.unusable(&format!("cannot create it: {error}"))),
                }
            }
            #[cfg(feature = "keyring")]
            Self::Keychain { service, account } => {
                let entry = keychain_entry(self, service, account)?;
                entry
                    .set_password(&key.to_text())
                    .map_err(|error| self.unusable(&format!("the keychain failed: {error}")))?;
                Ok(key)
            }
        }
    }

    fn load_file(&self, path: &Path, store: Option<&Path>) -> Result<Option<StoreKey>, KeyProblem> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(self.unusable(&error.to_string())),
        };
        self.refuse_inside(path, store)?;
        if !meta.is_file() || meta.len() > MAX_KEY_FILE {
            return Err(self.unusable("it is not a key file"));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(self.unusable(&format!(
                    "other users can read or write it (mode {mode:04o}); run `chmod 600` on it"
                )));
            }
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|error| self.unusable(&error.to_string()))?,
        );
        StoreKey::from_text(&text)
            .map(Some)
            .ok_or_else(|| self.unusable("it does not hold a store key"))
    }

    /// A key kept with the records protects nothing. The path is resolved as the OS would
    /// (`..`, relative paths, symlinks, including a key file that is a link into the store)
    /// before it is compared with the store directory.
    fn refuse_inside(&self, path: &Path, store: Option<&Path>) -> Result<(), KeyProblem> {
        let Some(store) = store else {
            return Ok(());
        };
        let store = resolved(store);
        if resolved(path).starts_with(&store) {
            return Err(self.unusable(
                "it is inside the store directory; keep the key somewhere else (a key stored \
                 with the records protects nothing)",
            ));
        }
        Ok(())
    }

    /// A [`KeyProblem::Unusable`] naming this source, for a store that cannot use its key.
    pub fn unusable(&self, message: &str) -> KeyProblem {
        KeyProblem::Unusable {
            source_name: self.describe(),
            message: message.to_owned(),
        }
    }
}

#[cfg(feature = "keyring")]
fn keychain_entry(
    source: &KeySource,
    service: &str,
    account: &str,
) -> Result<keyring::Entry, KeyProblem> {
    keyring::Entry::new(service, account)
        .map_err(|error| source.unusable(&format!("the keychain failed: {error}")))
}

/// `path` as the OS resolves it: absolute, symlinks of its existing part followed (the file
/// itself included), `.` and `..` of the part that does not exist yet applied.
fn resolved(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // The longest prefix that exists, canonicalized; the rest appended component by component.
    let components: Vec<Component<'_>> = absolute.components().collect();
    let mut split = components.len();
    let mut base = None;
    while split > 0 {
        let prefix: std::path::PathBuf = components[..split].iter().collect();
        if let Ok(canonical) = prefix.canonicalize() {
            base = Some(canonical);
            break;
        }
        split -= 1;
    }
    let mut out = base.unwrap_or_default();
    for component in &components[split..] {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Creates `path` with `text`, never replacing an existing file: `0600` on Unix, its missing
/// directories `0700`, flushed.
fn write_new_key_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(parent)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// A store key (256 bits), as read from or created in a [`KeySource`]. Wiped on drop; never
/// printed (its `Debug` says `[redacted]`).
pub struct StoreKey(Zeroizing<[u8; KEY_LEN]>);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey([redacted])")
    }
}

impl StoreKey {
    fn random() -> Result<Self, String> {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::getrandom(key.as_mut())
            .map_err(|error| format!("no randomness from the OS: {error}"))?;
        Ok(Self(key))
    }

    fn from_text(text: &str) -> Option<Self> {
        let encoded = text.trim().strip_prefix(KEY_TEXT_PREFIX)?;
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?,
        );
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if decoded.len() != KEY_LEN {
            return None;
        }
        key.copy_from_slice(&decoded);
        Some(Self(key))
    }

    fn to_text(&self) -> Zeroizing<String> {
        let mut text = Zeroizing::new(String::from(KEY_TEXT_PREFIX));
        base64::engine::general_purpose::STANDARD.encode_string(self.0.as_ref(), &mut text);
        text
    }
}

/// What an encrypted store keeps beside its records (the sled store in its `meta` tree, the
/// Redis store under `<prefix>encryption`), as JSON: it says the store is encrypted, and
/// tells the right key from a wrong one. Holds no key material.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncryptionMarker {
    /// The AEAD scheme.
    pub scheme: String,
    /// Where the key was kept when the store was created (for messages).
    pub key_source: String,
    /// [`CHECK_PLAINTEXT`] sealed with the key, base64.
    check: String,
}

/// Seals and opens records with one store key. The cipher wipes its key on drop.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    /// A sealer with `key`.
    pub fn new(key: &StoreKey) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(key.0.as_ref().into()),
        }
    }

    /// The marker for a new encrypted store whose key is kept in `source`. `Err` (a message,
    /// no key material) only when the OS gives no randomness.
    pub fn marker(&self, source: &KeySource) -> Result<EncryptionMarker, String> {
        Ok(EncryptionMarker {
            scheme: SCHEME.to_owned(),
            key_source: source.describe(),
            check: self.seal(CHECK_PLAINTEXT, CHECK_AAD)?,
        })
    }

    /// Whether this is the key the marker was made with.
    pub fn fits(&self, marker: &EncryptionMarker) -> bool {
        marker.scheme == SCHEME
            && self
                .open(&marker.check, CHECK_AAD)
                .is_some_and(|plain| plain.as_slice() == CHECK_PLAINTEXT)
    }

    /// Seals a record's bytes for `profile` at `version`: base64 of nonce, ciphertext and tag.
    /// `Err` (a message) only when the OS gives no randomness.
    pub fn seal_record(
        &self,
        profile: &str,
        version: u64,
        plaintext: &[u8],
    ) -> Result<String, String> {
        self.seal(plaintext, &record_aad(profile, version))
    }

    /// Opens what [`seal_record`](Self::seal_record) sealed for this profile and version;
    /// `None` when it does not open (another key, another profile or version, damage).
    pub fn open_record(
        &self,
        profile: &str,
        version: u64,
        sealed: &str,
    ) -> Option<Zeroizing<Vec<u8>>> {
        self.open(sealed, &record_aad(profile, version))
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce)
            .map_err(|error| format!("no randomness from the OS: {error}"))?;
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| "cannot encrypt the record".to_owned())?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(base64::engine::general_purpose::STANDARD.encode(sealed))
    }

    fn open(&self, sealed: &str, aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .ok()?;
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

/// The associated data of a record: a domain label, the profile name and the version.
fn record_aad(profile: &str, version: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(RECORD_AAD.len() + profile.len() + 10);
    aad.extend_from_slice(RECORD_AAD);
    aad.push(0);
    aad.extend_from_slice(profile.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(&StoreKey::random().unwrap())
    }

    #[test]
    fn a_sealed_record_opens_only_for_its_profile_and_version() {
        let sealer = sealer();
        let sealed = sealer.seal_record("work", 3, b"tokens").unwrap();
        assert!(!sealed.contains("tokens"));
        assert_eq!(
            sealer.open_record("work", 3, &sealed).unwrap().as_slice(),
            b"tokens"
        );
        assert!(sealer.open_record("home", 3, &sealed).is_none());
        assert!(sealer.open_record("work", 4, &sealed).is_none());
        assert!(self::sealer().open_record("work", 3, &sealed).is_none());
        // A fresh nonce every time.
        assert_ne!(sealed, sealer.seal_record("work", 3, b"tokens").unwrap());
    }

    #[test]
    fn the_check_value_tells_the_right_key() {
        let sealer = sealer();
        let source = KeySource::File("/k".into());
        let marker = sealer.marker(&source).unwrap();
        assert!(sealer.fits(&marker));
        assert!(!self::sealer().fits(&marker));
        assert_eq!(marker.key_source, "the key file /k");
    }

    #[test]
    fn keys_round_trip_as_text_and_junk_is_refused() {
        let key = StoreKey::random().unwrap();
        let text = key.to_text();
        assert!(text.starts_with(KEY_TEXT_PREFIX));
        let back = StoreKey::from_text(&format!("{}\n", text.as_str())).unwrap();
        assert_eq!(back.0.as_ref(), key.0.as_ref());
        assert!(StoreKey::from_text("hello").is_none());
        assert!(StoreKey::from_text(&format!("{KEY_TEXT_PREFIX}AAAA")).is_none());
    }

    #[test]
    fn a_key_file_is_created_private_and_refused_when_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        let path = dir.path().join("keys").join("store.key");
        let source = KeySource::File(path.clone());
        assert!(source.load(Some(&store)).unwrap().is_none());
        let key = source.create(Some(&store)).unwrap();
        let loaded = source.load(Some(&store)).unwrap().unwrap();
        assert_eq!(loaded.0.as_ref(), key.0.as_ref());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let problem = source.load(Some(&store)).err().unwrap();
            assert!(matches!(problem, KeyProblem::Unusable { .. }), "{problem}");
            assert!(problem.to_string().contains("chmod 600"), "{problem}");
        }
        let inside = KeySource::File(store.join("store.key"));
        let problem = inside.create(Some(&store)).err().unwrap();
        assert!(
            problem.to_string().contains("inside the store"),
            "{problem}"
        );
        // A store that has no directory (Redis) takes a key file anywhere.
        let anywhere = KeySource::File(store.join("redis.key"));
        let key = anywhere.create(None).unwrap();
        assert_eq!(
            anywhere.load(None).unwrap().unwrap().0.as_ref(),
            key.0.as_ref()
        );
        assert_eq!(format!("{key:?}"), "StoreKey([redacted])");
    }
}
