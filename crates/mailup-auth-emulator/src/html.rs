//! The HTML the emulator serves: plain pages with a little inline CSS and no external assets.
//! Every interpolated value goes through [`escape`].

use std::fmt::Write as _;

/// Escapes text for HTML element content and double-quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str =
    "body{font-family:system-ui,sans-serif;background:#f3f5f8;margin:0;color:#1d2733}\
main{max-width:26rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:8px;\
box-shadow:0 2px 10px rgba(0,0,0,.08)}h1{font-size:1.3rem;margin-top:0}\
label{display:block;margin:.8rem 0 .3rem}input[type=text],input[type=password]{width:100%;\
padding:.5rem;box-sizing:border-box;border:1px solid #b8c2cc;border-radius:4px}\
button{margin-top:1rem;padding:.5rem 1.2rem;border:0;border-radius:4px;background:#0a7cc1;\
color:#fff;font-size:1rem;cursor:pointer}button.deny{background:#8a96a3;margin-left:.5rem}\
.error{background:#fde8e8;color:#9b1c1c;padding:.6rem;border-radius:4px}\
.app{font-weight:600}footer{margin-top:1.5rem;font-size:.8rem;color:#6b7785}";

/// A whole page around `body` (already HTML).
pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style></head>\n<body><main>\n{body}\n\
<footer>MailUp authorization server emulator: for tests and demos only.</footer>\n</main></body></html>\n",
        title = escape(title),
    )
}

fn hidden(out: &mut String, name: &str, value: &str) {
    let _ = write!(
        out,
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        escape(name),
        escape(value)
    );
}

/// The login form.
pub(crate) fn login_page(
    app_name: &str,
    action: &str,
    auth_request: &str,
    csrf: &str,
    username: &str,
    error: Option<&str>,
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Log in to MailUp</h1>\n<p><span class=\"app\">{}</span> wants to access your MailUp account.</p>\n",
        escape(app_name)
    );
    if let Some(error) = error {
        let _ = writeln!(
            body,
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(error)
        );
    }
    let _ = write!(body, "<form method=\"post\" action=\"{}\">", escape(action));
    hidden(&mut body, "auth_request", auth_request);
    hidden(&mut body, "csrf_token", csrf);
    let _ = write!(
        body,
        "\n<label for=\"username\">Username</label>\
<input type=\"text\" id=\"username\" name=\"username\" value=\"{}\" autocomplete=\"username\" required>\
\n<label for=\"password\">Password</label>\
<input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" required>\
\n<button type=\"submit\">Log in</button></form>",
        escape(username)
    );
    page("MailUp - Log in", &body)
}

/// The consent form.
pub(crate) fn consent_page(
    app_name: &str,
    account_name: &str,
    username: &str,
    action: &str,
    auth_request: &str,
    csrf: &str,
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Allow access?</h1>\n<p><span class=\"app\">{}</span> asks to use the MailUp account \
<strong>{}</strong> ({}) on your behalf: read account data and lists, and create lists.</p>\n",
        escape(app_name),
        escape(account_name),
        escape(username),
    );
    let _ = write!(body, "<form method=\"post\" action=\"{}\">", escape(action));
    hidden(&mut body, "auth_request", auth_request);
    hidden(&mut body, "csrf_token", csrf);
    body.push_str(
        "\n<button type=\"submit\" name=\"decision\" value=\"allow\">Allow</button>\
<button type=\"submit\" class=\"deny\" name=\"decision\" value=\"deny\">Deny</button></form>",
    );
    page("MailUp - Allow access", &body)
}

/// An error page (served with a 4xx status, never as a redirect).
pub(crate) fn error_page(title: &str, message: &str) -> String {
    let body = format!(
        "<h1>{}</h1>\n<p class=\"error\" role=\"alert\">{}</p>",
        escape(title),
        escape(message)
    );
    page(&format!("MailUp - {title}"), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let page = login_page("<script>", "/x", "r", "c", "\"u", Some("<b>"));
        assert!(!page.contains("<script>"));
        assert!(!page.contains("<b>"));
    }
}
