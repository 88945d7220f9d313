#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
// Public types stay open to new variants and fields unless one is exhaustive on purpose (each
// such item says why at its `allow`).
#![warn(clippy::exhaustive_enums, clippy::exhaustive_structs)]
#![forbid(unsafe_code)]

mod admin;
mod api;
#[cfg(feature = "browser")]
mod browser;
mod clock;
mod config;
mod console;
mod controls;
mod faults;
mod html;
mod listener;
mod logon;
mod seed;
mod server;
mod state;
mod token;

#[cfg(feature = "browser")]
pub use browser::{BrowserError, Consent, FollowedRedirect, ScriptedBrowser, Step};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{ConfigError, EmulatorConfig, RateLimit, RegisteredClient, User};
pub use console::SentEmail;
pub use seed::{ListSeed, RecipientSeed, RecipientStatus};
pub use server::{Emulator, EmulatorBuilder, StartError};
pub use state::{Counters, Fault};

/// The `client_id` of the demo client that [`Emulator::builder`] registers.
pub const DEFAULT_CLIENT_ID: &str = "mailup-demo-client";
/// The `client_secret` of the demo client.
pub const DEFAULT_CLIENT_SECRET: &str = "mailup-demo-secret";
/// The username of the demo user.
pub const DEFAULT_USERNAME: &str = "m1234";
/// The password of the demo user.
pub const DEFAULT_PASSWORD: &str = "demo-password";

/// Path of the LogOn (authorization) page, as on `services.mailup.com`.
pub const LOGON_PATH: &str = "/Authorization/OAuth/LogOn";
/// Path of the emulator's consent page (MailUp's own is internal to its LogOn flow).
pub const CONSENT_PATH: &str = "/Authorization/OAuth/Consent";
/// Path of the token endpoint, as on `services.mailup.com`.
pub const TOKEN_PATH: &str = "/Authorization/OAuth/Token";
/// Path of the Console API base, as on `services.mailup.com`.
pub const CONSOLE_API_PATH: &str = "/API/v1.1/Rest/ConsoleService.svc";
/// Path of the MailStatistics API base, as on `services.mailup.com`.
pub const STATISTICS_API_PATH: &str = "/API/v1.1/Rest/MailStatisticsService.svc";
/// Path prefix of the admin API (served only when enabled).
pub const ADMIN_PATH: &str = "/_emulator";
