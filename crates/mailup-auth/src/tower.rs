//! [`MailUpLayer`]: MailUp's bearer token in an application's own `tower` stack (feature
//! `tower`), over any `Service<http::Request<B>>` (a hyper client, a `reqwest` adapter, ...).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use tower_layer::Layer;
use tower_service::Service;

use crate::client::bearer::{BearerAttempts, TokenSource};
use crate::{Error, MailUpAccounts, MailUpClient, Url};

/// A [`tower_layer::Layer`] that adds `Authorization: Bearer <token>` from a [`MailUpClient`]
/// (or one account of a [`MailUpAccounts`]) to the requests of the service it wraps.
///
/// The rules are [`MailUpMiddleware`](crate::MailUpMiddleware)'s: the token only to the API
/// base origin and the [`trust_origin`](crate::MailUpClientBuilder::trust_origin) ones (a
/// request with any other origin, or a relative URI, passes through untouched); on MailUp's
/// 401 one refresh and one retry, a second 401 returned as the response it is; every status a
/// response; the header marked sensitive, no token logged. The request body must be `Clone`
/// (e.g. `http_body_util::Full<Bytes>`, `String`) so the one retry can resend it.
///
/// ```no_run
/// # async fn run(client: mailup_auth::MailUpClient) -> Result<(), Box<dyn std::error::Error>> {
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use mailup_auth::MailUpLayer;
/// use tower::ServiceBuilder;
/// use tower_service::Service;
///
/// // Any `Service<http::Request<B>>` with a `Clone` body; here hyper's pooled client (https
/// // needs a TLS connector such as hyper-rustls).
/// let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<hyper::body::Bytes>>();
/// let mut service = ServiceBuilder::new().layer(MailUpLayer::new(client)).service(hyper);
/// let request = http::Request::get(
///     "http://127.0.0.1:8080/API/v1.1/Rest/ConsoleService.svc/Console/Authentication/Info",
/// )
/// .body(Full::default())?;
/// std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
/// let response = service.call(request).await?;
/// println!("{}", response.status());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MailUpLayer {
    source: TokenSource,
}

impl MailUpLayer {
    /// Tokens from `client`.
    pub fn new(client: MailUpClient) -> Self {
        Self {
            source: TokenSource::Client(client),
        }
    }

    /// Tokens of `profile` in `accounts` (the account's one client, loaded on first use).
    pub fn for_account(accounts: MailUpAccounts, profile: impl Into<String>) -> Self {
        Self {
            source: TokenSource::Account {
                accounts,
                profile: Arc::from(profile.into()),
            },
        }
    }
}

impl<S> Layer<S> for MailUpLayer {
    type Service = MailUpService<S>;

    fn layer(&self, inner: S) -> MailUpService<S> {
        MailUpService {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The service [`MailUpLayer`] wraps around another: see there.
#[derive(Clone, Debug)]
pub struct MailUpService<S> {
    inner: S,
    source: TokenSource,
}

/// A failure of [`MailUpService`]: no token could be had, or the wrapped service failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MailUpServiceError<E> {
    /// No access token (e.g. [`ErrorKind::ReauthorizationRequired`]); nothing was sent.
    #[error("MailUp authorization: {0}")]
    Auth(#[source] Error),
    /// The wrapped service failed.
    #[error(transparent)]
    Inner(E),
}

/// The future of [`MailUpService::call`].
pub type MailUpServiceFuture<R, E> =
    Pin<Box<dyn Future<Output = Result<http::Response<R>, MailUpServiceError<E>>> + Send>>;

impl<S, B, R> Service<http::Request<B>> for MailUpService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send + 'static,
    B: Clone + Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = MailUpServiceError<S::Error>;
    type Future = MailUpServiceFuture<R, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(MailUpServiceError::Inner)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The service polled ready is the one that sends; its clone stays for the next call.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let source = self.source.clone();
        Box::pin(async move {
            let client = source.client().await.map_err(MailUpServiceError::Auth)?;
            let trusted =
                Url::parse(&request.uri().to_string()).is_ok_and(|url| client.trusts(&url));
            if !trusted {
                return inner.call(request).await.map_err(MailUpServiceError::Inner);
            }
            let mut attempts = BearerAttempts::new(client);
            let mut request = request;
            let mut ready = true;
            loop {
                let again = request.clone();
                let authorization = attempts
                    .authorization()
                    .await
                    .map_err(MailUpServiceError::Auth)?;
                request.headers_mut().insert(AUTHORIZATION, authorization);
                if !ready {
                    std::future::poll_fn(|cx| inner.poll_ready(cx))
                        .await
                        .map_err(MailUpServiceError::Inner)?;
                }
                let response = inner
                    .call(request)
                    .await
                    .map_err(MailUpServiceError::Inner)?;
                // True once at most per request: the loop runs at most twice.
                if !attempts.retry_after(response.status()) {
                    return Ok(response);
                }
                request = again;
                ready = false;
            }
        })
    }
}
