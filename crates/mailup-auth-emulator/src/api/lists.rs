//! Lists and groups: `User/Lists`, `List/{id}`, `POST List`, `List/{id}/Groups`, and creating,
//! renaming and deleting a group.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde::Deserialize;

use super::paging::{Listing, QueryParams};
use super::{ok_empty, ok_json, parse_body, parse_id, ApiCaller, MailUpError};
use crate::console::{ConsoleAccount, MailingList};
use crate::state::AppState;

/// MailUp truncates group names to 50 characters.
const GROUP_NAME_MAX: usize = 50;

type ApiResult = Result<Response, MailUpError>;

/// The list `id` of the caller's account, or MailUp's 404.
pub(crate) fn list_of(account: &ConsoleAccount, id: u64) -> Result<&MailingList, MailUpError> {
    account
        .list(id)
        .ok_or_else(|| MailUpError::not_found(format!("List {id} does not exist")))
}

/// `GET /Console/User/Lists`
pub(crate) async fn user_lists(
    State(shared): State<AppState>,
    caller: ApiCaller,
    RawQuery(query): RawQuery,
) -> ApiResult {
    let listing = Listing::from_query(&QueryParams::parse(query.as_deref()))?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    let lists: Vec<_> = account.lists.iter().map(MailingList::summary).collect();
    listing.respond(&lists)
}

/// `GET /Console/List/{id}`: the list's detail (MailUp's `IdList` / `ListGuid` spelling).
pub(crate) async fn list_detail(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id("the list id", &id)?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    Ok(ok_json(list_of(account, id)?))
}

/// The body of `POST /Console/List`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NewList {
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    business: Option<bool>,
    #[serde(default)]
    customer: Option<bool>,
}

/// `POST /Console/List` with a JSON body `{"Name": "...", "Description": "...", ...}`:
/// creates a list for the caller and returns its detail.
pub(crate) async fn create_list(
    State(shared): State<AppState>,
    caller: ApiCaller,
    body: Bytes,
) -> ApiResult {
    let new: NewList = parse_body("list", &body)?;
    let name = new
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| MailUpError::bad_request("Name is required"))?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    let mut list = account.create_list(name, new.description.unwrap_or_default());
    list.business = new.business.unwrap_or(false);
    list.customer = new.customer.unwrap_or(true);
    if let Some(stored) = account.lists.iter_mut().find(|l| l.id_list == list.id_list) {
        *stored = list.clone();
    }
    Ok(ok_json(&list))
}

/// `GET /Console/List/{id}/Groups`
pub(crate) async fn list_groups(
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
    let groups: Vec<_> = account.groups.iter().filter(|g| g.id_list == id).collect();
    listing.respond(&groups)
}

/// The body of `POST` / `PUT .../Group`: `{"Name","Notes","Deletable"}` (MailUp's samples
/// also send `idList` / `idGroup`, which the path decides).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GroupBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    notes: Option<String>,
    #[serde(default)]
    deletable: Option<bool>,
}

fn group_name(name: Option<String>) -> Result<Option<String>, MailUpError> {
    match name.map(|n| n.trim().to_owned()) {
        None => Ok(None),
        Some(n) if n.is_empty() => Err(MailUpError::bad_request("Name must not be empty")),
        Some(n) => Ok(Some(n.chars().take(GROUP_NAME_MAX).collect())),
    }
}

/// `POST /Console/List/{id}/Group`: creates a group and returns it. A group with the same name
/// in the list is returned instead of a second one, as MailUp documents for its group creation.
pub(crate) async fn create_group(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let id = parse_id("the list id", &id)?;
    let new: GroupBody = parse_body("group", &body)?;
    let name = group_name(new.name)?.ok_or_else(|| MailUpError::bad_request("Name is required"))?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    list_of(account, id)?;
    if let Some(existing) = account
        .groups
        .iter()
        .find(|g| g.id_list == id && g.name == name)
    {
        return Ok(ok_json(existing));
    }
    let group = account.create_group(
        id,
        name,
        new.notes.unwrap_or_default(),
        new.deletable.unwrap_or(true),
    );
    Ok(ok_json(&group))
}

fn group_in_list(account: &ConsoleAccount, id_list: u64, id_group: u64) -> Result<(), MailUpError> {
    list_of(account, id_list)?;
    match account.group(id_group) {
        Some(group) if group.id_list == id_list => Ok(()),
        _ => Err(MailUpError::not_found(format!(
            "Group {id_group} does not exist in list {id_list}"
        ))),
    }
}

/// `PUT /Console/List/{id}/Group/{idGroup}`: changes what the body gives, returns the group.
pub(crate) async fn update_group(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path((id, id_group)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let id = parse_id("the list id", &id)?;
    let id_group = parse_id("the group id", &id_group)?;
    let update: GroupBody = parse_body("group", &body)?;
    let name = group_name(update.name)?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    group_in_list(account, id, id_group)?;
    let group = account
        .group_mut(id_group)
        .ok_or_else(|| MailUpError::not_found(format!("Group {id_group} does not exist")))?;
    if let Some(name) = name {
        group.name = name;
    }
    if let Some(notes) = update.notes {
        group.notes = notes;
    }
    if let Some(deletable) = update.deletable {
        group.deletable = deletable;
    }
    Ok(ok_json(group))
}

/// `DELETE /Console/List/{id}/Group/{idGroup}`: removes the group (its recipients stay on the
/// list); a group marked not deletable is a 400.
pub(crate) async fn delete_group(
    State(shared): State<AppState>,
    caller: ApiCaller,
    Path((id, id_group)): Path<(String, String)>,
) -> ApiResult {
    let id = parse_id("the list id", &id)?;
    let id_group = parse_id("the group id", &id_group)?;
    let mut state = shared.lock();
    let account = caller.account(&mut state)?;
    group_in_list(account, id, id_group)?;
    if account.group(id_group).is_some_and(|g| !g.deletable) {
        return Err(MailUpError::bad_request(format!(
            "Group {id_group} is not deletable"
        )));
    }
    account.delete_group(id_group);
    Ok(ok_empty())
}
