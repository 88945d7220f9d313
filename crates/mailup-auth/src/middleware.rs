//! [`MailUpMiddleware`]: MailUp's bearer token on an application's own
//! [`reqwest_middleware`] client (feature `reqwest-middleware`).

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::Extensions;
use reqwest_middleware::reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::client::bearer::{BearerAttempts, TokenSource};
use crate::{MailUpAccounts, MailUpClient};

/// A [`reqwest_middleware::Middleware`] that adds `Authorization: Bearer <token>` from a
/// [`MailUpClient`] (or one account of a [`MailUpAccounts`]) to the requests of an
/// application's own `reqwest` client.
///
/// - The token goes only to the client's API base origin and the origins added with
///   [`trust_origin`](crate::MailUpClientBuilder::trust_origin); a request anywhere else passes
///   through untouched, with no `Authorization` header from here. Origins are compared after
///   parsing: a look-alike host (`services.mailup.com.evil.test`), another port or scheme, a
///   `user@host` trick or a trailing dot is another origin; letter case is not.
/// - Where the token goes, it replaces any `Authorization` the request already had (exactly
///   one header is sent); elsewhere the caller's own header is left as it is.
/// - A fresh token is taken for each request: a due refresh runs first, single flight with
///   every other user of the client.
/// - On MailUp's 401 the token is refreshed once and the request sent once more (the core's
///   [`ApiCall`](crate::core::ApiCall) rule, as [`MailUpClient::send`] does); a second 401 is
///   returned to the caller as the response it is. A request whose body cannot be cloned (a
///   stream) is not sent again: its 401 is returned, and the next request refreshes.
/// - Every other status is returned as a response, as `reqwest` does; only a failure to get a
///   token (e.g. [`ErrorKind::ReauthorizationRequired`](crate::ErrorKind::ReauthorizationRequired))
///   is an error: [`reqwest_middleware::Error::Middleware`], holding the [`Error`](crate::Error).
/// - The header value is marked sensitive; nothing here logs a token.
///
/// ```no_run
/// # async fn run(client: mailup_auth::MailUpClient) -> Result<(), Box<dyn std::error::Error>> {
/// use mailup_auth::MailUpMiddleware;
///
/// let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(MailUpMiddleware::new(client))
///     .build();
/// let info = http
///     .get("https://services.mailup.com/API/v1.1/Rest/ConsoleService.svc/Console/Authentication/Info")
///     .send()
///     .await?;
/// println!("{}", info.text().await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MailUpMiddleware {
    source: TokenSource,
}

impl MailUpMiddleware {
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

#[async_trait::async_trait]
impl Middleware for MailUpMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let client = self
            .source
            .client()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        if !client.trusts(request.url()) {
            return next.run(request, extensions).await;
        }
        let mut attempts = BearerAttempts::new(client);
        let mut request = request;
        loop {
            let again = request.try_clone();
            let authorization = attempts
                .authorization()
                .await
                .map_err(reqwest_middleware::Error::middleware)?;
            request.headers_mut().insert(AUTHORIZATION, authorization);
            let response = next.clone().run(request, extensions).await?;
            // `retry_after` is true once at most per request: the loop runs at most twice.
            match (attempts.retry_after(response.status()), again) {
                (true, Some(again)) => request = again,
                _ => return Ok(response),
            }
        }
    }
}
