//! Authenticated API calls: bearer token, 401 → one refresh and one retry, 429.

use super::*;

impl MailUpClient {
    /// Sends an authenticated request: adds `Authorization: Bearer`, refreshes once and retries
    /// once on 401, waits on 429 only when [`RateLimitRetry`] is configured. Non-2xx answers
    /// are typed errors.
    ///
    /// The access token goes only to the API base's origin (scheme, host and port) and to
    /// origins added with [`MailUpClientBuilder::trust_origin`]; any other URL is refused with
    /// [`Error::UntrustedOrigin`] before anything is sent.
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

    pub(super) fn check_origin(&self, url: &Url) -> Result<()> {
        let origin = url.origin();
        let api_origin = self
            .lock_state()
            .session
            .config()
            .endpoints()
            .api_base
            .origin();
        if origin == api_origin || self.inner.settings.trusted_origins.contains(&origin) {
            Ok(())
        } else {
            Err(Error::UntrustedOrigin(origin.ascii_serialization()))
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
        builder
            .body(response.body.to_vec())
            .map_err(|e| Error::Decode {
                context: "cannot rebuild it as an http::Response".into(),
                source: Some(mailup_auth_core::ErrorSource::new(e)),
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
        let api_base = self
            .lock_state()
            .session
            .config()
            .endpoints()
            .api_base
            .clone();
        let url = api_url(&api_base, path)?;
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

fn encode<B: Serialize + ?Sized>(body: &B) -> Result<Vec<u8>> {
    serde_json::to_vec(body).map_err(|e| Error::Decode {
        context: "cannot encode the request body".into(),
        source: Some(mailup_auth_core::ErrorSource::new(e)),
    })
}

pub(super) fn decode<T: DeserializeOwned>(response: &HttpResponse) -> Result<T> {
    let body: &[u8] = if response.body.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        &response.body
    };
    // serde_json's message can quote part of the body; report only where it failed.
    serde_json::from_slice(body).map_err(|e| Error::Decode {
        context: format!(
            "{:?} error at line {}, column {}",
            e.classify(),
            e.line(),
            e.column()
        ),
        source: None,
    })
}
