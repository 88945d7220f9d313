//! The commands over every profile of a token store: `profiles`, `use`, `status --all` and
//! `logout --all`.
//!
//! `profiles` reads the stored records only (no client is built, nothing is refreshed, no
//! network), so it answers at once for any number of profiles; `status --all` builds each
//! profile's client as `status` does and shows the same fields.

use mailup_auth::{ProfileRecord, UnixTime};
use serde_json::{json, Value};

use crate::cli::{
    Command, GlobalOptions, JsonArgs, LogoutArgs, StatusArgs, UseArgs, DEFAULT_PROFILE,
};
use crate::commands::{
    is_authorized, now, print_data, print_json, session_status, status_json, status_text,
};
use crate::default_profile::{self, ProfileSource};
use crate::failure::{shell_word, Failure, EXIT_REAUTHORIZE};
use crate::output::{inform, one_line};
use crate::profile::Context;
use crate::timefmt;

/// What a stored record says about a profile, without building its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProfileState {
    /// It can produce an access token without the user: a fresh one, or a refresh token.
    Authorized {
        /// When the current access token expires.
        expires_at: UnixTime,
        /// Whether a refresh token is held (without one, the login ends at `expires_at`).
        refreshable: bool,
    },
    /// A login is needed: `reason` says why.
    NeedsLogin {
        /// Why, in words (a refused refresh, logged out, an expired token with nothing to
        /// refresh it).
        reason: String,
    },
    /// The record cannot be read; `logout` or `login` replaces it.
    Unreadable,
}

impl ProfileState {
    /// Reads the state off a stored record at `now`.
    pub(crate) fn of(record: &ProfileRecord, now: UnixTime) -> Self {
        if let Some(reason) = &record.reauthorization_required {
            return Self::NeedsLogin {
                reason: format!("the refresh was refused: {reason}"),
            };
        }
        match &record.tokens {
            None if record.client.is_none() => Self::NeedsLogin {
                reason: "never logged in".into(),
            },
            None => Self::NeedsLogin {
                reason: "logged out".into(),
            },
            Some(tokens) if tokens.expires_at <= now && tokens.refresh_token.is_none() => {
                Self::NeedsLogin {
                    reason: "the access token expired and there is no refresh token".into(),
                }
            }
            Some(tokens) => Self::Authorized {
                expires_at: tokens.expires_at,
                refreshable: tokens.refresh_token.is_some(),
            },
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Authorized { .. } => "authorized",
            Self::NeedsLogin { .. } => "needs_login",
            Self::Unreadable => "unreadable",
        }
    }
}

/// One profile of the store, as `profiles` lists it.
#[derive(Debug)]
struct ProfileEntry {
    name: String,
    client_id: Option<String>,
    state: ProfileState,
}

async fn entries(context: &Context, now: UnixTime) -> Result<Vec<ProfileEntry>, Failure> {
    let mut entries = Vec::new();
    for name in context.profile_names().await? {
        let profile = context.with_profile(&name).await?;
        let (client_id, state) = match &profile.record {
            Some(record) => (
                record.client.as_ref().map(|c| c.client_id.clone()),
                ProfileState::of(record, now),
            ),
            None if profile.corrupt.is_some() => (None, ProfileState::Unreadable),
            // Deleted between the listing and the load.
            None => continue,
        };
        entries.push(ProfileEntry {
            name,
            client_id,
            state,
        });
    }
    Ok(entries)
}

fn entry_json(entry: &ProfileEntry, in_effect: &str, now: UnixTime) -> Value {
    let (expires_at, expires_at_unix, expires_in, refreshable) = match &entry.state {
        ProfileState::Authorized {
            expires_at,
            refreshable,
        } => (
            json!(timefmt::rfc3339(*expires_at)),
            json!(expires_at.as_secs()),
            json!(seconds_until(*expires_at, now)),
            json!(refreshable),
        ),
        _ => (Value::Null, Value::Null, Value::Null, json!(false)),
    };
    let reason = match &entry.state {
        ProfileState::NeedsLogin { reason } => json!(reason),
        ProfileState::Unreadable => json!("the stored record cannot be read"),
        ProfileState::Authorized { .. } => Value::Null,
    };
    json!({
        "profile": entry.name,
        "in_effect": entry.name == in_effect,
        "client_id": entry.client_id,
        "state": entry.state.name(),
        "authorized": matches!(entry.state, ProfileState::Authorized { .. }),
        "expires_at": expires_at,
        "expires_at_unix": expires_at_unix,
        "expires_in_seconds": expires_in,
        "has_refresh_token": refreshable,
        "reason": reason,
    })
}

fn seconds_until(at: UnixTime, now: UnixTime) -> i64 {
    if at >= now {
        at.duration_since(now).as_secs() as i64
    } else {
        -(now.duration_since(at).as_secs() as i64)
    }
}

