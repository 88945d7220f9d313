//! # mailup-auth-core
//!
//! A sans-IO state machine for MailUp's OAuth 2.0 authorization code flow.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod authorize;
pub mod config;
pub mod http;
pub mod ports;
pub mod requests;
pub mod secret;
pub mod session;
pub mod time;
pub mod token;
