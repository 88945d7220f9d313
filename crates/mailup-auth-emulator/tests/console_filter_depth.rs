//! Hostile review 2: a `filterby` nested deeply in parentheses must be refused (or evaluated)
//! without overflowing the stack. In its own test binary: a stack overflow aborts the process.

mod common;

use common::*;
use mailup_auth_emulator::Emulator;

#[tokio::test]
async fn deeply_nested_filter_parentheses_do_not_overflow_the_stack() {
    let emu = Emulator::builder().start().await.unwrap();
    let (token, _) = password_tokens(&emu).await;
    // A 4 KB query string: any HTTP server accepts it.
    let depth = 2_000;
    let filter = format!("{}Name==1{}", "(".repeat(depth), ")".repeat(depth));
    let url = format!(
        "{}/Console/User/Lists?filterby={filter}",
        emu.console_api_base()
    );
    let response = match http().get(url).bearer_auth(&token).send().await {
        Ok(response) => response,
        Err(error) => panic!("no answer: {}", error.without_url()),
    };
    let status = response.status().as_u16();
    assert!(status == 200 || status == 400, "{status}");
    // The emulator still answers.
    let (status, _) = api_get(&emu, "/Console/User/Lists", Some(&token)).await;
    assert_eq!(status, 200);
}
