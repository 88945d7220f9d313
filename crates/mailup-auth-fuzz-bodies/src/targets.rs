//! The fuzz targets: each takes any bytes, drives one parser of untrusted input (or the session
//! that consumes it) and asserts the invariants that must hold for every input. A failed
//! assertion or a panic is a finding.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use mailup_auth_core::StoreError;
use mailup_auth_core::{api_url, classify_api_response_at, retry_after_at, ApiCall, ApiStep};
use mailup_auth_core::{
    is_header_safe_token, parse_token_response, AccessToken, CsrfState, Endpoints, HttpResponse,
    Password, PendingAuthorization, RequestId, Session, TokenAccess, TokenError, TransportError,
    TransportErrorKind, UnixTime, Url,
};
use mailup_auth_store_redis::internal as redis_fuzzing;
use mailup_auth_store_sled::internal::envelope;

use crate::input::Reader;

// The core's test fixtures (`config`, `token_set`), shared with its test harness rather than
// copied: a plain source file over the core's public API, so the core needs no test-support
// feature or public module for it.
#[path = "../../mailup-auth-core/tests/harness/fixtures.rs"]
mod fixtures;
use fixtures::{config, token_set};

/// The header names a fuzzed response can carry (the ones the parsers read, and a few more).
pub const HEADER_NAMES: [&str; 6] = [
    "retry-after",
    "content-type",
    "location",
    "www-authenticate",
    "content-length",
    "x-anything",
];

/// Reads an HTTP response: a status (100 to 999), up to three headers, then the body.
pub fn read_response(r: &mut Reader<'_>) -> HttpResponse {
    let status = StatusCode::from_u16(100 + r.u16() % 900).expect("100..=999 is a valid status");
    let headers = r.byte() % 4;
    let mut pending = Vec::new();
    for _ in 0..headers {
        let name = HEADER_NAMES[usize::from(r.byte()) % HEADER_NAMES.len()];
        let value = r.short_bytes();
        pending.push((name, value));
    }
    let mut response = HttpResponse::new(status, r.rest().to_vec());
    for (name, value) in pending {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            response = response.with_header(HeaderName::from_static(name), value);
        }
    }
    response
}

fn transport_error(selector: u8) -> TransportError {
    let kind = match selector % 6 {
        0 => TransportErrorKind::Timeout,
        1 => TransportErrorKind::Connect,
        2 => TransportErrorKind::ConnectionClosed,
        3 => TransportErrorKind::Body,
        4 => TransportErrorKind::ResponseTooLarge,
        _ => TransportErrorKind::Other,
    };
    TransportError::new(kind, "fuzzed")
}

/// **token_answer**: a token endpoint answer (status, headers, body) or a transport failure,
/// parsed alone and fed to a session that is refreshing.
///
/// Invariants: a parsed answer has header-safe tokens and a success status; only a 4xx may be
/// a rejection; in the session, any failure that is not a rejection keeps the previous tokens,
/// a rejection asks for a new login, and an accepted answer's rotated refresh token is the one
/// kept (the old one only when the answer had none).
pub fn token_answer(data: &[u8]) {
    let mut r = Reader::new(data);
    let mode = r.byte();
    let outcome = if mode % 16 == 15 {
        Err(transport_error(r.byte()))
    } else {
        Ok(read_response(&mut r))
    };
    let parsed = outcome
        .clone()
        .map_err(TokenError::from)
        .and_then(|response| parse_token_response(&response));
    match &parsed {
        Ok(answer) => {
            let status = outcome
                .as_ref()
                .map(|o| o.status)
                .expect("parsed from a response");
            assert!(status.is_success(), "accepted a token answer with {status}");
            assert!(is_header_safe_token(answer.access_token.secret()));
            if let Some(refresh) = &answer.refresh_token {
                assert!(is_header_safe_token(refresh.secret()));
            }
        }
        Err(error) => {
            if error.is_rejection() {
                let status = outcome.as_ref().map(|o| o.status.as_u16()).unwrap_or(0);
                assert!((400..500).contains(&status), "a rejection with {status}");
                assert!(!error.is_transient());
            }
            let _ = error.to_string();
        }
    }

    let now = UnixTime::from_secs(10_000);
    let previous = token_set(
        "old-access",
        Some("old-refresh"),
        UnixTime::from_secs(5_000),
        UnixTime::from_secs(9_000),
    );
    let mut session = Session::with_tokens(config(), previous.clone());
    assert_eq!(session.access_token_or_refresh(now), TokenAccess::Pending);
    let request = session
        .poll_request()
        .expect("an expired set starts a refresh");
    session.handle_token_response(now, request.id(), outcome);
    match parsed {
        Ok(answer) => {
            let tokens = session.tokens().expect("tokens after an accepted answer");
            assert_eq!(tokens.access_token, answer.access_token);
            let expected = answer
                .refresh_token
                .clone()
                .or(previous.refresh_token.clone());
            assert_eq!(
                tokens.refresh_token, expected,
                "the rotated refresh token is kept"
            );
            assert!(session.reauthorization_reason().is_none());
        }
        Err(error) if error.is_rejection() => {
            assert!(session.reauthorization_reason().is_some());
        }
        Err(_) => {
            assert_eq!(
                session.tokens(),
                Some(&previous),
                "a failure keeps the tokens"
            );
            assert!(session.reauthorization_reason().is_none());
            assert!(!session.is_refreshing());
        }
    }
}

