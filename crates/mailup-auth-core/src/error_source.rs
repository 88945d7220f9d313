//! The underlying error that one of the workspace's errors keeps as its `source()`.

use std::error::Error;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// The underlying error (an `std::io::Error`, a storage engine's or an HTTP client's) that an
/// error of this workspace keeps, so that `std::error::Error::source()` returns it as it was
/// and a caller can `downcast_ref` it.
///
/// Shared (`Arc`), so the errors holding it stay `Clone`. Two are equal when their messages
/// (`to_string()`) are: an error built again from the same failure (a test's expected value,
/// a retry's second answer) must compare equal, which `Arc::ptr_eq` would make impossible.
///
/// Whoever wraps an error answers for its message: it must hold no secret (no password, token
/// or store key), since `source()` hands it to every logger. The stores wrap `std::io`, sled
/// and serde errors; the HTTP transport wraps reqwest's error with its URL removed; a Redis
/// client error is never wrapped (its text is only recognised, never quoted).
///
/// ```
/// use std::error::Error as _;
/// use mailup_auth_core::StoreError;
///
/// let disk = std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
/// let error = StoreError::io("/var/lib/app/tokens", disk);
/// let source = error.source().expect("the I/O error is kept");
/// assert_eq!(
///     source.downcast_ref::<std::io::Error>().map(|e| e.kind()),
///     Some(std::io::ErrorKind::StorageFull)
/// );
/// assert_eq!(error.to_string(), "token store I/O error: /var/lib/app/tokens: disk full");
/// ```
#[derive(Clone)]
pub struct ErrorSource(Arc<dyn Error + Send + Sync + 'static>);

impl ErrorSource {
    /// Keeps `error`.
    pub fn new(error: impl Error + Send + Sync + 'static) -> Self {
        Self(Arc::new(error))
    }

    /// Keeps an error that is already shared.
    pub fn from_arc(error: Arc<dyn Error + Send + Sync + 'static>) -> Self {
        Self(error)
    }

    /// The error kept, as it was given.
    pub fn get(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

// Through `Deref` (and not by implementing `Error` itself) the errors that keep one return the
// wrapped error from their `source()`, not this wrapper: `downcast_ref` then finds the original.
impl Deref for ErrorSource {
    type Target = dyn Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        self.get()
    }
}

impl fmt::Debug for ErrorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ErrorSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl PartialEq for ErrorSource {
    /// By message: see the type's docs.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.to_string() == other.0.to_string()
    }
}

impl Eq for ErrorSource {}

/// `": {source}"`, or nothing: the tail of a message whose source may be absent.
pub(crate) fn colon_source(source: &Option<ErrorSource>) -> String {
    source
        .as_ref()
        .map(|source| format!(": {source}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_by_message_and_source_is_the_original() {
        let a = ErrorSource::new(std::io::Error::other("boom"));
        let b = ErrorSource::new(std::io::Error::other("boom"));
        assert_eq!(a, b);
        assert_eq!(a, a.clone());
        assert_ne!(a, ErrorSource::new(std::io::Error::other("bang")));
        assert!(a.get().downcast_ref::<std::io::Error>().is_some());
        assert_eq!(format!("{a}"), "boom");
    }
}
