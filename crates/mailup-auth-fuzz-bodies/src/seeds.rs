//! The seeds the committed corpus (`fuzz/corpus/<target>/`) was written from: one per
//! interesting shape of input. `write_corpus` in the stable test writes them out again.

use crate::input::Writer;

/// A response for [`read_response`](crate::targets::read_response): status, headers, body.
fn response(status: u16, headers: &[(u8, &[u8])], body: &[u8]) -> Writer {
    // `read_response` maps the u16 to 100 + v % 900.
    let mut writer = Writer::new().u16(status - 100).byte(headers.len() as u8);
    for (name, value) in headers {
        writer = writer.byte(*name).short_bytes(value);
    }
    writer.rest(body)
}

fn token(status: u16, headers: &[(u8, &[u8])], body: &[u8]) -> Vec<u8> {
    let head = Writer::new().byte(0).finish();
    [head, response(status, headers, body).finish()].concat()
}

/// A Redis record for [`redis_record`](crate::targets::redis_record): how the stored version
/// is chosen, the explicit one, the envelope.
fn redis(mode: u8, explicit: u16, envelope: &[u8]) -> Vec<u8> {
    Writer::new()
        .byte(mode)
        .u16(explicit)
        .rest(envelope)
        .finish()
}

/// The seeds of `target`, named.
pub fn seeds(target: &str) -> Vec<(&'static str, Vec<u8>)> {
    match target {
        "token_answer" => vec![
            ("mailup_success", token(200, &[(1, b"application/json")], br#"{"access_token":"a1","refresh_token":"r1","expires_in":3600}"#)),
            ("no_refresh", token(200, &[], br#"{"access_token":"a1","expires_in":"3600","token_type":"bearer"}"#)),
            ("expires_float", token(200, &[], br#"{"access_token":"a1","refresh_token":"r1","expires_in":3599.5}"#)),
            ("expires_negative", token(200, &[], br#"{"access_token":"a1","refresh_token":"r1","expires_in":-1}"#)),
            ("invalid_grant", token(400, &[], br#"{"error":"invalid_grant","error_description":"expired"}"#)),
            ("invalid_client_401", token(401, &[(3, b"Basic realm=\"MailUp\"")], br#"{"error":"invalid_client"}"#)),
            ("error_with_200", token(200, &[], br#"{"error":"invalid_grant"}"#)),
            ("server_error", token(500, &[], br#"{"error":"server_error"}"#)),
            ("html_502", token(502, &[(1, b"text/html")], b"<!DOCTYPE html><html><body>Bad Gateway</body></html>")),
            ("redirect", token(302, &[(2, b"http://127.0.0.1:9/x")], b"")),
            ("crlf_token", token(200, &[], b"{\"access_token\":\"a\\r\\nX: y\",\"refresh_token\":\"r\"}")),
            ("non_utf8", token(200, &[], b"{\"access_token\":\"\xff\xfe\"}")),
            ("truncated", token(200, &[], br#"{"access_token":"abc","expires_in":36"#)),
            ("transport_error", Writer::new().byte(15).byte(4).finish()),
        ],
        "api_answer" => vec![
            ("ok_then_ok", [Writer::new().u16(0).finish(), response(200, &[], br#"{"UID":"388"}"#).short_bytes(b"").finish()].concat()),
            ("expired_then_ok", [Writer::new().u16(1).finish(), response(401, &[], br#"{"ErrorCode":"401","ErrorDescription":"Authorization error: Access token is expired","ErrorName":"Unauthorized","ErrorStack":null}"#).finish()].concat()),
            ("rate_limited_seconds", [Writer::new().u16(2).finish(), response(429, &[(0, b"7")], br#"{"ErrorCode":"429"}"#).finish()].concat()),
            ("rate_limited_date", [Writer::new().u16(3).finish(), response(429, &[(0, b"Wed, 21 Oct 2015 07:28:30 GMT")], b"").finish()].concat()),
            ("rate_limited_garbage", [Writer::new().u16(4).finish(), response(429, &[(0, b"soon-ish")], b"").finish()].concat()),
            ("html_403", [Writer::new().u16(5).finish(), response(403, &[(1, b"text/html")], b"<html>blocked</html>").finish()].concat()),
            ("empty_500", [Writer::new().u16(6).finish(), response(500, &[], b"").finish()].concat()),
        ],
        "urls" => vec![
            ("callback_ok", Writer::new().short_bytes(b"http://127.0.0.1:8765/callback?code=abc&state=expected-state").short_bytes(b"/Console/Authentication/Info").rest(b"http://127.0.0.1:8080").finish()),
            ("callback_query", Writer::new().short_bytes(b"?state=expected-state&code=c").short_bytes(b"Console/User/Lists?pageNumber=0&pageSize=20").rest(b"https://services.mailup.com").finish()),
            ("callback_error", Writer::new().short_bytes(b"/callback?error=access_denied&state=expected-state").short_bytes(b"//evil.example/x").rest(b"https://services.mailup.com/").finish()),
            ("callback_duplicate", Writer::new().short_bytes(b"?state=expected-state&state=x&code=c").short_bytes(b"https://elsewhere.test/x").rest(b"http://[::1]:9").finish()),
            ("path_tricks", Writer::new().short_bytes(b"state=wrong&code=c").short_bytes(b"/../../..//@evil.test:80/x#frag").rest(b"http://user@127.0.0.1:1/base?q#f").finish()),
        ],
        "stored_record" => vec![
            ("clear_record", br#"{"format":1,"version":3,"record":{"tokens":{"access_token":"a1","refresh_token":"r1","expires_at":1700003600,"obtained_at":1700000000,"token_type":"bearer","scope":null},"client":{"client_id":"c","client_secret":"s","token_url":"http://127.0.0.1:9/Token"},"last_refreshed_at":1700000000,"reauthorization_required":null}}"#.to_vec()),
            ("logged_out", br#"{"format":1,"version":7,"record":{"tokens":null,"client":null,"last_refreshed_at":null,"reauthorization_required":"the refresh token was rejected"}}"#.to_vec()),
            ("tombstone", br#"{"format":1,"version":9,"deleted":true}"#.to_vec()),
            ("sealed", br#"{"format":2,"version":2,"sealed":"AAAA"}"#.to_vec()),
            ("future_format", br#"{"format":3,"version":1,"record":{}}"#.to_vec()),
        ],
        "redis_record" => vec![
            ("clear_record", redis(0, 0, br#"{"format":1,"version":3,"record":{"tokens":{"access_token":"a1","refresh_token":"r1","expires_at":1700003600,"obtained_at":1700000000,"token_type":"bearer","scope":null},"client":{"client_id":"c","client_secret":"s","token_url":"http://127.0.0.1:9/Token"},"last_refreshed_at":1700000000,"reauthorization_required":null}}"#)),
            ("stored_version_ahead", redis(1, 0, br#"{"format":1,"version":3,"record":{"tokens":null,"client":null}}"#)),
            ("stored_version_behind", redis(2, 0, br#"{"format":1,"version":3,"record":{}}"#)),
            ("explicit_version", redis(3, 7, br#"{"format":1,"version":7,"record":{"reauthorization_required":"the refresh token was rejected"}}"#)),
            ("tombstone", redis(0, 0, br#"{"format":1,"version":9,"deleted":true}"#)),
            ("tombstone_wrong_version", redis(1, 0, br#"{"format":1,"version":9,"deleted":true}"#)),
            ("sealed", redis(0, 0, br#"{"format":2,"version":2,"sealed":"AAAA"}"#)),
            ("future_format", redis(0, 0, br#"{"format":3,"version":1,"record":{}}"#)),
            ("version_zero", redis(0, 0, br#"{"format":1,"version":0,"record":{}}"#)),
            ("max_version", redis(0, 0, br#"{"format":1,"version":18446744073709551615,"record":{}}"#)),
            ("duplicate_version", redis(3, 4, br#"{"format":1,"version":4,"version":5,"record":{}}"#)),
        ],
        "session_ops" => vec![
            // login, poll, answer it well, ask for a token, time passes, refresh answered, ...
            ("login_refresh_rotate", vec![0, 3, 0, 0, 7, 6, 255, 7, 3, 0, 0, 7]),
            ("login_then_401_then_reject", vec![0, 3, 0, 0, 4, 3, 0, 3, 7, 2, 7]),
            ("logout_between", vec![1, 3, 0, 0, 5, 7, 3, 0, 0, 7, 2, 7]),
            ("transient_backoff", vec![2, 6, 200, 7, 3, 0, 2, 7, 6, 10, 7, 8, 3, 0, 5, 7]),
            ("stale_answers", vec![0, 0, 3, 1, 0, 3, 0, 0, 2, 4, 3, 0, 0, 7]),
        ],
        _ => Vec::new(),
    }
}
