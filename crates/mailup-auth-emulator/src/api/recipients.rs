//! Recipients: personal data fields, the recipients of a list by status and of a group,
//! subscribing one or importing several (to a list or a group), unsubscribing, group
//! membership and `PUT Recipient/Detail`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde::Deserialize;

use super::lists::list_of;
use super::paging::{Listing, QueryParams};
use super::{ok_empty, ok_json, parse_body, parse_id, ApiCaller, MailUpError};
use crate::console::{ConsoleAccount, RecipientInput};
use crate::seed::RecipientStatus;
use crate::state::AppState;

type ApiResult = Result<Response, MailUpError>;

/// `GET /Console/Recipient/DynamicFields`
pub(crate) async fn dynamic_fields(
    State(shared): State<AppState>,
    caller: ApiCaller,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let listing = Listing::from_query(&QueryParams::parse(query.as_deref()))?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    listing.respond(&account.fields)
}

/// `GET /Console/List/{id}/Recipients/{Subscribed|Unsubscribed|Pending|EmailOptins}`
pub(crate) async fn list_recipients(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path((id, status)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let status = match status.as_str() {
        "Subscribed" => RecipientStatus::Subscribed,
        "Unsubscribed" => RecipientStatus::Unsubscribed,
        // MailUp names the pending (confirmed opt-in) recipients both ways.
        "Pending" | "EmailOptins" => RecipientStatus::Pending,
        _ => {
            return Err(MailUpError::not_found(
                "The requested resource does not exist in the emulator",
            ))
        }
    };
    let id = parse_id("the list id", &id)?;
    let listing = Listing::from_query(&QueryParams::parse(query.as_deref()))?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    list_of(account, id)?;
    listing.respond(&account.recipients_with_status(id, status))
}

/// A personal data value in a request: `{"Id": 1, "Value": "Ann"}` (`Description` ignored).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FieldBody {
    id: u32,
    #[serde(default)]
    value: Option<String>,
}

/// A recipient in a request body, MailUp's shape; unknown keys are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RecipientBody {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    mobile_number: Option<String>,
    #[serde(default)]
    mobile_prefix: Option<String>,
    #[serde(default)]
    fields: Option<Vec<FieldBody>>,
    #[serde(default, rename = "idRecipient")]
    id_recipient: Option<u64>,
}

impl RecipientBody {
    /// The input to store, after checking the fields exist and, for a new subscription, that
    /// there is an email or a mobile number.
    fn input(
        self,
        account: &ConsoleAccount,
        needs_key: bool,
    ) -> Result<RecipientInput, MailUpError> {
        let email = self.email.map(|e| e.trim().to_owned());
        let mobile = self.mobile_number.map(|m| m.trim().to_owned());
        if let Some(email) = email.as_deref().filter(|e| !e.is_empty()) {
            if !plausible_email(email) {
                return Err(MailUpError::bad_request(format!(
                    "{email:?} is not a valid email address"
                )));
            }
        }
        let has_key = email.as_deref().is_some_and(|e| !e.is_empty())
            || mobile.as_deref().is_some_and(|m| !m.is_empty());
        if needs_key && !has_key {
            return Err(MailUpError::bad_request(
                "Email or MobileNumber is required",
            ));
        }
        let mut fields = Vec::new();
        for field in self.fields.unwrap_or_default() {
            if !account.fields.iter().any(|f| f.id == field.id) {
                return Err(MailUpError::bad_request(format!(
                    "personal data field {} does not exist",
                    field.id
                )));
            }
            fields.push((field.id, field.value.unwrap_or_default()));
        }
        Ok(RecipientInput {
            email: email.filter(|e| !e.is_empty()),
            name: self.name,
            mobile_number: mobile.filter(|m| !m.is_empty()),
            mobile_prefix: self.mobile_prefix,
            fields,
        })
    }
}

