//! The durable [`TokenStore`]: tokens live in the state file, encrypted by the store.

use super::auth::{Secret, TokenStore, TokenStoreError};
use crate::state::Store;

/// Keeps Zoom tokens in the SQLite state file (ChaCha20-Poly1305 at rest). `put` commits
/// before it returns, so a rotated refresh token survives a crash right after the refresh.
#[derive(Debug, Clone)]
pub struct StoreTokens(pub Store);

impl StoreTokens {
    pub fn new(store: Store) -> Self {
        Self(store)
    }
}

impl TokenStore for StoreTokens {
    fn get(&self, name: &str) -> Result<Option<Secret>, TokenStoreError> {
        self.0
            .token_get(name)
            .map(|t| t.map(|t| Secret::new(t.value)))
            .map_err(|e| TokenStoreError(e.to_string()))
    }

    fn put(&self, name: &str, value: &Secret) -> Result<(), TokenStoreError> {
        self.0
            .token_put(name, value.expose(), None)
            .map_err(|e| TokenStoreError(e.to_string()))
    }
}
