//! Authenticated API calls: bearer token, 401 → one refresh and one retry, 429.

use super::*;

impl MailUpClient {
    /// Sends an authenticated request: adds `Authorization: Bearer`, refreshes once and retries
    /// once on 401, waits on 429 only when [`RateLimitRetry`] is configured. Non-2xx answers
    /// are typed errors.
    ///
    /// The access token goes only to the API base's origin (scheme, host and port) and to
    /// origins added with [`MailUpClientBuilder::trust_origin`]; any other URL is refused with
    /// [`ErrorKind::UntrustedOrigin`] before anything is sent.
    pub async fn send(&self, request: HttpRequest) -> Result<HttpResponse> {
        self.check_origin(request.url())?;
        let span = tracing::info_span!("mailup_auth.api", method = %request.method(), path = %request.url().path());
        self.send_inner(request).instrument(span).await
    }

    pub(super) async fn send_inner(&self, request: HttpRequest) -> Result<HttpResponse> {
        let mut call = ApiCall::new();
        let mut rate_limited = 0;
        loop {
            let token = self.access_token().await?;
            let response = self
                .inner
                .settings
                .transport
                .send(with_bearer(request.clone(), &token))
                .await?;
            tracing::debug!(status = response.status.as_u16(), "API answered");
            let now = self.inner.settings.clock.now();
            match call.handle_response_at(&response, now) {
                ApiStep::Done => return Ok(response),
                ApiStep::RefreshAndRetry => {
                    tracing::info!(
                        "access token rejected (401); refreshing once and retrying once"
                    );
                    self.token_rejected(&token);
                }
                ApiStep::Fail(ApiError::RateLimited { retry_after, error }) => {
                    let policy = self.inner.settings.rate_limit;
                    match (policy, retry_after) {
                        (Some(policy), Some(wait))
                            if rate_limited < policy.max_retries && wait <= policy.max_wait =>
                        {
                            rate_limited += 1;
                            tracing::info!(wait_s = wait.as_secs(), "rate limited; waiting");
                            tokio::time::sleep(wait).await;
                        }
                        (Some(policy), None) if rate_limited < policy.max_retries => {
                            rate_limited += 1;
                            tokio::time::sleep(policy.max_wait.min(Duration::from_secs(1))).await;
                        }
                        _ => return Err(ApiError::RateLimited { retry_after, error }.into()),
                    }
                }
                ApiStep::Fail(error) => return Err(error.into()),
            }
        }
    }

    /// The origin rule of [`send`](Self::send). Called on every request: the API base is read
    /// from the settings (the session's configuration is the same one, never changed), so no
    /// lock is taken, and the common case (the API base's own origin) builds no `Origin`.
    pub(super) fn check_origin(&self, url: &Url) -> Result<()> {
        if same_origin(url, &self.inner.settings.config.endpoints().api_base) {
            return Ok(());
        }
        let origin = url.origin();
        if self.inner.settings.trusted_origins.contains(&origin) {
            Ok(())
        } else {
            Err(ErrorKind::UntrustedOrigin(origin.ascii_serialization()).into())
        }
    }

    pub(super) fn token_rejected(&self, token: &AccessToken) {
        let now = self.inner.settings.clock.now();
        let mut state = self.lock_state();
        state.session.handle_unauthorized(now, token);
        // Under the state lock, so it cannot interleave with a driver's `publish`.
        let current = self.inner.cache.load();
        if current.as_ref().is_some_and(|c| c.token == *token) {
            self.inner.cache.compare_and_swap(&*current, None);
        }
        drop(state);
    }

    /// [`send`](Self::send) for `http` crate types.
    pub async fn send_http(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>> {
        let (parts, body) = request.into_parts();
        let url =
            mailup_auth_core::internal::parse_http_url("request url", &parts.uri.to_string())?;
        let mut request = HttpRequest::new(parts.method, url).with_body(body);
        *request.headers_mut() = parts.headers;
        let response = self.send(request).await?;
        let mut builder = http::Response::builder().status(response.status);
        if let Some(headers) = builder.headers_mut() {
            *headers = response.headers;
        }
        builder.body(response.body.to_vec()).map_err(|e| {
            ErrorKind::Decode {
                context: "cannot rebuild it as an http::Response".into(),
                source: Some(mailup_auth_core::ErrorSource::new(e)),
            }
            .into()
        })
    }

    /// An API request for `path` (relative to the API base, or a full http(s) URL) with an
    /// optional JSON body; returns the raw response.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        json_body: Option<Vec<u8>>,
    ) -> Result<HttpResponse> {
        let url = api_url(&self.inner.settings.config.endpoints().api_base, path)?;
        self.request_url(method, url, json_body).await
    }