/// **api_answer**: two MailUp API answers to one call, with `Retry-After` read against a `now`.
///
/// Invariants: a 2xx and only a 2xx is a success; a 401 leads to one refresh-and-retry and a
/// second 401 (or anything after the retry) never retries again; `Retry-After` in seconds is
/// read exactly, and nothing in it panics.
pub fn api_answer(data: &[u8]) {
    let mut r = Reader::new(data);
    let now = UnixTime::from_secs(1_445_412_480 + u64::from(r.u16()) * 977);
    let first = read_response(&mut r);
    let second = read_response(&mut r);
    for response in [&first, &second] {
        let classified = classify_api_response_at(response, now);
        assert_eq!(classified.is_ok(), response.status.is_success());
        let wait = retry_after_at(response, now);
        let raw = response
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        if let Some(seconds) = raw.and_then(|v| v.parse::<u64>().ok()) {
            assert_eq!(wait, Some(Duration::from_secs(seconds)));
        }
        if raw.is_none() {
            assert_eq!(wait, None);
        }
    }
    let mut call = ApiCall::new();
    let step = call.handle_response_at(&first, now);
    assert_eq!(step == ApiStep::Done, first.status.is_success());
    assert_eq!(
        step == ApiStep::RefreshAndRetry,
        first.status == StatusCode::UNAUTHORIZED
    );
    if step == ApiStep::RefreshAndRetry {
        for response in [&second, &first, &second] {
            let again = call.handle_response_at(response, now);
            assert_ne!(
                again,
                ApiStep::RefreshAndRetry,
                "a second 401 never retries"
            );
        }
    }
}

/// The state the callback target's pending authorization expects.
const EXPECTED_STATE: &str = "expected-state";

fn has_expected_state(callback: &str) -> bool {
    let cleaned: String = callback
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    cleaned.split(['?', '&', '#']).any(|segment| {
        form_urlencoded_pairs(segment)
            .iter()
            .any(|(k, v)| k == "state" && v == EXPECTED_STATE)
    })
}

