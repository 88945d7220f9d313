//! A slice of MailUp's MailStatistics API under `/API/v1.1/Rest/MailStatisticsService.svc`:
//! who a message was sent to, as a paginated LIST and as a COUNT (a bare number), built from
//! the sends `POST /Console/Email/Send` recorded. Same token check, rate limit and error shape
//! as the Console API; only the caller's account is read.

use std::collections::BTreeSet;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde::Serialize;

use super::paging::{Listing, QueryParams};
use super::{ok_json, parse_id, ApiCaller, MailUpError};
use crate::console::ConsoleAccount;
use crate::state::AppState;

type ApiResult = Result<Response, MailUpError>;

/// An item of `Message/{id}/List/Recipients`, as MailUp's docs show it.
#[derive(Debug, Serialize)]
struct MessageRecipient {
    #[serde(rename = "Email")]
    email: String,
    #[serde(rename = "IdMessage")]
    id_message: u64,
    #[serde(rename = "IdRecipient")]
    id_recipient: u64,
}

/// The distinct recipients `id_message` was sent to, in the order of their first send.
fn recipients_of(
    account: &ConsoleAccount,
    id_message: u64,
) -> Result<Vec<MessageRecipient>, MailUpError> {
    if account.message(id_message).is_none() {
        return Err(MailUpError::not_found(format!(
            "Message {id_message} does not exist"
        )));
    }
    let mut seen = BTreeSet::new();
    Ok(account
        .sent
        .iter()
        .filter(|send| send.message_id == id_message && seen.insert(send.recipient_id))
        .map(|send| MessageRecipient {
            email: send.email.clone(),
            id_message,
            id_recipient: send.recipient_id,
        })
        .collect())
}

/// `GET /Message/{id}/List/Recipients`: a page of `{"Email","IdMessage","IdRecipient"}`.
pub(crate) async fn message_recipients(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let id = parse_id("the message id", &id)?;
    let listing = Listing::from_query(&QueryParams::parse(query.as_deref()))?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    listing.respond(&recipients_of(account, id)?)
}

/// `GET /Message/{id}/Count/Recipients`: the number of recipients, a bare JSON number (filters
/// do not apply to counts, as MailUp documents).
pub(crate) async fn message_recipients_count(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id("the message id", &id)?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    Ok(ok_json(&(recipients_of(account, id)?.len() as u64)))
}
