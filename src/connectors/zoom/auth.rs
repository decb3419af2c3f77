//! Zoom OAuth: server-to-server (`account_credentials`) and authorization code with rotating
//! refresh tokens. One [`TokenCache`] per credential is shared by every request.

use crate::http::{HttpClient, Method, Request, Service};
use base64::Engine;
use chrono::{DateTime, Utc};
use std::sync::Arc;

pub use crate::connectors::tokens::{MemoryTokenStore, TokenStore, TokenStoreError};
pub use crate::secret::Secret;

/// How ferry authenticates to Zoom.
#[derive(Debug, Clone)]
pub enum ZoomAuth {
    /// Server-to-server OAuth app: a fresh access token from the same grant each hour.
    ServerToServer {
        account_id: String,
        client_id: String,
        client_secret: Secret,
    },
    /// A user-managed app: every refresh returns a new single-use refresh token.
    OAuth {
        client_id: String,
        client_secret: Secret,
        /// Used only when the token store holds none yet (e.g. right after `ferry auth zoom`).
        refresh_token: Option<Secret>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "Zoom token endpoint refused the credentials ({error}): {reason}; fix the connection's auth settings or re-run `ferry auth zoom`"
    )]
    Refused { error: String, reason: String },
    #[error("Zoom token endpoint answered HTTP {status}")]
    Status { status: u16 },
    #[error("no Zoom refresh token stored; run `ferry auth zoom` first")]
    NoRefreshToken,
    #[error("Zoom token response is malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] TokenStoreError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    expires_at: DateTime<Utc>,
}

/// Renew this long before expiry, as Zoom's SDK does.
const RENEW_BEFORE_SECS: i64 = 60;

