//! What the checks need to know about a connector's streams. The Zoom connector's built-in
//! catalog implements [`StreamCatalog`]; tests may use a small one of their own.

/// What the loader knows about one stream, for checking a pipeline against it.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// `zoom.past_meetings` without the connection prefix: `past_meetings`.
    pub name: String,
    /// Parameters the stream accepts, and which of them are required.
    pub params: Vec<String>,
    pub required_params: Vec<String>,
    /// A realistic record, as a pipeline's `record` sees it; templates are rendered against
    /// it when the file loads.
    pub sample: serde_json::Value,
    /// True when the stream has a cursor (reads are incremental, `since`/`lookback` apply).
    pub incremental: bool,
    /// True when a single record can be fetched (webhook triggers need it).
    pub single_fetch: bool,
    /// Webhook events that can trigger a pipeline reading this stream.
    pub triggers: Vec<String>,
}

/// A connector kind's streams.
pub trait StreamCatalog: Send + Sync {
    /// The connector kind this catalog describes (`zoom`).
    fn kind(&self) -> &str;
    fn stream(&self, name: &str) -> Option<StreamInfo>;
    fn names(&self) -> Vec<String>;
    /// True when the stream yields one record per request (an `enrich` of it attaches an
    /// object to the record), false when it yields a list (the enrich attaches a list).
    fn single_record(&self, stream: &str) -> bool {
        let _ = stream;
        false
    }
}
