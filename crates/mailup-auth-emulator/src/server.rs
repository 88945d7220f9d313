//! [`Emulator`] and [`EmulatorBuilder`]: start the server on a loopback port, drive its test
//! controls, stop it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{delete, get, post, put};
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

use crate::clock::{Clock, SystemClock};
use crate::config::{EmulatorConfig, RateLimit, RegisteredClient, User};
use crate::console::SentEmail;
use crate::listener::{ConnectionHandle, KillableListener};
use crate::state::{AppState, Counters, Fault, Shared};
use crate::{admin, api, controls, logon, token};
use crate::{
    ADMIN_PATH, CONSENT_PATH, CONSOLE_API_PATH, LOGON_PATH, STATISTICS_API_PATH, TOKEN_PATH,
};

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The address could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Builds an [`Emulator`]. [`Emulator::builder`] starts from [`EmulatorConfig::default`]:
/// the demo client and user are there, more can be added.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    config: EmulatorConfig,
    clock: Arc<dyn Clock>,
    addr: SocketAddr,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        Self::from_config(EmulatorConfig::default())
    }
}

impl EmulatorBuilder {
    /// A builder with this configuration, the system clock and `127.0.0.1:0`.
    pub fn from_config(config: EmulatorConfig) -> Self {
        Self {
            config,
            clock: Arc::new(SystemClock),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }

    /// Removes the demo client and user (and any added so far).
    pub fn without_demo_accounts(mut self) -> Self {
        self.config.clients.clear();
        self.config.users.clear();
        self
    }

    /// Registers a client; one with the same id replaces the earlier one.
    pub fn client(mut self, client: RegisteredClient) -> Self {
        self.config.clients.retain(|c| c.id != client.id);
        self.config.clients.push(client);
        self
    }

    /// Adds a user; one with the same username replaces the earlier one.
    pub fn user(mut self, user: User) -> Self {
        self.config.users.retain(|u| u.username != user.username);
        self.config.users.push(user);
        self
    }

    /// The `expires_in` of access tokens (default 3600 s; whole seconds on the wire).
    pub fn access_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.access_token_lifetime = lifetime;
        self
    }

