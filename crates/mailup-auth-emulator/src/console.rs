//! One emulated console account's data: lists, groups, recipients with a status per list, group
//! memberships, personal data fields, messages and what was "sent". Ids are per account, as in
//! MailUp (every console has its own list 1). The API handlers in [`crate::api`] read and change
//! it under the state lock; the JSON shapes are MailUp's.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::User;
use crate::seed::{ListSeed, RecipientSeed, RecipientStatus};
use crate::state::fill_random;

/// A list as `GET /Console/List/{id}` and `POST /Console/List` show it (MailUp's list detail
/// uses `IdList` / `ListGuid` in PascalCase).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MailingList {
    pub(crate) business: bool,
    pub(crate) company: String,
    pub(crate) creation_date: String,
    pub(crate) customer: bool,
    pub(crate) description: String,
    pub(crate) id_list: u64,
    pub(crate) list_guid: String,
    pub(crate) name: String,
    pub(crate) owner: String,
}

/// A list as `GET /Console/User/Lists` shows it: MailUp's summary spells `idList` and
/// `listGuid` in camel case.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ListSummary {
    #[serde(rename = "Business")]
    business: bool,
    #[serde(rename = "Company")]
    company: String,
    #[serde(rename = "CreationDate")]
    creation_date: String,
    #[serde(rename = "Customer")]
    customer: bool,
    #[serde(rename = "Description")]
    description: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Owner")]
    owner: String,
    #[serde(rename = "idList")]
    id_list: u64,
    #[serde(rename = "listGuid")]
    list_guid: String,
}

impl MailingList {
    pub(crate) fn summary(&self) -> ListSummary {
        ListSummary {
            business: self.business,
            company: self.company.clone(),
            creation_date: self.creation_date.clone(),
            customer: self.customer,
            description: self.description.clone(),
            name: self.name.clone(),
            owner: self.owner.clone(),
            id_list: self.id_list,
            list_guid: self.list_guid.clone(),
        }
    }
}

/// A group, `{"Deletable":true,"Name":"..","Notes":"..","idGroup":3,"idList":1}`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Group {
    #[serde(rename = "Deletable")]
    pub(crate) deletable: bool,
    #[serde(rename = "Name")]
    pub(crate) name: String,
    #[serde(rename = "Notes")]
    pub(crate) notes: String,
    #[serde(rename = "idGroup")]
    pub(crate) id_group: u64,
    #[serde(rename = "idList")]
    pub(crate) id_list: u64,
}

/// A personal data field definition, `{"Description":"FirstName","Id":1}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct DynamicField {
    pub(crate) description: String,
    pub(crate) id: u32,
}

/// One personal data value of a recipient, `{"Description":"FirstName","Id":1,"Value":"Ann"}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct FieldValue {
    pub(crate) description: String,
    pub(crate) id: u32,
    pub(crate) value: String,
}

/// A recipient of the account (email and mobile number are its keys across lists).
#[derive(Debug, Clone)]
pub(crate) struct Recipient {
    pub(crate) id: u64,
    pub(crate) email: String,
    pub(crate) name: String,
    pub(crate) mobile_number: String,
    pub(crate) mobile_prefix: String,
    /// Field id to value; ids without a value read as "".
    pub(crate) fields: BTreeMap<u32, String>,
}

/// A recipient on the wire: `{"Email":..,"Fields":[..],"MobileNumber":..,"MobilePrefix":..,
/// "Name":..,"idRecipient":..}`, every field of the account listed (empty ones as "").
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecipientView {
    #[serde(rename = "Email")]
    email: String,
    #[serde(rename = "Fields")]
    fields: Vec<FieldValue>,
    #[serde(rename = "MobileNumber")]
    mobile_number: String,
    #[serde(rename = "MobilePrefix")]
    mobile_prefix: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "idRecipient")]
    id_recipient: u64,
}

