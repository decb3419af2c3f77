//! Where the tokens ferry obtains at run time live between calls and runs: access tokens and
//! rotating refresh tokens of both services, behind one [`TokenStore`]. Runs and the daemon
//! use [`StoreTokens`] (the state file, encrypted at rest); tests and one-shot commands may use
//! [`MemoryTokenStore`].

use crate::secret::Secret;
use crate::state::Store;

#[derive(Debug, thiserror::Error)]
#[error("token store: {0}")]
pub struct TokenStoreError(pub String);

/// Durable storage for secrets by name (Zoom's token cache names, Salesforce's
/// [`token_key`](crate::connectors::salesforce::token_key)). `put` must be durable when it
/// returns: a rotated refresh token is stored before its access token is used, so a crash
/// never loses the only valid token.
#[async_trait::async_trait]
pub trait TokenStore: Send + Sync {
    async fn get(&self, name: &str) -> Result<Option<Secret>, TokenStoreError>;
    async fn put(&self, name: &str, value: &Secret) -> Result<(), TokenStoreError>;
    /// Held while a rotating token is read, spent and replaced, so processes sharing the
    /// store refresh it one at a time (see `StateBackend::token_lock`). Nothing by default.
    async fn lock(&self, _name: &str) -> Result<crate::state::TokenLock, TokenStoreError> {
        Ok(crate::state::TokenLock::none())
    }
}

/// A token store in memory, for tests and one-shot commands.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    inner: std::sync::Mutex<std::collections::BTreeMap<String, Secret>>,
    /// Every put, in order (tests check the store saw a token before it was used).
    log: std::sync::Mutex<Vec<(String, Secret)>>,
}

impl MemoryTokenStore {
    pub fn puts(&self) -> Vec<(String, Secret)> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait::async_trait]
impl TokenStore for MemoryTokenStore {
    async fn get(&self, name: &str) -> Result<Option<Secret>, TokenStoreError> {
        Ok(self
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned())
    }
    async fn put(&self, name: &str, value: &Secret) -> Result<(), TokenStoreError> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), value.clone());
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), value.clone()));
        Ok(())
    }
}

/// Tokens in the state file (ChaCha20-Poly1305 at rest). `put` commits before it returns, so a
/// rotated refresh token survives a crash right after the refresh.
#[derive(Debug, Clone)]
pub struct StoreTokens(pub Store);

impl StoreTokens {
    pub fn new(store: Store) -> Self {
        Self(store)
    }
}

#[async_trait::async_trait]
impl TokenStore for StoreTokens {
    async fn get(&self, name: &str) -> Result<Option<Secret>, TokenStoreError> {
        self.0
            .token_get(name)
            .await
            .map(|t| t.map(|t| Secret::new(t.value)))
            .map_err(|e| TokenStoreError(e.to_string()))
    }

    async fn put(&self, name: &str, value: &Secret) -> Result<(), TokenStoreError> {
        self.0
            .token_put(name, value.expose(), None)
            .await
            .map_err(|e| TokenStoreError(e.to_string()))
    }

    async fn lock(&self, name: &str) -> Result<crate::state::TokenLock, TokenStoreError> {
        self.0
            .token_lock(name)
            .await
            .map_err(|e| TokenStoreError(e.to_string()))
    }
}
