//! Reading a stream page by page: [`Listing`] walks one listing's API pages, [`ReadState`]
//! walks partitions and, for incremental streams, date windows in cursor order.

use super::{Page, ReadWindow, StreamDef, ZoomConnector, ZoomError, param_text};
use chrono::{DateTime, NaiveDate, Utc};
use jsonpath_rust::JsonPath;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// One listing (path + query) walked one API page at a time. An expired page token
/// restarts the listing once from the first page; records already returned are skipped
/// by primary key, so a restart never yields a record twice.
pub(super) struct Listing {
    def: &'static StreamDef,
    path: String,
    query: Vec<(String, String)>,
    bucket: String,
    selector: String,
    token: Option<String>,
    seen: BTreeSet<String>,
    /// Page tokens already followed: a server that hands one out again would loop forever.
    tokens: BTreeSet<String>,
    /// API pages requested so far (bounded by [`MAX_PAGES`]).
    pages: u32,
    restarted: bool,
    finished: bool,
}

/// The most API pages one listing may take (3,000,000 records at Zoom's 300 a page): a
/// server whose page tokens never run out ends with an error instead of running forever.
pub(super) const MAX_PAGES: u32 = 10_000;

impl Listing {
    pub(super) fn new(
        def: &'static StreamDef,
        path: String,
        query: Vec<(String, String)>,
        category: &str,
        selector: String,
    ) -> Self {
        Self {
            def,
            path,
            query,
            bucket: def.bucket(category),
            selector,
            token: None,
            seen: BTreeSet::new(),
            tokens: BTreeSet::new(),
            pages: 0,
            restarted: false,
            finished: false,
        }
    }

    pub(super) fn finished(&self) -> bool {
        self.finished
    }

    /// The records of the next API page; `None` once the last page has been returned.
    pub(super) async fn next_page(
        &mut self,
        conn: &ZoomConnector,
    ) -> Result<Option<Vec<Value>>, ZoomError> {
        if self.finished {
            return Ok(None);
        }
        let def = self.def;
        loop {
            let (records, skipped) = self.fetch_page(conn, def).await?;
            // After a restart, pages already returned come back empty: go on to new ones.
            if records.is_empty() && skipped > 0 && !self.finished {
                continue;
            }
            return Ok(Some(records));
        }
    }

    /// One API page: its new records and how many were skipped as already returned.
    async fn fetch_page(
        &mut self,
        conn: &ZoomConnector,
        def: &'static StreamDef,
    ) -> Result<(Vec<Value>, usize), ZoomError> {
        let body = loop {
            if self.pages >= MAX_PAGES {
                self.finished = true;
                return Err(ZoomError::Malformed {
                    path: self.path.clone(),
                    message: format!(
                        "the listing did not end after {MAX_PAGES} pages; stopping (a server that never stops paging)"
                    ),
                });
            }
            self.pages = self.pages.saturating_add(1);
            let mut q = self.query.clone();
            if let Some(size) = def.page_size {
                q.push(("page_size".into(), size.to_string()));
            }
            if let Some(t) = &self.token {
                q.push(("next_page_token".into(), t.clone()));
            }
            match conn
                .get_json(&self.bucket, &self.path, &q, &def.no_data)
                .await
            {
                Ok(b) => break b,
                Err(ZoomError::Api {
                    code: Some(300),
                    message,
                    ..
                }) if self.token.is_some() && !self.restarted && message.contains("page token") => {
                    self.restarted = true;
                    self.token = None;
                    // Restarted from the first page: its tokens may legitimately come again.
                    self.tokens.clear();
                }
                Err(e) => {
                    self.finished = true;
                    return Err(e);
                }
            }
        };
        let found = body
            .query(&self.selector)
            .map_err(|e| ZoomError::Malformed {
                path: self.path.clone(),
                message: format!("selector {}: {e}", self.selector),
            })?;
        let mut records = Vec::with_capacity(found.len());
        let mut skipped = 0;
        for r in found {
            match r.get(&def.primary_key).map(param_text) {
                Some(k) if !k.is_empty() => {
                    if self.seen.insert(k) {
                        records.push(r.clone());
                    } else {
                        skipped += 1;
                    }
                }
                _ => records.push(r.clone()),
            }
        }
        self.token = body
            .get("next_page_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if let Some(t) = &self.token {
            if !self.tokens.insert(t.clone()) {
                self.finished = true;
                return Err(ZoomError::Malformed {
                    path: self.path.clone(),
                    message: format!(
                        "next_page_token repeats a token already followed (after {} pages); stopping instead of reading the same pages forever",
                        self.pages
                    ),
                });
            }
        }
        self.finished = self.token.is_none();
        Ok((records, skipped))
    }
}