/// An email message of a list, `{"Subject":..,"idList":..,"idMessage":..}` as `List/{id}/Emails`
/// shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EmailMessage {
    #[serde(rename = "Subject")]
    pub(crate) subject: String,
    #[serde(rename = "idList")]
    pub(crate) id_list: u64,
    #[serde(rename = "idMessage")]
    pub(crate) id_message: u64,
}

/// A message "sent" through `POST /Console/Email/Send`, for tests to assert on. Read it with
/// [`Emulator::sent_emails`](crate::Emulator::sent_emails) or `GET /_emulator/sent-emails`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct SentEmail {
    /// The account (MailUp username) that sent it.
    pub username: String,
    /// The id of the send, as returned in the answer's `Id`.
    pub send_id: u64,
    /// `idMessage`.
    pub message_id: u64,
    /// The message's list.
    pub list_id: u64,
    /// The message's subject.
    pub subject: String,
    /// The recipient's address, as stored.
    pub email: String,
    /// The recipient's id.
    pub recipient_id: u64,
}

/// A recipient's fields and keys as a request body gives them (absent = unchanged).
#[derive(Debug, Clone, Default)]
pub(crate) struct RecipientInput {
    pub(crate) email: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) mobile_number: Option<String>,
    pub(crate) mobile_prefix: Option<String>,
    pub(crate) fields: Vec<(u32, String)>,
}

/// One account's console data.
#[derive(Debug, Default)]
pub(crate) struct ConsoleAccount {
    username: String,
    company: String,
    next_list_id: u64,
    next_group_id: u64,
    next_recipient_id: u64,
    next_message_id: u64,
    next_send_id: u64,
    next_import_id: u64,
    pub(crate) lists: Vec<MailingList>,
    pub(crate) groups: Vec<Group>,
    pub(crate) recipients: Vec<Recipient>,
    /// (list id, recipient id) → status on that list.
    pub(crate) subscriptions: BTreeMap<(u64, u64), RecipientStatus>,
    /// (group id, recipient id).
    pub(crate) memberships: BTreeSet<(u64, u64)>,
    pub(crate) fields: Vec<DynamicField>,
    pub(crate) messages: Vec<EmailMessage>,
    pub(crate) sent: Vec<SentEmail>,
}