/// Just enough to refuse obvious garbage: one `@` with text on both sides and no spaces.
fn plausible_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !email.chars().any(char::is_whitespace)
        }
        None => false,
    }
}

/// Where a subscription goes: a list, or a group (and so its list).
#[derive(Debug, Clone, Copy)]
enum Target {
    List(u64),
    Group(u64),
}

impl Target {
    /// The target's list id, checking that the list or group exists.
    fn list_id(self, account: &ConsoleAccount) -> Result<u64, MailUpError> {
        match self {
            Target::List(id) => list_of(account, id).map(|l| l.id_list),
            Target::Group(id) => account
                .group(id)
                .map(|g| g.id_list)
                .ok_or_else(|| MailUpError::not_found(format!("Group {id} does not exist"))),
        }
    }

    /// Subscribes (or marks pending) and, for a group, adds to it.
    fn subscribe(self, account: &mut ConsoleAccount, id_list: u64, recipient: u64, confirm: bool) {
        account.subscribe(id_list, recipient, confirm);
        if let Target::Group(group) = self {
            account.memberships.insert((group, recipient));
        }
    }
}

fn subscribe_one(
    shared: &AppState,
    caller: &ApiCaller,
    target: Target,
    query: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let confirm = QueryParams::parse(query).flag("ConfirmEmail");
    let recipient: RecipientBody = parse_body("recipient", body)?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    let id_list = target.list_id(account)?;
    let input = recipient.input(account, true)?;
    let id = account.upsert_recipient(&input);
    target.subscribe(account, id_list, id, confirm);
    Ok(ok_json(&id))
}

fn import(
    shared: &AppState,
    caller: &ApiCaller,
    target: Target,
    query: Option<&str>,
    body: &[u8],
) -> ApiResult {
    let confirm = QueryParams::parse(query).flag("ConfirmEmail");
    let recipients: Vec<RecipientBody> = parse_body("array of recipients", body)?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    let id_list = target.list_id(account)?;
    // Checked first, so a bad entry changes nothing.
    let inputs = recipients
        .into_iter()
        .map(|r| r.input(account, true))
        .collect::<Result<Vec<_>, _>>()?;
    for input in &inputs {
        let id = account.upsert_recipient(input);
        target.subscribe(account, id_list, id, confirm);
    }
    let import_id = account.next_import_id();
    Ok(ok_json(&import_id))
}

