//! Privacy requests: `ferry subject export` gathers what Zoom and ferry hold about one email
//! address, `ferry subject forget` removes it from ferry's own state. The subject index
//! ([`index`]) links an address (by keyed hash) to the synced records it appeared in.

pub(crate) mod export;
pub(crate) mod index;
