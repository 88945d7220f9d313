//! # mailup-auth-core
//!
//! A sans-IO state machine for MailUp's OAuth 2.0 authorization code flow.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod http;
pub mod ports;
pub mod secret;
pub mod time;
pub mod token;
