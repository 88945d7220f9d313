//! The test controls shared by the library API and the admin HTTP API.

use crate::config::RateLimit;
use crate::console::SentEmail;
use crate::state::{AppState, Fault};

/// Makes every access token issued so far expired (not unknown): the API answers
/// "Access token is expired" for them.
pub(crate) fn expire_all_access_tokens(shared: &AppState) {
    let now = shared.now();
    let mut state = shared.lock();
    for grant in state.access_tokens.values_mut() {
        if grant.expires_at > now {
            grant.expires_at = now;
        }
    }
}

pub(crate) fn fail_next_token_requests(shared: &AppState, count: u32, fault: Fault) {
    if count > 0 {
        shared.lock().faults.push_back((fault, count));
    }
}

pub(crate) fn fail_next_api_requests(shared: &AppState, count: u32, fault: Fault) {
    if count > 0 {
        shared.lock().api_faults.push_back((fault, count));
    }
}

pub(crate) fn set_rate_limit(shared: &AppState, limit: Option<RateLimit>) {
    let mut state = shared.lock();
    state.rate_limit = limit;
    state.rate_windows.clear();
}

/// Every recorded send of every account, oldest first (by account, then by send id).
pub(crate) fn sent_emails(shared: &AppState) -> Vec<SentEmail> {
    let state = shared.lock();
    let mut accounts: Vec<_> = state.accounts.iter().collect();
    accounts.sort_by(|a, b| a.0.cmp(b.0));
    accounts
        .into_iter()
        .flat_map(|(_, account)| account.sent.iter().cloned())
        .collect()
}
