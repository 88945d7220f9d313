//! The future of [`MailUpClient::access_token`], shaped for the cached call.
//!
//! Most calls find a fresh token in the cache and finish on their first poll, so what such a
//! call costs is mostly building, moving and polling the future. An `async fn`'s future is
//! three words with a one-byte state; moved by value (into `pin!`, into a `select!`, into a
//! parent future) it is copied through memory with wider loads than the stores that wrote
//! it, and the processor stalls on the copy until those stores land (measured: most of the
//! gap between `access_token().await` and `cached_access_token()`). This future is two
//! pointers: it moves in registers. The slow path is an `async fn` as before, started on the
//! first poll that finds nothing to hand out and boxed (twice: a thin pointer keeps this
//! future two words; the slow path waits for a lock or the network, an allocation is noise).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use mailup_auth_core::AccessToken;

use super::MailUpClient;
use crate::error::Result;

/// The slow path's future, behind a thin pointer.
type Uncached<'a> = Box<Pin<Box<dyn Future<Output = Result<AccessToken>> + Send + 'a>>>;

/// [`MailUpClient::access_token`]'s future.
pub(super) struct AccessTokenFuture<'a> {
    client: &'a MailUpClient,
    /// The slow path, once a poll found nothing to hand out.
    uncached: Option<Uncached<'a>>,
}

impl<'a> AccessTokenFuture<'a> {
    #[inline]
    pub(super) fn new(client: &'a MailUpClient) -> Self {
        Self {
            client,
            uncached: None,
        }
    }
}

impl Future for AccessTokenFuture<'_> {
    type Output = Result<AccessToken>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let uncached = match &mut this.uncached {
            Some(uncached) => uncached,
            None => {
                if let Some(token) = this.client.cached_access_token() {
                    return Poll::Ready(Ok(token));
                }
                this.uncached
                    .insert(Box::new(Box::pin(this.client.access_token_uncached())))
            }
        };
        Pin::as_mut(uncached).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_future_is_two_words() {
        // Two pointers move in registers; see the module docs for why this matters.
        assert_eq!(
            std::mem::size_of::<AccessTokenFuture<'static>>(),
            2 * std::mem::size_of::<usize>()
        );
    }
}