/// One access token per credential, renewed before expiry and after a 401 code 124.
pub struct TokenCache {
    auth: ZoomAuth,
    token_url: String,
    http: HttpClient,
    store: Arc<dyn TokenStore>,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl TokenCache {
    pub fn new(
        auth: ZoomAuth,
        token_url: String,
        http: HttpClient,
        store: Arc<dyn TokenStore>,
    ) -> Self {
        Self {
            auth,
            token_url,
            http,
            store,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The store key of the current refresh token for this app.
    pub fn refresh_token_key(client_id: &str) -> String {
        format!("zoom:{client_id}:refresh_token")
    }

    /// A valid access token, renewing it when it expires within a minute.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        let mut guard = self.cached.lock().await;
        let now = self.http.clock().now();
        if let Some(c) = guard.as_ref() {
            let renew_at = c
                .expires_at
                .checked_sub_signed(chrono::Duration::seconds(RENEW_BEFORE_SECS))
                .unwrap_or(c.expires_at);
            if renew_at > now {
                return Ok(c.token.clone());
            }
        }
        let fresh = self.obtain().await?;
        let token = fresh.token.clone();
        *guard = Some(fresh);
        Ok(token)
    }

    /// Drops `stale` after the API refused it; the next `token()` renews. A token already
    /// replaced by another request is left alone, so concurrent 401s renew once.
    pub async fn invalidate(&self, stale: &Secret) {
        let mut guard = self.cached.lock().await;
        if guard.as_ref().is_some_and(|c| &c.token == stale) {
            *guard = None;
        }
    }

    async fn obtain(&self) -> Result<Cached, AuthError> {
        // A rotating refresh token is spent by its use: daemons sharing the state refresh it
        // one at a time, each reading the token after taking the lock (the one before may
        // have replaced it), and keep the lock until the new one is stored.
        let _refresh_lock = match &self.auth {
            ZoomAuth::OAuth { client_id, .. } => {
                Some(self.store.lock(&Self::refresh_token_key(client_id)).await?)
            }
            ZoomAuth::ServerToServer { .. } => None,
        };
        let (client_id, client_secret, pairs): (&str, &Secret, Vec<(String, String)>) =
            match &self.auth {
                ZoomAuth::ServerToServer {
                    account_id,
                    client_id,
                    client_secret,
                } => (
                    client_id,
                    client_secret,
                    vec![
                        ("grant_type".into(), "account_credentials".into()),
                        ("account_id".into(), account_id.clone()),
                    ],
                ),
                ZoomAuth::OAuth {
                    client_id,
                    client_secret,
                    refresh_token,
                } => {
                    let key = Self::refresh_token_key(client_id);
                    let current = match self.store.get(&key).await? {
                        Some(t) => t,
                        None => refresh_token.clone().ok_or(AuthError::NoRefreshToken)?,
                    };
                    (
                        client_id,
                        client_secret,
                        vec![
                            ("grant_type".into(), "refresh_token".into()),
                            ("refresh_token".into(), current.expose().to_string()),
                        ],
                    )
                }
            };
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{client_id}:{}", client_secret.expose()));
        let form: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let req = Request::new(Service::Zoom, Method::POST, &self.token_url)
            .header("Authorization", format!("Basic {basic}"))
            .form(&form)
            .category("oauth")
            // A refresh grant is single-use: never resend one whose outcome is unknown.
            .idempotent(matches!(self.auth, ZoomAuth::ServerToServer { .. }));
        let resp = self.http.send(req).await?;
        if !resp.is_success() {
            let body: serde_json::Value = resp.json().unwrap_or_default();
            if (400..500).contains(&resp.status) {
                return Err(AuthError::Refused {
                    error: body["error"].as_str().unwrap_or("unknown").to_string(),
                    reason: body["reason"].as_str().unwrap_or("").to_string(),
                });
            }
            return Err(AuthError::Status {
                status: resp.status,
            });
        }
        let body: serde_json::Value = resp
            .json()
            .map_err(|e| AuthError::Malformed(e.to_string()))?;
        let access = body["access_token"]
            .as_str()
            .ok_or_else(|| AuthError::Malformed("no access_token".into()))?;
        let expires_in = token_lifetime(&body["expires_in"]);
        if let ZoomAuth::OAuth { client_id, .. } = &self.auth {
            let rotated = body["refresh_token"]
                .as_str()
                .ok_or_else(|| AuthError::Malformed("no refresh_token in refresh".into()))?;
            // Persist before use: the old refresh token is already spent.
            self.store
                .put(&Self::refresh_token_key(client_id), &Secret::new(rotated))
                .await?;
        }
        Ok(Cached {
            token: Secret::new(access),
            expires_at: self
                .http
                .clock()
                .now()
                .checked_add_signed(chrono::Duration::seconds(expires_in))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        })
    }
}

/// Zoom's access tokens live an hour; whatever `expires_in` says, ferry renews at least
/// this often (a huge or absurd lifetime is clamped, not trusted).
pub const MAX_TOKEN_LIFETIME_SECS: i64 = 86_400;

/// `expires_in` of any shape (integer, float, string; missing: Zoom's 3599) in seconds,
/// clamped to `0..=MAX_TOKEN_LIFETIME_SECS`.
pub fn token_lifetime(v: &serde_json::Value) -> i64 {
    let secs = match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|s| !s.is_nan())
    .unwrap_or(3599.0);
    // `as` saturates (inf → i64::MAX) and the clamp bounds it either way.
    (secs as i64).clamp(0, MAX_TOKEN_LIFETIME_SECS)
}

#[cfg(test)]
mod tests {
    use super::token_lifetime;
    use serde_json::json;

    #[test]
    fn any_expires_in_is_bounded() {
        assert_eq!(token_lifetime(&json!(3599)), 3599);
        assert_eq!(token_lifetime(&json!("3599")), 3599);
        assert_eq!(token_lifetime(&json!(1_000_000_000_000_000_000u64)), 86_400);
        assert_eq!(token_lifetime(&json!(1e300)), 86_400);
        assert_eq!(token_lifetime(&json!("1e18")), 86_400);
        assert_eq!(token_lifetime(&json!(u64::MAX)), 86_400);
        assert_eq!(token_lifetime(&json!(-5)), 0);
        assert_eq!(token_lifetime(&json!("soon")), 3599);
        assert_eq!(token_lifetime(&json!(null)), 3599);
        assert_eq!(token_lifetime(&json!({"x": 1})), 3599);
    }
}
