//! MailUp's REST services by name ([`Service`]: Console, MailStatistics) and their paginated
//! collections: [`Page`] (MailUp's envelope) and [`Pages`] (every page in turn, bounded).

use futures_util::Stream;
use serde::Deserialize;

use super::api::decode;
use super::*;

/// A MailUp REST service. Each has its own base URL beside the others: the configured API base
/// is the Console's (`.../API/v1.1/Rest/ConsoleService.svc`), and the others are its siblings
/// (the last path segment replaced), as on `services.mailup.com` and in the emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Service {
    /// `ConsoleService.svc`: lists, groups, recipients, messages (the API base itself).
    Console,
    /// `MailStatisticsService.svc`: opens, clicks, deliveries... by message and by recipient.
    MailStatistics,
}

impl Service {
    /// The service's path segment on MailUp's servers.
    pub fn path_segment(self) -> &'static str {
        match self {
            Self::Console => "ConsoleService.svc",
            Self::MailStatistics => "MailStatisticsService.svc",
        }
    }
}

/// One page of a MailUp collection: `{"IsPaginated","Items","PageNumber","PageSize","Skipped",
/// "TotalElementsCount"}`. Fields other than `Items` may be missing (they read as 0 / false;
/// a missing `TotalElementsCount` does not end the paging early, see [`Page::is_last`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
#[non_exhaustive]
pub struct Page<T> {
    /// Whether the server paged the answer (`false`: every item is here).
    #[serde(default)]
    pub is_paginated: bool,
    /// This page's items.
    pub items: Vec<T>,
    /// The page's number, from 0.
    #[serde(default)]
    pub page_number: u64,
    /// The page size the server used.
    #[serde(default)]
    pub page_size: u64,
    /// How many items come before this page.
    #[serde(default)]
    pub skipped: u64,
    /// How many items the whole collection holds, as the server says.
    #[serde(default)]
    pub total_elements_count: u64,
}

impl<T> Page<T> {
    /// Whether no page follows this one: the server did not page, the page is empty or short
    /// of `requested_size`, or it reaches `TotalElementsCount`. A count of 0 beside items is
    /// not believed (the field was missing): the short or empty page ends the collection then,
    /// so no item is lost.
    pub fn is_last(&self, requested_size: u64) -> bool {
        let seen = self.skipped.saturating_add(self.items.len() as u64);
        !self.is_paginated
            || self.items.is_empty()
            || (self.items.len() as u64) < requested_size
            || (self.total_elements_count > 0 && seen >= self.total_elements_count)
    }
}

/// The most pages [`Pages`] fetches unless told otherwise ([`Pages::max_pages`]).
pub const DEFAULT_MAX_PAGES: u64 = 10_000;

/// Calls to one MailUp [`Service`] with a client's token: from [`MailUpClient::service`],
/// [`MailUpClient::console`] or [`MailUpClient::statistics`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceClient {
    client: MailUpClient,
    service: Service,
}

impl ServiceClient {
    /// The service.
    pub fn service(&self) -> Service {
        self.service
    }

    /// The URL of `path` (relative to the service's base, with or without a query; a full
    /// http(s) URL is used as is).
    pub fn url(&self, path: &str) -> Result<Url> {
        Ok(api_url(&self.client.service_base(self.service), path)?)
    }

    /// `GET` a path of this service and decode the JSON answer (a COUNT endpoint's bare
    /// number decodes as `u64`).
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = self.url(path)?;
        decode(&self.client.request_url(Method::GET, url, None).await?)
    }

    /// One page of a collection: `pageNumber` and `pageSize` are set on `path`'s query
    /// (replacing any given there, in any casing); other parameters (`filterby`, `orderby`)
    /// are kept.
    pub async fn page<T: DeserializeOwned>(
        &self,
        path: &str,
        page_number: u64,
        page_size: u64,
    ) -> Result<Page<T>> {
        let url = paged_url(self.url(path)?, page_number, page_size);
        decode(&self.client.request_url(Method::GET, url, None).await?)
    }

    /// Every page of a collection in turn, `page_size` items each (at least 1): see [`Pages`].
    pub fn pages<T: DeserializeOwned>(&self, path: &str, page_size: u64) -> Pages<T> {
        Pages {
            service: self.clone(),
            path: path.to_owned(),
            page_size: page_size.max(1),
            next: Some(0),
            max_pages: DEFAULT_MAX_PAGES,
            _items: std::marker::PhantomData,
        }
    }
}