/// `POST /Console/List/{id}/Recipient[?ConfirmEmail=true]`: subscribes one recipient (pending
/// with `ConfirmEmail=true`), creating or updating it by email / mobile number; returns its id.
pub(crate) async fn list_subscribe_one(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> ApiResult {
    let target = Target::List(parse_id("the list id", &id)?);
    subscribe_one(&shared, &caller, target, query.as_deref(), &body)
}

/// `POST /Console/Group/{id}/Recipient`: as the list route, and adds the recipient to the group.
pub(crate) async fn group_subscribe_one(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> ApiResult {
    let target = Target::Group(parse_id("the group id", &id)?);
    subscribe_one(&shared, &caller, target, query.as_deref(), &body)
}

/// `POST /Console/List/{id}/Recipients`: imports an array of recipients (synchronously here;
/// MailUp imports in the background) and returns the import id.
pub(crate) async fn list_import(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> ApiResult {
    let target = Target::List(parse_id("the list id", &id)?);
    import(&shared, &caller, target, query.as_deref(), &body)
}

/// `POST /Console/Group/{id}/Recipients`: as the list import, into the group too.
pub(crate) async fn group_import(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> ApiResult {
    let target = Target::Group(parse_id("the group id", &id)?);
    import(&shared, &caller, target, query.as_deref(), &body)
}

/// `GET /Console/Group/{id}/Recipients`: the group's members, whatever their status.
pub(crate) async fn group_recipients(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let id = parse_id("the group id", &id)?;
    let listing = Listing::from_query(&QueryParams::parse(query.as_deref()))?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    Target::Group(id).list_id(account)?;
    listing.respond(&account.group_members(id))
}

fn known_recipient(account: &ConsoleAccount, id: u64) -> Result<(), MailUpError> {
    account
        .recipient(id)
        .map(|_| ())
        .ok_or_else(|| MailUpError::not_found(format!("Recipient {id} does not exist")))
}

/// `POST /Console/List/{id}/Subscribe/{idRecipient}`: subscribes an existing recipient.
pub(crate) async fn list_subscribe_existing(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path((id, recipient)): Path<(String, String)>,
) -> ApiResult {
    let target = Target::List(parse_id("the list id", &id)?);
    membership(&shared, &caller, target, &recipient, true)
}

/// `POST /Console/Group/{id}/Subscribe/{idRecipient}`: adds an existing recipient to a group
/// (subscribing it to the group's list, as MailUp does by default).
pub(crate) async fn group_add_existing(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path((id, recipient)): Path<(String, String)>,
) -> ApiResult {
    let target = Target::Group(parse_id("the group id", &id)?);
    membership(&shared, &caller, target, &recipient, true)
}

/// `DELETE /Console/List/{id}/Unsubscribe/{idRecipient}`: unsubscribes the recipient from the
/// list (it stays in the account and in its groups).
pub(crate) async fn list_unsubscribe(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path((id, recipient)): Path<(String, String)>,
) -> ApiResult {
    let target = Target::List(parse_id("the list id", &id)?);
    membership(&shared, &caller, target, &recipient, false)
}

/// `DELETE /Console/Group/{id}/Unsubscribe/{idRecipient}`: removes the recipient from the
/// group (its subscription to the list is unchanged).
pub(crate) async fn group_remove(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path((id, recipient)): Path<(String, String)>,
) -> ApiResult {
    let target = Target::Group(parse_id("the group id", &id)?);
    membership(&shared, &caller, target, &recipient, false)
}

fn membership(
    shared: &AppState,
    caller: &ApiCaller,
    target: Target,
    recipient: &str,
    join: bool,
) -> ApiResult {
    let recipient = parse_id("the recipient id", recipient)?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    let id_list = target.list_id(account)?;
    known_recipient(account, recipient)?;
    match (target, join) {
        (_, true) => target.subscribe(account, id_list, recipient, false),
        (Target::List(_), false) => {
            if !account.unsubscribe(id_list, recipient) {
                return Err(MailUpError::not_found(format!(
                    "Recipient {recipient} is not on list {id_list}"
                )));
            }
        }
        (Target::Group(group), false) => {
            if !account.memberships.remove(&(group, recipient)) {
                return Err(MailUpError::not_found(format!(
                    "Recipient {recipient} is not in group {group}"
                )));
            }
        }
    }
    Ok(ok_empty())
}

/// `PUT /Console/Recipient/Detail`: updates an existing recipient's name, keys and personal
/// data fields (the body's `idRecipient` says which); returns the recipient.
pub(crate) async fn update_detail(
    State(shared): State<AppState>,
    caller: ApiCaller,
    body: Bytes,
) -> ApiResult {
    let body: RecipientBody = parse_body("recipient", &body)?;
    let id = body
        .id_recipient
        .ok_or_else(|| MailUpError::bad_request("idRecipient is required"))?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    known_recipient(account, id)?;
    let input = body.input(account, false)?;
    if let Some(email) = &input.email {
        if account
            .recipient_by_email(email)
            .is_some_and(|other| other.id != id)
        {
            return Err(MailUpError::bad_request(format!(
                "another recipient already has the email address {email:?}"
            )));
        }
    }
    account.update_recipient(id, &input);
    let recipient = account
        .recipient(id)
        .ok_or_else(|| MailUpError::not_found(format!("Recipient {id} does not exist")))?;
    Ok(ok_json(&account.view(recipient)))
}