/// A random GUID-shaped string, as MailUp's `listGuid`.
fn random_guid() -> String {
    let mut b = [0u8; 16];
    fill_random(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn next(counter: &mut u64) -> u64 {
    *counter += 1;
    *counter
}

impl ConsoleAccount {
    /// The account of `user`, seeded from its configuration (validated beforehand).
    pub(crate) fn seeded(user: &User) -> Self {
        let mut account = Self {
            username: user.username().to_owned(),
            company: user.account().company,
            ..Self::default()
        };
        account.fields = user
            .field_descriptions()
            .into_iter()
            .zip(1u32..)
            .map(|(description, id)| DynamicField { description, id })
            .collect();
        for seed in user.list_seeds() {
            account.seed_list(&seed);
        }
        account
    }

    fn seed_list(&mut self, seed: &ListSeed) {
        let list = self.create_list(seed.name.clone(), seed.description.clone());
        let id_list = list.id_list;
        for name in &seed.groups {
            self.create_group(id_list, name.clone(), String::new(), true);
        }
        for recipient in &seed.recipients {
            self.seed_recipient(id_list, recipient);
        }
        for subject in &seed.messages {
            let id_message = next(&mut self.next_message_id);
            self.messages.push(EmailMessage {
                subject: subject.clone(),
                id_list,
                id_message,
            });
        }
    }

    fn seed_recipient(&mut self, id_list: u64, seed: &RecipientSeed) {
        let fields = seed
            .fields
            .iter()
            .filter_map(|(description, value)| {
                let field = self.fields.iter().find(|f| &f.description == description)?;
                Some((field.id, value.clone()))
            })
            .collect();
        let input = RecipientInput {
            email: Some(seed.email.clone()),
            name: Some(seed.name.clone()),
            fields,
            ..RecipientInput::default()
        };
        let id = self.upsert_recipient(&input);
        self.subscriptions.insert((id_list, id), seed.status);
        for name in &seed.groups {
            if let Some(group) = self
                .groups
                .iter()
                .find(|g| g.id_list == id_list && &g.name == name)
            {
                self.memberships.insert((group.id_group, id));
            }
        }
    }

    // ----- lists and groups -----

    /// Creates a list and returns it.
    pub(crate) fn create_list(&mut self, name: String, description: String) -> MailingList {
        let list = MailingList {
            business: false,
            company: self.company.clone(),
            creation_date: "2024-01-01 00:00:00Z".to_owned(),
            customer: true,
            description,
            id_list: next(&mut self.next_list_id),
            list_guid: random_guid(),
            name,
            owner: self.username.clone(),
        };
        self.lists.push(list.clone());
        list
    }

    pub(crate) fn list(&self, id_list: u64) -> Option<&MailingList> {
        self.lists.iter().find(|l| l.id_list == id_list)
    }

    /// Creates a group in a list that exists.
    pub(crate) fn create_group(
        &mut self,
        id_list: u64,
        name: String,
        notes: String,
        deletable: bool,
    ) -> Group {
        let group = Group {
            deletable,
            name,
            notes,
            id_group: next(&mut self.next_group_id),
            id_list,
        };
        self.groups.push(group.clone());
        group
    }

    pub(crate) fn group(&self, id_group: u64) -> Option<&Group> {
        self.groups.iter().find(|g| g.id_group == id_group)
    }

    pub(crate) fn group_mut(&mut self, id_group: u64) -> Option<&mut Group> {
        self.groups.iter_mut().find(|g| g.id_group == id_group)
    }

    /// Removes a group and its memberships (the recipients stay).
    pub(crate) fn delete_group(&mut self, id_group: u64) {
        self.groups.retain(|g| g.id_group != id_group);
        self.memberships.retain(|(g, _)| *g != id_group);
    }

    // ----- recipients -----

    pub(crate) fn recipient(&self, id: u64) -> Option<&Recipient> {
        self.recipients.iter().find(|r| r.id == id)
    }

    pub(crate) fn view(&self, recipient: &Recipient) -> RecipientView {
        RecipientView {
            email: recipient.email.clone(),
            fields: self
                .fields
                .iter()
                .map(|f| FieldValue {
                    description: f.description.clone(),
                    id: f.id,
                    value: recipient.fields.get(&f.id).cloned().unwrap_or_default(),
                })
                .collect(),
            mobile_number: recipient.mobile_number.clone(),
            mobile_prefix: recipient.mobile_prefix.clone(),
            name: recipient.name.clone(),
            id_recipient: recipient.id,
        }
    }

    /// Finds the recipient by email (case-insensitive) or mobile number, updates what the input
    /// gives, or creates it; returns its id. The caller has checked that there is a key.
    pub(crate) fn upsert_recipient(&mut self, input: &RecipientInput) -> u64 {
        let email = input.email.as_deref().map(str::trim).unwrap_or_default();
        let mobile = input
            .mobile_number
            .as_deref()
            .map(str::trim)
            .unwrap_or_default();
        // The email is the key when there is one (a mobile number that belongs to another
        // recipient must not merge two recipients); a mobile number only without an email.
        let existing = if email.is_empty() {
            self.recipients
                .iter()
                .position(|r| !mobile.is_empty() && r.mobile_number == mobile)
        } else {
            self.recipients
                .iter()
                .position(|r| same_email(&r.email, email))
        };
        let index = match existing {
            // The stored address keeps its spelling; the key matched without regard to case.
            Some(index) if !email.is_empty() => {
                let recipient = &mut self.recipients[index];
                apply(
                    recipient,
                    &RecipientInput {
                        email: None,
                        ..input.clone()
                    },
                );
                return recipient.id;
            }
            Some(index) => index,
            None => {
                let id = next(&mut self.next_recipient_id);
                self.recipients.push(Recipient {
                    id,
                    email: String::new(),
                    name: String::new(),
                    mobile_number: String::new(),
                    mobile_prefix: String::new(),
                    fields: BTreeMap::new(),
                });
                self.recipients.len() - 1
            }
        };
        let recipient = &mut self.recipients[index];
        apply(recipient, input);
        recipient.id
    }

    /// Updates an existing recipient; `false` if there is none with that id.
    pub(crate) fn update_recipient(&mut self, id: u64, input: &RecipientInput) -> bool {
        match self.recipients.iter_mut().find(|r| r.id == id) {
            Some(recipient) => {
                apply(recipient, input);
                true
            }
            None => false,
        }
    }

    /// The recipients with `status` on a list, in id order.
    pub(crate) fn recipients_with_status(
        &self,
        id_list: u64,
        status: RecipientStatus,
    ) -> Vec<RecipientView> {
        self.subscriptions
            .range((id_list, 0)..=(id_list, u64::MAX))
            .filter(|(_, s)| **s == status)
            .filter_map(|((_, id), _)| self.recipient(*id))
            .map(|r| self.view(r))
            .collect()
    }

    /// The members of a group, in id order.
    pub(crate) fn group_members(&self, id_group: u64) -> Vec<RecipientView> {
        self.memberships
            .range((id_group, 0)..=(id_group, u64::MAX))
            .filter_map(|(_, id)| self.recipient(*id))
            .map(|r| self.view(r))
            .collect()
    }

    /// Subscribes (or marks pending, for a confirmed opt-in) a recipient on a list. A pending
    /// request never downgrades a subscribed recipient.
    pub(crate) fn subscribe(&mut self, id_list: u64, id: u64, confirm: bool) {
        let status = self
            .subscriptions
            .entry((id_list, id))
            .or_insert(RecipientStatus::Pending);
        if !(confirm && *status == RecipientStatus::Subscribed) {
            *status = if confirm {
                RecipientStatus::Pending
            } else {
                RecipientStatus::Subscribed
            };
        }
    }

    /// Unsubscribes a recipient from a list; `false` if it was never on it.
    pub(crate) fn unsubscribe(&mut self, id_list: u64, id: u64) -> bool {
        match self.subscriptions.get_mut(&(id_list, id)) {
            Some(status) => {
                *status = RecipientStatus::Unsubscribed;
                true
            }
            None => false,
        }
    }

    pub(crate) fn next_import_id(&mut self) -> u64 {
        next(&mut self.next_import_id)
    }

    // ----- messages -----

    pub(crate) fn message(&self, id_message: u64) -> Option<&EmailMessage> {
        self.messages.iter().find(|m| m.id_message == id_message)
    }

    /// Records a send of a message to a recipient subscribed on the message's list; returns
    /// the send id.
    pub(crate) fn record_send(&mut self, message: &EmailMessage, recipient_id: u64) -> u64 {
        let send_id = next(&mut self.next_send_id);
        let email = self
            .recipient(recipient_id)
            .map(|r| r.email.clone())
            .unwrap_or_default();
        self.sent.push(SentEmail {
            username: self.username.clone(),
            send_id,
            message_id: message.id_message,
            list_id: message.id_list,
            subject: message.subject.clone(),
            email,
            recipient_id,
        });
        send_id
    }

    /// The recipient with this email address (case-insensitive).
    pub(crate) fn recipient_by_email(&self, email: &str) -> Option<&Recipient> {
        let email = email.trim();
        self.recipients.iter().find(|r| same_email(&r.email, email))
    }
}

/// Email addresses compare without regard to case, in any script.
fn same_email(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

fn apply(recipient: &mut Recipient, input: &RecipientInput) {
    if let Some(email) = &input.email {
        recipient.email = email.trim().to_owned();
    }
    if let Some(name) = &input.name {
        recipient.name = name.clone();
    }
    if let Some(number) = &input.mobile_number {
        recipient.mobile_number = number.trim().to_owned();
    }
    if let Some(prefix) = &input.mobile_prefix {
        recipient.mobile_prefix = prefix.trim().to_owned();
    }
    for (id, value) in &input.fields {
        recipient.fields.insert(*id, value.clone());
    }
}