/// A record of an incremental stream with its parsed cursor, sortable.
struct Keyed {
    at: DateTime<Utc>,
    key: String,
    record: Value,
}

/// What is left to read of the current partition.
enum Progress {
    /// A stream without a cursor: one page out per API page.
    Listing(Listing),
    /// An incremental stream: date chunks still to request and records ready to go out.
    Windows(Windows),
}

struct Windows {
    /// Date chunks not yet requested, in order.
    chunks: VecDeque<(NaiveDate, NaiveDate)>,
    /// Records whose turn has come, sorted by cursor.
    ready: VecDeque<Keyed>,
    /// Records from requested chunks whose cursor lies past `bound`: a later chunk may
    /// still hold records with an earlier cursor, so they wait and are merged with it.
    held: Vec<Keyed>,
    /// Every record of this read with a cursor before `bound` is in `ready` or out.
    bound: Option<DateTime<Utc>>,
    /// Records with a cursor before this are not part of the read.
    start: DateTime<Utc>,
    until: DateTime<Utc>,
    /// The furthest a cursor may go: `min(until, now) - settle` (records may appear that
    /// late after their cursor value).
    horizon: DateTime<Utc>,
    /// The partition's checkpoint: cursors handed out never go back before it.
    floor: Option<DateTime<Utc>>,
}

/// The state of one [`ZoomConnector::read`]: partitions one after another.
pub(super) struct ReadState {
    conn: ZoomConnector,
    stream: String,
    params: BTreeMap<String, Value>,
    window: ReadWindow,
    partitions: Option<VecDeque<String>>,
    current: Option<(String, Progress)>,
    done: bool,
}

