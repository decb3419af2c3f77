//! The Zoom connector: auth, the stream catalog (data), paging, windows, webhooks.
