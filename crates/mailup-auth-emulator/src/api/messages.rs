//! Email messages: the seeded messages of a list, and `POST Email/Send`, which records the send
//! instead of mailing anyone, so a test can assert on it.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::lists::list_of;
use super::paging::{Listing, QueryParams};
use super::{ok_json, parse_body, parse_id, ApiCaller, MailUpError};
use crate::seed::RecipientStatus;
use crate::state::AppState;

type ApiResult = Result<Response, MailUpError>;

/// `GET /Console/List/{id}/Emails`
pub(crate) async fn list_emails(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let id = parse_id("the list id", &id)?;
    let listing = Listing::from_query(&QueryParams::parse(query.as_deref()))?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    list_of(account, id)?;
    let messages: Vec<_> = account
        .messages
        .iter()
        .filter(|m| m.id_list == id)
        .collect();
    listing.respond(&messages)
}

/// The body of `POST /Console/Email/Send`: `{"Email":"..","idMessage":12}`.
#[derive(Debug, Deserialize)]
struct SendBody {
    #[serde(rename = "Email")]
    email: Option<String>,
    #[serde(rename = "idMessage")]
    id_message: Option<u64>,
}

/// MailUp's `MailMessageSendResponse`.
#[derive(Debug, Serialize)]
struct SendResponse {
    #[serde(rename = "Id")]
    id: u64,
    #[serde(rename = "InvalidRecipients")]
    invalid_recipients: Vec<String>,
    #[serde(rename = "Sent")]
    sent: u64,
    #[serde(rename = "UnprocessedRecipients")]
    unprocessed_recipients: Vec<String>,
    #[serde(rename = "idMessage")]
    id_message: u64,
}

/// `POST /Console/Email/Send`: "sends" a message to one recipient. A recipient subscribed to
/// the message's list is recorded (`Sent: 1`); anyone else is listed in `InvalidRecipients`
/// and nothing is recorded.
pub(crate) async fn send_email(
    State(shared): State<AppState>,
    caller: ApiCaller,
    body: Bytes,
) -> ApiResult {
    let send: SendBody = parse_body("send request", &body)?;
    let email = send
        .email
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .ok_or_else(|| MailUpError::bad_request("Email is required"))?;
    let id_message = send
        .id_message
        .ok_or_else(|| MailUpError::bad_request("idMessage is required"))?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    let message = account
        .message(id_message)
        .cloned()
        .ok_or_else(|| MailUpError::not_found(format!("Message {id_message} does not exist")))?;
    let subscribed = account
        .recipient_by_email(&email)
        .map(|r| r.id)
        .filter(|id| {
            account.subscriptions.get(&(message.id_list, *id)) == Some(&RecipientStatus::Subscribed)
        });
    let response = match subscribed {
        Some(recipient) => SendResponse {
            id: account.record_send(&message, recipient),
            invalid_recipients: Vec::new(),
            sent: 1,
            unprocessed_recipients: Vec::new(),
            id_message,
        },
        None => SendResponse {
            id: 0,
            invalid_recipients: vec![email],
            sent: 0,
            unprocessed_recipients: Vec::new(),
            id_message,
        },
    };
    Ok(ok_json(&response))
}
