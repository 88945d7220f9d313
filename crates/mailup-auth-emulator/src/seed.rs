//! What a user's console account starts with: lists (with their groups, recipients and
//! messages) and the personal data fields. Plain data, read from the configuration file or built
//! in code; [`crate::console`] turns it into live state.

use serde::{Deserialize, Serialize};

/// A recipient's subscription status on one list, as MailUp names the three states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecipientStatus {
    /// Receives the list's messages (`Recipients/Subscribed`).
    #[default]
    Subscribed,
    /// Opted out (`Recipients/Unsubscribed`).
    Unsubscribed,
    /// Waiting for a confirmed opt-in (`Recipients/Pending`, also `Recipients/EmailOptins`).
    Pending,
}

/// A recipient seeded into a list.
///
/// In files: `{ email = "..", name = "..", status = "pending", groups = ["VIP"],
/// fields = { FirstName = "Ann" } }`, everything but `email` optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientSeed {
    pub(crate) email: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) status: RecipientStatus,
    /// Names of groups of the same list.
    #[serde(default)]
    pub(crate) groups: Vec<String>,
    /// Personal data, keyed by the field's `Description` (see `dynamic_fields`).
    #[serde(default)]
    pub(crate) fields: std::collections::BTreeMap<String, String>,
}

impl RecipientSeed {
    /// A subscribed recipient with this email address and no name.
    pub fn new(email: impl Into<String>) -> Self {
        Self {
            email: email.into(),
            name: String::new(),
            status: RecipientStatus::Subscribed,
            groups: Vec::new(),
            fields: Default::default(),
        }
    }

    /// `Name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The status on the list (default subscribed).
    pub fn status(mut self, status: RecipientStatus) -> Self {
        self.status = status;
        self
    }

    /// Puts the recipient in a group of the list (by name; the group must be seeded too).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }

    /// Sets a personal data field, by its `Description` (e.g. `"FirstName"`).
    pub fn field(mut self, description: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.insert(description.into(), value.into());
        self
    }
}

/// A list as seeded: in files either a bare name (`"Newsletter"`) or a table
/// `{ name, description, groups, recipients, messages }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ListSeedRepr", into = "ListSeedRepr")]
pub struct ListSeed {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) groups: Vec<String>,
    pub(crate) recipients: Vec<RecipientSeed>,
    /// Subjects of the list's email messages.
    pub(crate) messages: Vec<String>,
}

impl ListSeed {
    /// An empty list with this name.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            groups: Vec::new(),
            recipients: Vec::new(),
            messages: Vec::new(),
        }
    }

    /// `Description`.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Adds a group.
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.groups.push(name.into());
        self
    }

    /// Adds a recipient.
    pub fn recipient(mut self, recipient: RecipientSeed) -> Self {
        self.recipients.push(recipient);
        self
    }

    /// Adds an email message with this subject.
    pub fn message(mut self, subject: impl Into<String>) -> Self {
        self.messages.push(subject.into());
        self
    }

    /// The list's name.
    pub fn list_name(&self) -> &str {
        &self.name
    }
}

impl From<String> for ListSeed {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

impl From<&str> for ListSeed {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

/// The file forms of a [`ListSeed`]: a name, or a table.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ListSeedRepr {
    Name(String),
    Table(ListSeedTable),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListSeedTable {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    recipients: Vec<RecipientSeed>,
    #[serde(default)]
    messages: Vec<String>,
}

impl From<ListSeedRepr> for ListSeed {
    fn from(repr: ListSeedRepr) -> Self {
        match repr {
            ListSeedRepr::Name(name) => Self::new(name),
            ListSeedRepr::Table(t) => Self {
                name: t.name,
                description: t.description,
                groups: t.groups,
                recipients: t.recipients,
                messages: t.messages,
            },
        }
    }
}

impl From<ListSeed> for ListSeedRepr {
    fn from(seed: ListSeed) -> Self {
        if seed.description.is_empty()
            && seed.groups.is_empty()
            && seed.recipients.is_empty()
            && seed.messages.is_empty()
        {
            return Self::Name(seed.name);
        }
        Self::Table(ListSeedTable {
            name: seed.name,
            description: seed.description,
            groups: seed.groups,
            recipients: seed.recipients,
            messages: seed.messages,
        })
    }
}

/// MailUp's first personal data fields, as a new console account has them (`Id` 1..=11).
pub(crate) const STANDARD_FIELDS: [&str; 11] = [
    "FirstName",
    "LastName",
    "Company",
    "City",
    "Province",
    "ZIP",
    "State",
    "Region",
    "Address",
    "Gender",
    "Phone",
];

/// The demo seed of a user without `lists`: list "Newsletter" with groups and recipients in
/// every state and two messages, then two empty lists.
pub(crate) fn demo_lists() -> Vec<ListSeed> {
    vec![
        ListSeed::new("Newsletter")
            .description("Monthly news (emulator demo data)")
            .group("Customers")
            .group("Prospects")
            .group("VIP")
            .recipient(
                RecipientSeed::new("ann.lee@example.com")
                    .name("Ann Lee")
                    .group("Customers")
                    .group("VIP")
                    .field("FirstName", "Ann")
                    .field("LastName", "Lee"),
            )
            .recipient(
                RecipientSeed::new("bob.rossi@example.com")
                    .name("Bob Rossi")
                    .group("Customers")
                    .field("FirstName", "Bob")
                    .field("LastName", "Rossi")
                    .field("City", "Cremona"),
            )
            .recipient(
                RecipientSeed::new("carla.bianchi@example.com")
                    .name("Carla Bianchi")
                    .group("Prospects"),
            )
            .recipient(
                RecipientSeed::new("dan.old@example.com")
                    .name("Dan Old")
                    .status(RecipientStatus::Unsubscribed),
            )
            .recipient(
                RecipientSeed::new("eve.new@example.com")
                    .name("Eve New")
                    .status(RecipientStatus::Pending)
                    .group("Prospects"),
            )
            .message("Welcome to our newsletter")
            .message("Monthly news"),
        ListSeed::new("Customers"),
        ListSeed::new("Test list"),
    ]
}