fn entries_text(entries: &[ProfileEntry], in_effect: &str, now: UnixTime) -> String {
    let width = entries
        .iter()
        .map(|e| one_line(&e.name).chars().count())
        .max()
        .unwrap_or(0)
        .max("PROFILE".len());
    let mut lines = vec![format!("  {:<width$}  STATE", "PROFILE")];
    for entry in entries {
        let marker = if entry.name == in_effect { '*' } else { ' ' };
        let state = match &entry.state {
            ProfileState::Authorized {
                expires_at,
                refreshable,
            } => {
                let expiry = if *expires_at > now {
                    format!(
                        "access token expires {}",
                        timefmt::relative(*expires_at, now)
                    )
                } else {
                    "access token expired, refreshed on next use".to_owned()
                };
                let until = if *refreshable {
                    ""
                } else {
                    "; no refresh token: log in again after that"
                };
                format!("authorized ({expiry}{until})")
            }
            ProfileState::NeedsLogin { reason } => {
                format!(
                    "needs login ({}: run `mailup-auth login`)",
                    one_line(reason)
                )
            }
            ProfileState::Unreadable => {
                "unreadable record (`mailup-auth logout` removes it, `login` replaces it)".into()
            }
        };
        lines.push(format!(
            "{marker} {:<width$}  {state}",
            one_line(&entry.name)
        ));
    }
    lines.join("\n")
}

/// `profiles`: every profile of the store with its state; exit 0 (an empty store is no error).
pub(crate) async fn profiles(global: GlobalOptions, args: &JsonArgs) -> Result<(), Failure> {
    let context = Context::open(global).await?;
    let now = now();
    let entries = entries(&context, now).await?;
    let in_effect = context.global.profile.as_str();
    if args.json {
        let list: Vec<Value> = entries
            .iter()
            .map(|entry| entry_json(entry, in_effect, now))
            .collect();
        return print_json(&Value::Array(list));
    }
    if entries.is_empty() {
        inform!(
            stdout,
            "No profiles in the token store at {} (log in with `mailup-auth login`).",
            context.store_location
        );
        return Ok(());
    }
    print_data(&entries_text(&entries, in_effect, now))
}

/// `use [PROFILE]`: records the default profile, or shows the one in effect.
pub(crate) async fn use_profile(
    global: GlobalOptions,
    source: ProfileSource,
    args: &UseArgs,
) -> Result<(), Failure> {
    let Some(profile) = &args.profile else {
        let why = match &source {
            ProfileSource::Option => "from --profile / MAILUP_PROFILE".to_owned(),
            ProfileSource::Chosen(file) => {
                format!("chosen with `mailup-auth use`, kept in {}", file.display())
            }
            ProfileSource::Builtin => "nothing chosen: the built-in default".to_owned(),
        };
        return print_data(&format!("{} ({why})", one_line(&global.profile)));
    };
    mailup_auth::core::validate_profile_name(profile).map_err(|e| Failure::usage(e.to_string()))?;
    if profile != DEFAULT_PROFILE {
        let context = Context::open(global).await?;
        if !context
            .profile_names()
            .await?
            .iter()
            .any(|name| name == profile)
        {
            return Err(Failure::usage(format!(
                "profile `{}` is not in the token store at {}; log in to it first \
                 (`mailup-auth --profile {} login`), or see `mailup-auth profiles`",
                one_line(profile),
                context.store_location,
                shell_word(profile)
            )));
        }
    }
    let file = default_profile::write_chosen(profile)?;
    inform!(
        stdout,
        "Using profile `{}` by default (kept in {}); --profile and MAILUP_PROFILE still win.",
        one_line(profile),
        file.display()
    );
    Ok(())
}

/// `status --all`: every profile's status, as `status` shows one; exit 3 when any profile is
/// not authorized, or when there is none.
pub(crate) async fn status_all(global: GlobalOptions, args: &StatusArgs) -> Result<(), Failure> {
    let context = Context::open(global).await?;
    let now = now();
    let names = context.profile_names().await?;
    let mut unauthorized = Vec::new();
    let mut values = Vec::new();
    let mut texts = Vec::new();
    for name in &names {
        let profile = context.with_profile(name).await?;
        if let Some(corrupt) = &profile.corrupt {
            unauthorized.push(name.clone());
            let message = crate::profile::store_failure(corrupt.clone())
                .message()
                .to_owned();
            values.push(
                json!({"profile": name, "state": "unreadable", "authorized": false,
                "error": message}),
            );
            texts.push(format!(
                "profile:        {}\nauthorized:     no (unreadable record: {})",
                one_line(name),
                one_line(&message)
            ));
            continue;
        }
        profile.check_pinned_endpoints()?;
        let status = session_status(&profile).await?;
        if !status.as_ref().is_some_and(is_authorized) {
            unauthorized.push(name.clone());
        }
        if args.json {
            values.push(status_json(&profile, status.as_ref(), now));
        } else {
            texts.push(status_text(&profile, status.as_ref(), now));
        }
    }
    if args.json {
        print_json(&Value::Array(values))?;
    } else if texts.is_empty() {
        inform!(
            stdout,
            "No profiles in the token store at {}.",
            context.store_location
        );
    } else {
        print_data(&texts.join("\n\n"))?;
    }
    if names.is_empty() {
        return Err(Failure::new(
            EXIT_REAUTHORIZE,
            "no profiles in the token store (run `mailup-auth login`)",
        ));
    }
    if unauthorized.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = unauthorized.iter().map(|n| one_line(n)).collect();
    Err(Failure::new(
        EXIT_REAUTHORIZE,
        format!(
            "not authorized: {} (run `mailup-auth --profile NAME login`)",
            list.join(", ")
        ),
    ))
}