    /// How long authorization codes live (default 60 s).
    pub fn code_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.code_lifetime = lifetime;
        self
    }

    /// Per-access-token API rate limit: `Some((requests, window))`, or `None` (the default)
    /// for no limit.
    pub fn rate_limit(mut self, limit: Option<(u32, Duration)>) -> Self {
        self.config.rate_limit = limit.map(|(requests, window)| RateLimit { requests, window });
        self
    }

    /// The clock every expiry is checked against (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Serves the `/_emulator/...` admin routes (default: off, they answer 404).
    pub fn admin_api(mut self, enabled: bool) -> Self {
        self.config.admin_api = enabled;
        self
    }

    /// The address to listen on (default `127.0.0.1:0`, an ephemeral port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &EmulatorConfig {
        &self.config
    }

    /// Binds the address and starts serving on the current tokio runtime.
    pub async fn start(self) -> Result<Emulator, StartError> {
        self.config.validate()?;
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: self.addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: self.addr,
            source,
        })?;
        let shared: AppState = Arc::new(Shared::new(&self.config, self.clock));
        let app = router(shared.clone());
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = axum::serve(
            KillableListener::new(listener),
            app.into_make_service_with_connect_info::<ConnectionHandle>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop_rx.await;
        });
        let task = tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "emulator server stopped with an error");
            }
        });
        let host = match local_addr {
            SocketAddr::V4(v4) => v4.ip().to_string(),
            SocketAddr::V6(v6) => format!("[{}]", v6.ip()),
        };
        let base_url = Url::parse(&format!("http://{host}:{}/", local_addr.port()))
            .expect("an IP address and a port always form a valid URL");
        tracing::info!(%base_url, "MailUp emulator started");
        Ok(Emulator {
            shared,
            base_url,
            local_addr,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

fn router(shared: AppState) -> Router {
    use api::{lists, messages, recipients, statistics};
    let api = Router::new()
        .route(
            "/Console/Authentication/Info",
            get(api::authentication_info),
        )
        .route("/Console/User/Lists", get(lists::user_lists))
        .route("/Console/List", post(lists::create_list))
        .route("/Console/List/{id}", get(lists::list_detail))
        .route("/Console/List/{id}/Groups", get(lists::list_groups))
        .route("/Console/List/{id}/Group", post(lists::create_group))
        .route(
            "/Console/List/{id}/Group/{id_group}",
            put(lists::update_group).delete(lists::delete_group),
        )
        .route(
            "/Console/Recipient/DynamicFields",
            get(recipients::dynamic_fields),
        )
        .route("/Console/Recipient/Detail", put(recipients::update_detail))
        .route(
            "/Console/List/{id}/Recipients/{status}",
            get(recipients::list_recipients),
        )
        .route(
            "/Console/List/{id}/Recipient",
            post(recipients::list_subscribe_one),
        )
        .route(
            "/Console/List/{id}/Recipients",
            post(recipients::list_import),
        )
        .route(
            "/Console/List/{id}/Subscribe/{id_recipient}",
            post(recipients::list_subscribe_existing),
        )
        .route(
            "/Console/List/{id}/Unsubscribe/{id_recipient}",
            delete(recipients::list_unsubscribe),
        )
        .route(
            "/Console/Group/{id}/Recipients",
            get(recipients::group_recipients).post(recipients::group_import),
        )
        .route(
            "/Console/Group/{id}/Recipient",
            post(recipients::group_subscribe_one),
        )
        .route(
            "/Console/Group/{id}/Subscribe/{id_recipient}",
            post(recipients::group_add_existing),
        )
        .route(
            "/Console/Group/{id}/Unsubscribe/{id_recipient}",
            delete(recipients::group_remove),
        )
        .route("/Console/List/{id}/Emails", get(messages::list_emails))
        .route("/Console/Email/Send", post(messages::send_email))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        // Rejections raised before a handler runs (an undecodable path segment, a body over the
        // size limit) come in MailUp's error shape too.
        .layer(axum::middleware::map_response(api::in_mailup_shape));
    let statistics = Router::new()
        .route(
            "/Message/{id}/List/Recipients",
            get(statistics::message_recipients),
        )
        .route(
            "/Message/{id}/Count/Recipients",
            get(statistics::message_recipients_count),
        )
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::map_response(api::in_mailup_shape));
    let mut app = Router::new()
        .route(LOGON_PATH, get(logon::logon_page).post(logon::logon_submit))
        .route(
            CONSENT_PATH,
            get(logon::consent_page).post(logon::consent_submit),
        )
        .route(TOKEN_PATH, get(token::token).post(token::token))
        .nest(CONSOLE_API_PATH, api)
        .nest(STATISTICS_API_PATH, statistics)
        .fallback(api::outside_routes);
    if shared.admin_api {
        app = app.nest(ADMIN_PATH, admin::router());
    }
    app.with_state(shared)
}

/// A running emulator of MailUp's authorization server and Console API.
///
/// Dropping it stops the server (gracefully, in the background); [`Emulator::shutdown`] stops
/// it and waits.
pub struct Emulator {
    shared: AppState,
    base_url: Url,
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// A builder with the demo client and user.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    // ----- where it is -----

    /// `http://127.0.0.1:PORT/`
    pub fn base_url(&self) -> Url {
        self.base_url.clone()
    }

    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn join(&self, path: &str) -> Url {
        self.base_url
            .join(path.trim_start_matches('/'))
            .expect("the emulator's paths are valid relative URLs")
    }

    /// `.../Authorization/OAuth/LogOn`, without a query.
    pub fn logon_url(&self) -> Url {
        self.join(LOGON_PATH)
    }

    /// A complete LogOn URL for `client_id`, `redirect_uri` and `state`, as a client would send
    /// the browser to.
    pub fn authorize_url(&self, client_id: &str, redirect_uri: &str, state: &str) -> Url {
        let mut url = self.logon_url();
        url.query_pairs_mut()
            .append_pair("client_id", client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state);
        url
    }

    /// `.../Authorization/OAuth/Token`
    pub fn token_url(&self) -> Url {
        self.join(TOKEN_PATH)
    }

    /// `.../API/v1.1/Rest/ConsoleService.svc` (no trailing slash, like MailUp's documented base).
    pub fn console_api_base(&self) -> Url {
        self.join(CONSOLE_API_PATH)
    }

    /// `.../API/v1.1/Rest/MailStatisticsService.svc`, the MailStatistics slice's base.
    pub fn statistics_api_base(&self) -> Url {
        self.join(STATISTICS_API_PATH)
    }

    /// `.../_emulator` (only served when the admin API is enabled).
    pub fn admin_url(&self) -> Url {
        self.join(ADMIN_PATH)
    }

    /// Whether the admin HTTP API is served.
    pub fn admin_api_enabled(&self) -> bool {
        self.shared.admin_api
    }

    // ----- what it holds -----

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters.snapshot()
    }

    /// Every refresh token issued so far, oldest first, live or not.
    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.shared.lock().issued_refresh_tokens.clone()
    }

    /// Whether `refresh_token` would be accepted now (not rotated away, not revoked).
    pub fn is_refresh_token_live(&self, refresh_token: &str) -> bool {
        self.shared
            .lock()
            .refresh_tokens
            .contains_key(refresh_token)
    }

    /// Whether `access_token` would be accepted by the API now.
    pub fn is_access_token_live(&self, access_token: &str) -> bool {
        let now = self.shared.now();
        self.shared
            .lock()
            .access_tokens
            .get(access_token)
            .is_some_and(|grant| grant.expires_at > now)
    }

    /// The emulator's current time: the injected clock plus [`Emulator::advance_clock`].
    pub fn now(&self) -> std::time::SystemTime {
        self.shared.now()
    }

    // ----- controls -----

    /// Expires every access token issued so far; the API answers
    /// "Authorization error: Access token is expired" for them.
    pub fn expire_all_access_tokens(&self) {
        controls::expire_all_access_tokens(&self.shared);
    }

    /// Revokes one refresh token; `true` if it was live.
    pub fn revoke_refresh_token(&self, refresh_token: &str) -> bool {
        self.shared
            .lock()
            .refresh_tokens
            .remove(refresh_token)
            .is_some()
    }

    /// Revokes every refresh token.
    pub fn revoke_all_refresh_tokens(&self) {
        self.shared.lock().refresh_tokens.clear();
    }

    /// Answers the next `n` token requests with `fault` instead of processing them. Calls
    /// queue up: `fail_next_token_requests(1, Status503)` then `(1, DropConnection)` fails
    /// the next two requests in that order.
    pub fn fail_next_token_requests(&self, n: u32, fault: Fault) {
        controls::fail_next_token_requests(&self.shared, n, fault);
    }

    /// Answers the next `n` requests under the Console API base with `fault` instead of
    /// serving them (the access token is not even looked at). Faults that only make sense on
    /// the token endpoint ([`Fault::processes_the_grant`]) serve the request normally.
    pub fn fail_next_api_requests(&self, n: u32, fault: Fault) {
        controls::fail_next_api_requests(&self.shared, n, fault);
    }

    /// Drops the faults not yet used (token endpoint and API).
    pub fn clear_faults(&self) {
        let mut state = self.shared.lock();
        state.faults.clear();
        state.api_faults.clear();
    }

    /// Delays every token-endpoint response by `latency` (zero to stop).
    pub fn set_token_latency(&self, latency: Duration) {
        self.shared.lock().token_latency = latency;
    }

    /// Delays every API response by `latency` (zero to stop).
    pub fn set_api_latency(&self, latency: Duration) {
        self.shared.lock().api_latency = latency;
    }

    /// Changes the per-token rate limit (`None` for none); current windows start afresh.
    pub fn set_rate_limit(&self, limit: Option<(u32, Duration)>) {
        controls::set_rate_limit(
            &self.shared,
            limit.map(|(requests, window)| RateLimit { requests, window }),
        );
    }

    /// Moves the emulator's time forward by `by`, on top of the injected clock. Useful with
    /// the system clock; with a [`ManualClock`](crate::ManualClock), advancing it does the same.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.advance_clock(by);
    }

    /// Every message "sent" through `POST /Console/Email/Send`, by every account, oldest first.
    pub fn sent_emails(&self) -> Vec<SentEmail> {
        controls::sent_emails(&self.shared)
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        self.shared.counters.reset();
    }

    // ----- stopping -----

    /// Stops accepting connections, lets requests in flight finish (at most 5 s, then they
    /// are cut) and returns once the server task has ended.
    pub async fn shutdown(mut self) {
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl std::fmt::Debug for Emulator {
    // Not derived: the state holds live tokens, which have no place in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.base_url.as_str())
            .field("admin_api", &self.shared.admin_api)
            .field("running", &self.stop.is_some())
            .finish_non_exhaustive()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared
            .stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