    /// [`request`](Self::request) for a URL already resolved (another service's).
    pub(super) async fn request_url(
        &self,
        method: Method,
        url: Url,
        json_body: Option<Vec<u8>>,
    ) -> Result<HttpResponse> {
        let mut request = HttpRequest::new(method, url)
            .with_response_limit(self.inner.settings.max_response_bytes)
            .with_header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(body) = json_body {
            request = request
                .with_header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .with_body(body);
        }
        self.send(request).await
    }

    /// `GET` a Console API path and decode the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        decode(&self.request(Method::GET, path, None).await?)
    }

    /// `POST` a JSON body to a Console API path and decode the JSON answer.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        decode(
            &self
                .request(Method::POST, path, Some(encode(body)?))
                .await?,
        )
    }

    /// `PUT` a JSON body to a Console API path and decode the JSON answer.
    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        decode(&self.request(Method::PUT, path, Some(encode(body)?)).await?)
    }

    /// `DELETE` a Console API path and decode the JSON answer (`null` for an empty body).
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        decode(&self.request(Method::DELETE, path, None).await?)
    }
}

/// `url.origin() == base.origin()` without building either `Origin` (each one allocates its
/// scheme and host): the same scheme, host and port, a missing port read as the scheme's
/// default. `base` is an http(s) URL (validated when the client was built), so a URL whose
/// scheme has no tuple origin (opaque: never equal to anything) cannot match it either. One
/// answer differs, on the safe side: a `blob:` URL has its inner URL's origin, so
/// `blob:https://host/x` was equal to the base's origin and is not the same origin here
/// (no transport can send it anyway).
fn same_origin(url: &Url, base: &Url) -> bool {
    url.scheme() == base.scheme()
        && url.host() == base.host()
        && url.port_or_known_default() == base.port_or_known_default()
}

fn encode<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| {
        ErrorKind::Decode {
            context: "cannot encode the request body".into(),
            source: Some(mailup_auth_core::ErrorSource::new(e)),
        }
        .into()
    })
}

pub(super) fn decode<T: DeserializeOwned>(response: &HttpResponse) -> Result<T> {
    let body: &[u8] = if response.body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        &response.body
    };
    // serde_json's message can quote part of the body; report only where it failed.
    serde_json::from_slice(body).map_err(|e| {
        ErrorKind::Decode {
            context: format!(
                "{:?} error at line {}, column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
            source: None,
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::same_origin;
    use url::Url;

    /// The fast comparison answers exactly as `Origin` equality does, look-alikes included.
    #[test]
    fn same_origin_agrees_with_origin_equality() {
        let bases = [
            "https://services.mailup.com/API/v1.1/Rest/ConsoleService.svc",
            "http://127.0.0.1:8080/API/v1.1/Rest/ConsoleService.svc/",
            "http://[::1]:9/api",
            "http://localhost/api",
        ];
        let urls = [
            "https://services.mailup.com/anything?q=1",
            "https://services.mailup.com:443/x",
            "https://SERVICES.mailup.com/x",
            "https://services.mailup.com./x",
            "https://services.mailup.com:8443/x",
            "http://services.mailup.com/x",
            "https://services.mailup.com.evil.test/x",
            "https://evil.test/services.mailup.com",
            "https://user:pw@services.mailup.com/x",
            "https://xn--servces-t2a.mailup.com/x",
            "wss://services.mailup.com/x",
            "ftp://services.mailup.com/x",
            "file:///services.mailup.com/x",
            "data:text/plain,services.mailup.com",
            "http://127.0.0.1:8080/x",
            "http://127.0.0.1:8081/x",
            "http://127.1:8080/x",
            "http://0x7f.0.0.1:8080/x",
            "http://localhost:8080/x",
            "http://[::1]:9/x",
            "http://[0:0:0:0:0:0:0:1]:9/x",
            "http://localhost:80/x",
            "http://LOCALHOST/x",
        ];
        for base in bases {
            let base = Url::parse(base).unwrap();
            for url in urls {
                let url = Url::parse(url).unwrap();
                assert_eq!(
                    same_origin(&url, &base),
                    url.origin() == base.origin(),
                    "{url} against {base}"
                );
            }
            // The one difference: a blob URL's origin is its inner URL's.
            let blob = Url::parse(&format!("blob:{base}")).unwrap();
            assert_eq!(blob.origin(), base.origin());
            assert!(!same_origin(&blob, &base), "{blob}");
        }
    }
}