/// `logout --all`: `logout` (with its --forget-client) on every profile of the store.
pub(crate) async fn logout_all(global: GlobalOptions, args: LogoutArgs) -> Result<(), Failure> {
    let context = Context::open(global).await?;
    let names = context.profile_names().await?;
    if names.is_empty() {
        inform!(
            stdout,
            "No profiles in the token store at {}: nothing to log out of.",
            context.store_location
        );
        return Ok(());
    }
    for name in &names {
        let profile = context.with_profile(name).await?;
        let one = LogoutArgs {
            forget_client: args.forget_client,
            all: false,
        };
        crate::commands::run(&profile, Command::Logout(one)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailup_auth::{AccessToken, RefreshToken, StoredClient, TokenSet};

    fn tokens(expires_at: u64, refresh: bool) -> TokenSet {
        TokenSet {
            access_token: AccessToken::new("access"),
            refresh_token: refresh.then(|| RefreshToken::new("refresh")),
            expires_at: UnixTime::from_secs(expires_at),
            obtained_at: UnixTime::from_secs(0),
            token_type: None,
            scope: None,
        }
    }

    fn client() -> Option<StoredClient> {
        Some(StoredClient {
            client_id: "id".into(),
            ..StoredClient::default()
        })
    }

    #[test]
    fn the_state_is_read_off_the_record() {
        let now = UnixTime::from_secs(1_000);
        let authorized = |record: &ProfileRecord| ProfileState::of(record, now);
        let mut record = ProfileRecord::with_tokens(tokens(2_000, true));
        record.client = client();
        assert_eq!(
            authorized(&record),
            ProfileState::Authorized {
                expires_at: UnixTime::from_secs(2_000),
                refreshable: true
            }
        );
        // Expired but refreshable: still authorized (the next use refreshes).
        record.tokens = Some(tokens(500, true));
        assert!(matches!(
            authorized(&record),
            ProfileState::Authorized { .. }
        ));
        // Expired with nothing to refresh it, refused, logged out, never logged in.
        record.tokens = Some(tokens(500, false));
        assert!(matches!(
            authorized(&record),
            ProfileState::NeedsLogin { .. }
        ));
        record.tokens = Some(tokens(2_000, true));
        record.reauthorization_required = Some("invalid_grant".into());
        assert!(matches!(
            authorized(&record),
            ProfileState::NeedsLogin { reason } if reason.contains("invalid_grant")
        ));
        let logged_out = ProfileRecord {
            client: client(),
            ..ProfileRecord::default()
        };
        assert_eq!(
            authorized(&logged_out),
            ProfileState::NeedsLogin {
                reason: "logged out".into()
            }
        );
        assert_eq!(
            authorized(&ProfileRecord::default()),
            ProfileState::NeedsLogin {
                reason: "never logged in".into()
            }
        );
    }

    #[test]
    fn the_listing_marks_the_profile_in_effect_and_cleans_names() {
        let now = UnixTime::from_secs(1_000);
        let entries = [
            ProfileEntry {
                name: "default".into(),
                client_id: Some("id".into()),
                state: ProfileState::Authorized {
                    expires_at: UnixTime::from_secs(4_600),
                    refreshable: true,
                },
            },
            ProfileEntry {
                name: "evil\u{1b}[2J".into(),
                client_id: None,
                state: ProfileState::NeedsLogin {
                    reason: "logged out".into(),
                },
            },
        ];
        let text = entries_text(&entries, "default", now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("* default"), "{text}");
        assert!(
            lines[1].contains("authorized (access token expires in 1h"),
            "{text}"
        );
        assert!(lines[2].starts_with("  evil"), "{text}");
        assert!(lines[2].contains("needs login (logged out"), "{text}");
        assert!(!text.contains('\u{1b}'));
        let json = entry_json(&entries[0], "default", now);
        assert_eq!(json["state"], "authorized");
        assert_eq!(json["in_effect"], true);
        assert_eq!(json["expires_in_seconds"], 3_600);
    }
}
