//! What the reqwest middleware and the tower layer share with [`MailUpClient::send`]: which
//! client holds the token, which URLs may receive it, and the core's 401 rule ([`ApiCall`]:
//! one refresh, one retry, never a loop). Only the sending differs: theirs goes through the
//! application's own HTTP stack.

use super::*;
use crate::accounts::MailUpAccounts;

/// Where a middleware takes its token from: one client, or one account of a
/// [`MailUpAccounts`] (resolved on each request, so an evicted account is loaded again).
#[derive(Clone, Debug)]
pub(crate) enum TokenSource {
    Client(MailUpClient),
    Account {
        accounts: MailUpAccounts,
        profile: Arc<str>,
    },
}

impl TokenSource {
    pub(crate) async fn client(&self) -> Result<MailUpClient> {
        match self {
            Self::Client(client) => Ok(client.clone()),
            Self::Account { accounts, profile } => accounts.client(profile).await,
        }
    }
}

/// One request's attempts through a middleware: at most two, the second only after a 401 and
/// one refresh.
#[derive(Debug)]
pub(crate) struct BearerAttempts {
    client: MailUpClient,
    call: ApiCall,
    /// The token the last attempt carried (so a 401 marks that one, not a newer one, rejected).
    sent: Option<AccessToken>,
}

impl BearerAttempts {
    pub(crate) fn new(client: MailUpClient) -> Self {
        Self {
            client,
            call: ApiCall::new(),
            sent: None,
        }
    }

    /// The `Authorization` value for the next attempt (a fresh token: refreshed if needed,
    /// single flight with every other caller of the client). Marked sensitive.
    pub(crate) async fn authorization(&mut self) -> Result<HeaderValue> {
        let token = self.client.access_token().await?;
        let value = mailup_auth_core::bearer_header(&token);
        self.sent = Some(token);
        Ok(value)
    }

    /// Whether to send the request again after an answer with `status`: true only for the
    /// first 401 (the token is then marked rejected, so the next
    /// [`authorization`](Self::authorization) refreshes). A second 401 and every other status
    /// go back to the caller as they are.
    pub(crate) fn retry_after(&mut self, status: http::StatusCode) -> bool {
        let now = self.client.inner.settings.clock.now();
        match self
            .call
            .handle_response_at(&HttpResponse::new(status, Vec::new()), now)
        {
            ApiStep::RefreshAndRetry => {
                tracing::info!("access token rejected (401); refreshing once and retrying once");
                if let Some(token) = &self.sent {
                    self.client.token_rejected(token);
                }
                true
            }
            ApiStep::Done | ApiStep::Fail(_) => false,
        }
    }
}

impl MailUpClient {
    /// Whether `url` may receive this client's access token: the API base's origin and the
    /// origins added with [`MailUpClientBuilder::trust_origin`] (the rule of
    /// [`send`](Self::send)).
    pub(crate) fn trusts(&self, url: &Url) -> bool {
        self.check_origin(url).is_ok()
    }
}