/// `url` with `pageNumber` and `pageSize` set (any existing ones, in any casing, replaced).
fn paged_url(mut url: Url, page_number: u64, page_size: u64) -> Url {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case("pageNumber") && !k.eq_ignore_ascii_case("pageSize")
        })
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    url.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("pageNumber", &page_number.to_string())
        .append_pair("pageSize", &page_size.to_string());
    url
}

/// Every page of a MailUp collection, fetched one at a time as they are asked for
/// ([`next_page`](Self::next_page), [`into_stream`](Self::into_stream),
/// [`collect_items`](Self::collect_items)).
///
/// Paging stops after the last page ([`Page::is_last`]: not paginated, empty, short, or
/// reaching `TotalElementsCount`), so a collection of exactly N pages costs N requests. It is
/// bounded whatever the server says: a page that answers another `PageNumber` than asked is
/// [`ErrorKind::Pagination`], and so is a collection still going after
/// [`max_pages`](Self::max_pages) pages (a server whose `TotalElementsCount` keeps growing
/// cannot make it loop). An error ends the paging.
#[derive(Debug)]
pub struct Pages<T> {
    service: ServiceClient,
    path: String,
    page_size: u64,
    /// The next page to fetch; `None` once done.
    next: Option<u64>,
    max_pages: u64,
    _items: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Pages<T> {
    /// At most this many pages (default [`DEFAULT_MAX_PAGES`]); one more is an error.
    pub fn max_pages(mut self, pages: u64) -> Self {
        self.max_pages = pages.max(1);
        self
    }

    /// The next page, or `None` after the last one (or after an error).
    pub async fn next_page(&mut self) -> Option<Result<Page<T>>> {
        let number = self.next.take()?;
        if number >= self.max_pages {
            return Some(Err(Error::from(ErrorKind::Pagination(format!(
                "{} still has items after {} pages of {}; stopped (see Pages::max_pages)",
                self.path, self.max_pages, self.page_size
            )))));
        }
        let page = match self
            .service
            .page::<T>(&self.path, number, self.page_size)
            .await
        {
            Ok(page) => page,
            Err(error) => return Some(Err(error)),
        };
        if page.is_paginated && page.page_number != number {
            return Some(Err(Error::from(ErrorKind::Pagination(format!(
                "asked {} for page {number}, got page {}",
                self.path, page.page_number
            )))));
        }
        if !page.is_last(self.page_size) {
            self.next = Some(number + 1);
        }
        Some(Ok(page))
    }

    /// Every item of every page, in order.
    pub async fn collect_items(mut self) -> Result<Vec<T>> {
        let mut items = Vec::new();
        while let Some(page) = self.next_page().await {
            items.extend(page?.items);
        }
        Ok(items)
    }

    /// The pages as a [`Stream`] (`futures`' trait), for `StreamExt` combinators.
    pub fn into_stream(self) -> impl Stream<Item = Result<Page<T>>> + Send
    where
        T: Send,
    {
        futures_util::stream::unfold(self, |mut pages| async move {
            let page = pages.next_page().await?;
            Some((page, pages))
        })
    }
}

impl MailUpClient {
    /// The base URL of `service`: the API base for the Console, its sibling otherwise (e.g.
    /// `https://services.mailup.com/API/v1.1/Rest/MailStatisticsService.svc`). Same origin as
    /// the API base, so the token goes there.
    pub fn service_base(&self, service: Service) -> Url {
        let api_base = self
            .lock_state()
            .session
            .config()
            .endpoints()
            .api_base
            .clone();
        if service == Service::Console {
            return api_base;
        }
        let mut url = api_base;
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().pop().push(service.path_segment());
        }
        url
    }

    /// Calls to `service` with this client's token.
    pub fn service(&self, service: Service) -> ServiceClient {
        ServiceClient {
            client: self.clone(),
            service,
        }
    }

    /// Calls to the Console service (what [`get`](Self::get) and friends already reach), with
    /// paging: `client.console().pages::<Value>("Console/User/Lists", 50)`.
    pub fn console(&self) -> ServiceClient {
        self.service(Service::Console)
    }

    /// Calls to the MailStatistics service:
    /// `client.statistics().get::<u64>("Message/12/Count/Recipients")`.
    pub fn statistics(&self) -> ServiceClient {
        self.service(Service::MailStatistics)
    }
}
