//! A realistic integration through the facade against the emulator's stateful Console API:
//! subscribe a recipient, put it in a group, list the group, unsubscribe it, read the
//! unsubscribed list. Real HTTP over 127.0.0.1, an in-memory token store.

use mailup_auth_emulator::Emulator;
use mailup_auth_tests::{client_builder, password_login};
use serde_json::{json, Value};

fn emails(page: &Value) -> Vec<String> {
    page["Items"]
        .as_array()
        .expect("a MailUp page has Items")
        .iter()
        .map(|r| r["Email"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_group_list_unsubscribe_through_the_facade() {
    let emulator = Emulator::builder().start().await.expect("emulator starts");
    let client = client_builder(&emulator)
        .memory_store()
        .build()
        .await
        .expect("client builds");
    password_login(&client).await;

    // The first calls find the demo data: a list, its groups, the personal data fields.
    let lists: Value = client
        .get("Console/User/Lists?pageNumber=0&pageSize=20")
        .await
        .unwrap();
    let id_list = lists["Items"][0]["idList"].as_u64().expect("idList");
    let groups: Value = client
        .get(&format!("Console/List/{id_list}/Groups"))
        .await
        .unwrap();
    assert!(groups["TotalElementsCount"].as_u64().unwrap() > 0);
    let fields: Value = client.get("Console/Recipient/DynamicFields").await.unwrap();
    let first_name = fields["Items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["Description"] == "FirstName")
        .map(|f| f["Id"].clone())
        .expect("the standard FirstName field");

    // A group of our own for the integration.
    let group: Value = client
        .post(
            &format!("Console/List/{id_list}/Group"),
            &json!({"Name": "Integration test", "Notes": "created by the e2e test", "Deletable": true}),
        )
        .await
        .unwrap();
    let id_group = group["idGroup"].as_u64().expect("idGroup");

    // Subscribe one recipient; the answer is its id.
    let id_recipient: u64 = client
        .post(
            &format!("Console/List/{id_list}/Recipient"),
            &json!({
                "Name": "Ada Lovelace",
                "Email": "ada@example.com",
                "MobileNumber": "",
                "MobilePrefix": "",
                "Fields": [{"Description": "FirstName", "Id": first_name, "Value": "Ada"}]
            }),
        )
        .await
        .unwrap();
    let subscribed: Value = client
        .get(&format!(
            "Console/List/{id_list}/Recipients/Subscribed?filterby=\"Email=='ada@example.com'\""
        ))
        .await
        .unwrap();
    assert_eq!(subscribed["TotalElementsCount"], 1);
    assert_eq!(subscribed["Items"][0]["idRecipient"], id_recipient);

    // Put it in the group (MailUp finds the recipient by email: same id) and list the group.
    let same: u64 = client
        .post(
            &format!("Console/Group/{id_group}/Recipient"),
            &json!({"Name": "Ada Lovelace", "Email": "ada@example.com"}),
        )
        .await
        .unwrap();
    assert_eq!(same, id_recipient);
    let members: Value = client
        .get(&format!("Console/Group/{id_group}/Recipients"))
        .await
        .unwrap();
    assert_eq!(emails(&members), ["ada@example.com"]);

    // Unsubscribe it from the list, then read the unsubscribed recipients.
    let nothing: Value = client
        .delete(&format!(
            "Console/List/{id_list}/Unsubscribe/{id_recipient}"
        ))
        .await
        .unwrap();
    assert!(nothing.is_null(), "MailUp answers an empty body: {nothing}");
    let unsubscribed: Value = client
        .get(&format!(
            "Console/List/{id_list}/Recipients/Unsubscribed?pageNumber=0&pageSize=50"
        ))
        .await
        .unwrap();
    assert!(emails(&unsubscribed).contains(&"ada@example.com".to_owned()));
    let subscribed: Value = client
        .get(&format!("Console/List/{id_list}/Recipients/Subscribed"))
        .await
        .unwrap();
    assert!(!emails(&subscribed).contains(&"ada@example.com".to_owned()));
    assert_eq!(emulator.counters().api_unauthorized, 0);
}
