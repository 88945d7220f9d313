//! MailUp's collection answers: query parameters (any casing), paging (`pageNumber`,
//! `pageSize`), the common `filterby` expressions and `orderby`, and the paginated envelope
//! `{"IsPaginated","Items","PageNumber","PageSize","Skipped","TotalElementsCount"}`.
//!
//! Filters are evaluated on each item's JSON, so property names are the ones the answer shows
//! (matched without regard to case, as MailUp's LINQ mapping does); string comparisons and
//! `Contains` are case-sensitive, as MailUp documents for `Contains`.

use std::cmp::Ordering;

use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use super::filter::{compare, parse_filter, parse_order, Expr, Path};
use super::MailUpError;

/// MailUp's default page size.
pub(crate) const DEFAULT_PAGE_SIZE: u64 = 20;
/// The largest page the emulator serves.
pub(crate) const MAX_PAGE_SIZE: u64 = 1000;

/// The query string, looked up without regard to the parameters' case.
#[derive(Debug, Default)]
pub(crate) struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    pub(crate) fn parse(raw: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name` (any casing); an empty value counts as absent, as MailUp
    /// ignores `tags=` and the like.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Whether `name` is `true` (any casing).
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// MailUp's paginated envelope.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Page {
    is_paginated: bool,
    items: Vec<Value>,
    page_number: u64,
    page_size: u64,
    skipped: u64,
    total_elements_count: u64,
}

/// How a collection was asked for: page, filter, order.
#[derive(Debug)]
pub(crate) struct Listing {
    page_number: u64,
    page_size: u64,
    filter: Option<Expr>,
    order: Vec<(Path, bool)>,
}

fn number(params: &QueryParams, name: &str, default: u64) -> Result<u64, MailUpError> {
    match params.get(name) {
        None => Ok(default),
        Some(value) => value.parse().map_err(|_| {
            MailUpError::bad_request(format!("{name} must be a non-negative integer"))
        }),
    }
}

/// Strips one pair of surrounding double quotes: MailUp's samples write
/// `filterby="Name.Contains('x')"`.
fn unquote(text: &str) -> &str {
    let text = text.trim();
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text)
        .trim()
}

impl Listing {
    pub(crate) fn from_query(params: &QueryParams) -> Result<Self, MailUpError> {
        let page_number = number(params, "pageNumber", 0)?;
        let page_size = number(params, "pageSize", DEFAULT_PAGE_SIZE)?;
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(MailUpError::bad_request(format!(
                "pageSize must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        let filter = match params.get("filterby").map(unquote) {
            None | Some("") => None,
            Some(text) => Some(parse_filter(text).map_err(|reason| {
                MailUpError::bad_request(format!(
                    "Invalid filterby expression {text:?}: {reason}. {FILTER_HELP}"
                ))
            })?),
        };
        let order = match params.get("orderby").map(unquote) {
            None | Some("") => Vec::new(),
            Some(text) => parse_order(text).map_err(|reason| {
                MailUpError::bad_request(format!("Invalid orderby expression {text:?}: {reason}"))
            })?,
        };
        Ok(Self {
            page_number,
            page_size,
            filter,
            order,
        })
    }

    /// Filters, sorts and pages `items`, as MailUp's envelope.
    pub(crate) fn respond<T: Serialize>(&self, items: &[T]) -> Result<Response, MailUpError> {
        let mut values: Vec<Value> = items
            .iter()
            .map(|item| serde_json::to_value(item).unwrap_or(Value::Null))
            .collect();
        if let Some(filter) = &self.filter {
            let mut kept = Vec::with_capacity(values.len());
            for value in values {
                if filter.eval(&value).map_err(filter_error)? {
                    kept.push(value);
                }
            }
            values = kept;
        }
        if !self.order.is_empty() {
            for (path, _) in &self.order {
                if let Some(first) = values.first() {
                    path.lookup(first).map_err(|reason| {
                        MailUpError::bad_request(format!("Invalid orderby expression: {reason}"))
                    })?;
                }
            }
            values.sort_by(|a, b| {
                for (path, descending) in &self.order {
                    let ordering = compare(
                        path.lookup(a).unwrap_or(&Value::Null),
                        path.lookup(b).unwrap_or(&Value::Null),
                    );
                    let ordering = if *descending {
                        ordering.reverse()
                    } else {
                        ordering
                    };
                    if ordering != Ordering::Equal {
                        return ordering;
                    }
                }
                Ordering::Equal
            });
        }
        let total = values.len() as u64;
        let skipped = self.page_number.saturating_mul(self.page_size);
        let start = usize::try_from(skipped)
            .unwrap_or(usize::MAX)
            .min(values.len());
        let end = start
            .saturating_add(usize::try_from(self.page_size).unwrap_or(usize::MAX))
            .min(values.len());
        Ok(Json(Page {
            is_paginated: true,
            items: values.drain(start..end).collect(),
            page_number: self.page_number,
            page_size: self.page_size,
            skipped,
            total_elements_count: total,
        })
        .into_response())
    }
}

const FILTER_HELP: &str = "The emulator understands Property=='text', Property!='text', \
Property==1 (also <, <=, >, >=), Property.Contains('text'), Property.StartsWith('text'), \
Property.EndsWith('text'), Fields['Description']=='text', joined with && and || and grouped \
with parentheses";

fn filter_error(reason: String) -> MailUpError {
    MailUpError::bad_request(format!(
        "Invalid filterby expression: {reason}. {FILTER_HELP}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surrounding_double_quotes_are_stripped() {
        assert_eq!(unquote("\"idList desc\""), "idList desc");
        assert_eq!(unquote("idList desc"), "idList desc");
    }
}