/// At most this many records per page of an incremental stream (ties in the cursor
/// are never split, so a page can run over).
const RECORDS_PER_PAGE: usize = 300;

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn fmt_cursor(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn day_start(d: NaiveDate) -> Option<DateTime<Utc>> {
    d.and_hms_opt(0, 0, 0).map(|t| t.and_utc())
}

impl ReadState {
    pub(super) fn new(
        conn: ZoomConnector,
        stream: &str,
        params: &BTreeMap<String, Value>,
        window: ReadWindow,
    ) -> Self {
        Self {
            conn,
            stream: stream.to_string(),
            params: params.clone(),
            window,
            partitions: None,
            current: None,
            done: false,
        }
    }

    /// The next page; after an error, nothing more.
    pub(super) async fn next(&mut self) -> Option<Result<Page, ZoomError>> {
        if self.done {
            return None;
        }
        match self.step().await {
            Ok(Some(page)) => Some(Ok(page)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    async fn step(&mut self) -> Result<Option<Page>, ZoomError> {
        let def = self.conn.def(&self.stream)?;
        if self.partitions.is_none() {
            for r in &def.required {
                let partitioned = def.partition.as_ref().is_some_and(|p| &p.param == r);
                if !partitioned && !self.params.contains_key(r) {
                    return Err(ZoomError::MissingParam {
                        stream: def.name.clone(),
                        param: r.clone(),
                    });
                }
            }
            self.partitions = Some(self.conn.partitions(def, &self.params).await?.into());
        }
        loop {
            if self.current.is_none() {
                let Some(next) = self.partitions.as_mut().and_then(VecDeque::pop_front) else {
                    return Ok(None);
                };
                let progress = self.begin(def, &next)?;
                self.current = Some((next, progress));
            }
            let Some((partition, progress)) = self.current.as_mut() else {
                continue;
            };
            let partition = partition.clone();
            let page = match progress {
                Progress::Listing(listing) => {
                    let records = match listing.next_page(&self.conn).await {
                        Ok(r) => r.unwrap_or_default(),
                        // The partition has no data (a deleted user, an unlicensed host).
                        Err(ZoomError::NotFound { .. }) => Vec::new(),
                        Err(e) => return Err(e),
                    };
                    Some(Page {
                        partition: partition.clone(),
                        records,
                        cursor: None,
                        partition_done: listing.finished(),
                    })
                }
                Progress::Windows(w) => {
                    let mut params = self.params.clone();
                    if let Some(p) = &def.partition {
                        params.insert(p.param.clone(), Value::String(partition.clone()));
                    }
                    w.next_page(&self.conn, def, &params, &partition).await?
                }
            };
            match page {
                Some(p) => {
                    if p.partition_done {
                        self.current = None;
                    }
                    return Ok(Some(p));
                }
                None => continue,
            }
        }
    }

    /// Sets up the read of one partition.
    fn begin(&self, def: &'static StreamDef, partition: &str) -> Result<Progress, ZoomError> {
        let mut params = self.params.clone();
        if let Some(p) = &def.partition {
            params.insert(p.param.clone(), Value::String(partition.to_string()));
        }
        let Some(wdef) = &def.window else {
            let path = self.conn.fill_path(def, &def.path, &params)?;
            let query = self.conn.query_for(def, &params);
            // `request` reads what its `record_selector` points at, as enrich does.
            let selector = super::selector_for(def, &params)?;
            return Ok(Progress::Listing(Listing::new(
                def,
                path,
                query,
                &def.category,
                selector,
            )));
        };
        let floor = (self.window.since)(partition);
        let start = self.window.start_for(partition);
        let until = self.window.until;
        let now = self.conn.http().clock().now();
        let horizon = until.min(now) - wdef.settle();
        // A checkpointed partition asks for `lead` more: the API filters its window on a
        // field that can precede the cursor by that much (a meeting is listed by its start
        // date but ordered by its end).
        let request_from = match floor {
            Some(_) => start - wdef.lead(),
            None => start,
        };
        let max_days = wdef.max_days.max(1);
        let mut chunks = VecDeque::new();
        let mut from = request_from.date_naive();
        let end = until.date_naive();
        while from <= end {
            // Zoom counts "one month" on the calendar: from 31 January the window may reach
            // 28 February, not 1 March.
            let month = from
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(from + chrono::Duration::days(27));
            let to = (from + chrono::Duration::days(max_days - 1))
                .min(month)
                .min(end);
            chunks.push_back((from, to));
            from = to + chrono::Duration::days(1);
        }
        Ok(Progress::Windows(Windows {
            chunks,
            ready: VecDeque::new(),
            held: Vec::new(),
            bound: None,
            start,
            until,
            horizon,
            floor,
        }))
    }
}

impl Windows {
    /// The cursor a page may carry: never past `limit`, never before the checkpoint.
    fn cursor(&self, limit: Option<DateTime<Utc>>) -> Option<String> {
        let capped = limit.map(|t| t.min(self.horizon));
        match (capped, self.floor) {
            (Some(a), Some(f)) => Some(fmt_cursor(a.max(f))),
            (Some(a), None) => Some(fmt_cursor(a)),
            (None, f) => f.map(fmt_cursor),
        }
    }

    /// The next page of this partition, requesting date chunks as needed. `None` when a
    /// chunk held nothing to hand out yet (the caller asks again).
    async fn next_page(
        &mut self,
        conn: &ZoomConnector,
        def: &'static StreamDef,
        params: &BTreeMap<String, Value>,
        partition: &str,
    ) -> Result<Option<Page>, ZoomError> {
        if self.ready.is_empty() {
            match self.chunks.pop_front() {
                Some(chunk) => {
                    if !self.load(conn, def, params, chunk).await? {
                        // No data for this partition at all: end it with what is held.
                        self.chunks.clear();
                        self.release_all();
                    }
                }
                None => self.release_all(),
            }
        }
        let last = self.chunks.is_empty() && self.held.is_empty();
        if self.ready.is_empty() {
            if !last {
                return Ok(None);
            }
            return Ok(Some(Page {
                partition: partition.to_string(),
                records: Vec::new(),
                cursor: self.cursor(self.bound),
                partition_done: true,
            }));
        }
        let mut records = Vec::new();
        let mut last_at = None;
        while let Some(k) = self.ready.front() {
            if records.len() >= RECORDS_PER_PAGE && Some(k.at) != last_at {
                break;
            }
            let Some(k) = self.ready.pop_front() else {
                break;
            };
            last_at = Some(k.at);
            records.push(k.record);
        }
        let drained = self.ready.is_empty();
        // Once `ready` is drained every record before `bound` is out; otherwise the rest
        // of `ready` lies strictly after this page's last cursor (ties are never split).
        let limit = if drained { self.bound } else { last_at };
        Ok(Some(Page {
            partition: partition.to_string(),
            records,
            cursor: self.cursor(limit),
            partition_done: drained && last,
        }))
    }

    /// Requests one date chunk, all its API pages. Returns false when the API says the
    /// partition has no data.
    async fn load(
        &mut self,
        conn: &ZoomConnector,
        def: &'static StreamDef,
        params: &BTreeMap<String, Value>,
        (from, to): (NaiveDate, NaiveDate),
    ) -> Result<bool, ZoomError> {
        let mut params = params.clone();
        params.insert("from".into(), Value::String(from.to_string()));
        params.insert("to".into(), Value::String(to.to_string()));
        let path = conn.fill_path(def, &def.path, &params)?;
        let query = conn.query_for(def, &params);
        let mut listing = Listing::new(def, path, query, &def.category, def.selector.clone());
        let cursor_field = def.cursor.clone().unwrap_or_default();
        let mut fresh = Vec::new();
        loop {
            match listing.next_page(conn).await {
                Ok(Some(page)) => {
                    for record in page {
                        let Some(at) = record.get(&cursor_field).and_then(parse_time) else {
                            continue;
                        };
                        if at < self.start || at > self.until {
                            continue;
                        }
                        let key = record
                            .get(&def.primary_key)
                            .map(param_text)
                            .unwrap_or_default();
                        fresh.push(Keyed { at, key, record });
                    }
                }
                Ok(None) => break,
                Err(ZoomError::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        // Later chunks list records whose filter date is after `to`, and a cursor is never
        // before its record's filter date: everything before the next day is settled.
        let next_day = to.succ_opt().and_then(day_start);
        self.held.append(&mut fresh);
        match next_day {
            Some(b) if !self.chunks.is_empty() => self.release_before(b),
            _ => self.release_all(),
        }
        Ok(true)
    }

    /// Moves held records with a cursor before `b` to `ready`, in cursor order.
    fn release_before(&mut self, b: DateTime<Utc>) {
        let (mut out, keep): (Vec<Keyed>, Vec<Keyed>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|k| k.at < b);
        self.held = keep;
        out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.key.cmp(&b.key)));
        self.ready.extend(out);
        let b = b.min(self.until);
        self.bound = Some(self.bound.map_or(b, |old| old.max(b)));
    }

    /// Everything held is settled: the read's window is complete.
    fn release_all(&mut self) {
        let mut out = std::mem::take(&mut self.held);
        out.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.key.cmp(&b.key)));
        self.ready.extend(out);
        if self.start <= self.until {
            self.bound = Some(self.until);
        }
    }
}