fn form_urlencoded_pairs(segment: &str) -> Vec<(String, String)> {
    let full = format!("http://x.test/?{segment}");
    Url::parse(&full)
        .map(|url| {
            url.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// **urls**: a callback URL or query, a path for [`api_url`], and a base for
/// [`Endpoints::from_auth_base`].
///
/// Invariants: a callback is accepted only when it carries the expected `state` and a
/// non-empty code, and never once the authorization expired; a relative API path never leaves
/// the API origin; endpoints built from a base stay on the base's origin.
pub fn urls(data: &[u8]) {
    let mut r = Reader::new(data);
    let callback = String::from_utf8_lossy(r.short_bytes()).into_owned();
    let path = String::from_utf8_lossy(r.short_bytes()).into_owned();
    let base = String::from_utf8_lossy(r.rest()).into_owned();

    let pending = PendingAuthorization::from_parts(
        CsrfState::new(EXPECTED_STATE),
        Url::parse("http://127.0.0.1:8765/callback").expect("a valid URL"),
        UnixTime::from_secs(1_000),
    );
    if let Ok(code) = pending.verify_callback(UnixTime::from_secs(500), &callback) {
        assert!(!code.secret().is_empty());
        assert!(
            has_expected_state(&callback),
            "accepted a callback without the expected state: {callback:?}"
        );
    }
    assert!(pending
        .verify_callback(UnixTime::from_secs(1_000), &callback)
        .is_err());

    for api_base in [
        "https://services.mailup.com/API/v1.1/Rest/ConsoleService.svc",
        "http://127.0.0.1:9/API/v1.1/Rest/ConsoleService.svc/",
    ] {
        let api_base = Url::parse(api_base).expect("a valid URL");
        let trimmed = path.trim();
        let absolute = trimmed.starts_with("http://") || trimmed.starts_with("https://");
        if let Ok(url) = api_url(&api_base, &path) {
            if !absolute {
                assert_eq!(
                    url.origin(),
                    api_base.origin(),
                    "the relative path {path:?} left the API origin: {url}"
                );
            }
            assert!(matches!(url.scheme(), "http" | "https"));
        }
    }

    if let Ok(endpoints) = Endpoints::from_auth_base(&base) {
        let origin = Url::parse(base.trim()).map(|u| u.origin());
        for url in [&endpoints.logon, &endpoints.token, &endpoints.api_base] {
            assert!(matches!(url.scheme(), "http" | "https"));
            if let Ok(origin) = &origin {
                assert_eq!(&url.origin(), origin, "{base:?} gave {url}");
            }
        }
    }
}

/// **stored_record**: the bytes of one profile's value in the sled store (the envelope).
///
/// Invariants: decoding never panics and reports anything unreadable as a corrupt record; a
/// record that decodes encodes back to one that decodes to the same record and version.
pub fn stored_record(data: &[u8]) {
    match envelope::decode("fuzz", data) {
        Ok(Some(versioned)) => {
            let bytes = envelope::encode(versioned.version, &versioned.value)
                .expect("a decoded record encodes");
            let again = envelope::decode("fuzz", &bytes)
                .expect("an encoded record decodes")
                .expect("and is not a tombstone");
            assert_eq!(again, versioned, "save/load round trip");
        }
        Ok(None) => {}
        Err(error) => {
            assert!(
                matches!(error, mailup_auth_core::StoreError::Corrupt { .. }),
                "{error:?}"
            );
        }
    }
}

/// **redis_record**: one profile's record in the Redis store, and the version Redis keeps
/// beside it. The first byte chooses that version: the envelope's own (0), one more (1), one
/// less (2), or the next two bytes (3); the rest is the record.
///
/// Invariants: decoding never panics and reports anything unreadable as a corrupt record; a
/// record (or tombstone) is accepted only when the envelope's own version equals the stored
/// one, and a stored version that disagrees is a corrupt record; a record that decodes encodes
/// back to one that decodes to the same record, and to a corrupt record under any other
/// stored version.
pub fn redis_record(data: &[u8]) {
    let mut r = Reader::new(data);
    let mode = r.byte();
    let explicit = r.u16();
    let bytes = r.rest();
    let envelope: Option<serde_json::Value> = serde_json::from_slice(bytes).ok();
    let own_version = envelope
        .as_ref()
        .and_then(|e| e.get("version"))
        .and_then(serde_json::Value::as_u64);
    let base = own_version.unwrap_or(1);
    let stored_version = match mode % 4 {
        0 => base,
        1 => base.wrapping_add(1),
        2 => base.wrapping_sub(1),
        _ => u64::from(explicit),
    };
    let is_corrupt = |error: &StoreError| matches!(error, StoreError::Corrupt { .. });
    let refused_under_other_versions = |bytes: &[u8]| {
        for other in [
            stored_version.wrapping_add(1),
            stored_version.wrapping_sub(1),
        ] {
            let error = redis_fuzzing::decode("fuzz", other, bytes)
                .expect_err("another stored version is refused");
            assert!(is_corrupt(&error), "{error:?}");
        }
    };
    match redis_fuzzing::decode("fuzz", stored_version, bytes) {
        Ok(decoded) => {
            refused_under_other_versions(bytes);
            // The envelope as plain JSON (when it is: fields the decoder skips may hold bytes
            // that are not UTF-8) says the same.
            if let Some(envelope) = &envelope {
                assert_eq!(
                    own_version,
                    Some(stored_version),
                    "a record is accepted only under its own version"
                );
                let deleted = envelope
                    .get("deleted")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false);
                assert_eq!(
                    decoded.is_none(),
                    deleted,
                    "only a tombstone decodes to nothing"
                );
            }
            let Some(record) = decoded else { return };
            let encoded =
                redis_fuzzing::encode(stored_version, &record).expect("a decoded record encodes");
            let again = redis_fuzzing::decode("fuzz", stored_version, &encoded)
                .expect("an encoded record decodes");
            assert_eq!(again, Some(record), "save/load round trip");
            refused_under_other_versions(&encoded);
        }
        Err(error) => assert!(is_corrupt(&error), "{error:?}"),
    }
}

/// What a fuzzed token answer says, in the session-operations target.
fn scripted_answer(kind: u8, serial: u64) -> Result<HttpResponse, TransportError> {
    let body = |s: String| s.into_bytes();
    match kind % 8 {
        0 => Ok(HttpResponse::new(
            StatusCode::OK,
            body(format!(
                r#"{{"access_token":"a{serial}","refresh_token":"r{serial}","expires_in":3600}}"#
            )),
        )),
        1 => Ok(HttpResponse::new(
            StatusCode::OK,
            body(format!(
                r#"{{"access_token":"a{serial}","expires_in":"60"}}"#
            )),
        )),
        2 => Ok(HttpResponse::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            body(r#"{"error":"server_error"}"#.into()),
        )),
        3 => Ok(HttpResponse::new(
            StatusCode::BAD_REQUEST,
            body(r#"{"error":"invalid_grant"}"#.into()),
        )),
        4 => Ok(HttpResponse::new(StatusCode::OK, body("<html>".into()))),
        5 => Err(transport_error(kind / 8)),
        6 => Ok(HttpResponse::new(
            StatusCode::BAD_REQUEST,
            body(r#"{"error":"invalid_request"}"#.into()),
        )),
        _ => Ok(HttpResponse::new(
            StatusCode::OK,
            body(format!(
                r#"{{"access_token":"a{serial}","refresh_token":"r{serial}","expires_in":-5}}"#
            )),
        )),
    }
}

/// **session_ops**: a sequence of session operations in any order: password login, browser
/// login with its callback, restoring tokens, answers (good, rotated, transient, rejected,
/// odd) to any outstanding request, 401s, logout, time passing, explicit refreshes.
///
/// Invariants: at most one refresh is in flight; an access token handed out is the current one
/// and still usable; an answer to a request that is no longer current changes nothing; an
/// accepted refresh keeps the rotated refresh token (or the old one when none came); a failure
/// that is not a rejection keeps the tokens; after a logout nothing is handed out until new
/// tokens arrive.
pub fn session_ops(data: &[u8]) {
    let mut r = Reader::new(data);
    let mut session = Session::new(config());
    let skew = session.config().refresh_skew();
    let mut now = UnixTime::from_secs(1_000_000);
    let mut serial = 0u64;
    let mut outstanding: Vec<(RequestId, bool)> = Vec::new();
    let mut live_refresh: Option<RequestId> = None;
    let mut live_grant: Option<RequestId> = None;
    let mut logged_out = false;
    let mut steps = 0;
    while !r.is_empty() && steps < 256 {
        steps += 1;
        let op = r.byte();
        match op % 10 {
            0 => {
                live_grant = Some(session.login_with_password("user", &Password::new("pw")));
            }
            1 => {
                let state = CsrfState::new(format!("state-{serial}"));
                serial += 1;
                if session
                    .begin_authorization(now, state.clone(), None)
                    .is_ok()
                {
                    let callback = format!("?code=c{serial}&state={}", state.secret());
                    if let Ok(id) = session.handle_callback(now, &callback) {
                        live_grant = Some(id);
                    }
                }
            }
            2 => {
                serial += 1;
                let restored = token_set(
                    &format!("restored-a{serial}"),
                    Some(&format!("restored-r{serial}")),
                    now,
                    UnixTime::from_secs(now.as_secs() + 3_600),
                );
                session.restore_tokens(restored);
                live_refresh = None;
                logged_out = false;
            }
            3 => {
                if outstanding.is_empty() {
                    continue;
                }
                let index = usize::from(r.byte()) % outstanding.len();
                let (id, is_refresh) = outstanding.remove(index);
                serial += 1;
                let answer = scripted_answer(r.byte(), serial);
                let parsed = answer
                    .clone()
                    .map_err(TokenError::from)
                    .and_then(|a| parse_token_response(&a));
                let before = session.tokens().cloned();
                let current_refresh = is_refresh && live_refresh == Some(id);
                let current_grant = !is_refresh && live_grant == Some(id);
                session.handle_token_response(now, id, answer);
                let after = session.tokens().cloned();
                if current_refresh {
                    live_refresh = None;
                    match &parsed {
                        Ok(answer) => {
                            let after = after.expect("tokens after a refresh");
                            assert_eq!(after.access_token, answer.access_token);
                            let old = before.and_then(|b| b.refresh_token);
                            assert_eq!(
                                after.refresh_token,
                                answer.refresh_token.clone().or(old),
                                "the rotated refresh token is kept"
                            );
                        }
                        Err(e) if e.is_rejection() => {
                            assert!(session.reauthorization_reason().is_some());
                        }
                        Err(_) => assert_eq!(before, after, "a failed refresh keeps the tokens"),
                    }
                } else if current_grant {
                    live_grant = None;
                    match &parsed {
                        Ok(answer) => {
                            let after = after.expect("tokens after a login");
                            assert_eq!(after.access_token, answer.access_token);
                            assert_eq!(after.refresh_token, answer.refresh_token);
                            // A login abandons the previous tokens' refresh.
                            live_refresh = None;
                            logged_out = false;
                        }
                        Err(_) => assert_eq!(before, after, "a failed login changes nothing"),
                    }
                } else {
                    assert_eq!(before, after, "a stale answer changes nothing");
                }
            }
            4 => {
                if let Some(tokens) = session.tokens() {
                    let token = tokens.access_token.clone();
                    session.handle_unauthorized(now, &token);
                }
            }
            5 => {
                session.logout();
                live_refresh = None;
                live_grant = None;
                logged_out = true;
            }
            6 => {
                now = now.saturating_add(Duration::from_secs(u64::from(r.byte()) * 60));
                session.handle_timeout(now);
            }
            7 => match session.access_token_or_refresh(now) {
                TokenAccess::Ready(token) => {
                    assert!(!logged_out, "a token handed out after logout");
                    let tokens = session.tokens().expect("a token comes from a set");
                    assert_eq!(tokens.access_token, token);
                    assert!(tokens.is_usable(now, skew), "an unusable token handed out");
                }
                TokenAccess::Pending
                | TokenAccess::BackingOff { .. }
                | TokenAccess::ReauthorizationRequired(_) => {}
            },
            8 => {
                let _ = session.refresh_now();
            }
            _ => session.handle_unauthorized(now, &AccessToken::new("some-old-token")),
        }
        while let Some(request) = session.poll_request() {
            let is_refresh = request.grant() == mailup_auth_core::Grant::RefreshToken;
            if is_refresh {
                assert!(
                    live_refresh.is_none(),
                    "a second refresh while one is in flight"
                );
                live_refresh = Some(request.id());
            }
            outstanding.push((request.id(), is_refresh));
        }
        while session.poll_event().is_some() {}
    }
}
