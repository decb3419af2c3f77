//! `ferry auth zoom`: the OAuth authorization-code flow (with PKCE) for user-managed apps.
//! A one-shot callback server on 127.0.0.1 receives the code; the code is exchanged at the
//! token URL and the refresh token goes into the [`TokenStore`] (the state file).

use super::auth::{Secret, TokenCache, TokenStore, TokenStoreError};
use crate::http::{HttpClient, Method, Request, Service};
use base64::Engine;
use sha2::Digest;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What the authorization needs to know.
#[derive(Debug, Clone)]
pub struct AuthorizeSettings {
    /// `https://zoom.us/oauth/authorize`.
    pub authorize_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// Where the callback server listens; port 0 picks a free one. Only loopback addresses
    /// are accepted.
    pub listen: SocketAddr,
    /// The redirect URL registered with the app, when it is not the callback server's own
    /// (`http://127.0.0.1:PORT/callback`), e.g. a tunnel to it.
    pub redirect_uri: Option<String>,
}

/// The authorize URL for `https://zoom.us/oauth/token` is `https://zoom.us/oauth/authorize`.
pub fn authorize_url_for(token_url: &str) -> String {
    match token_url.strip_suffix("/token") {
        Some(base) => format!("{base}/authorize"),
        None => format!("{}/authorize", token_url.trim_end_matches('/')),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    #[error("the callback server may listen only on a loopback address, not {0}")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr} for the OAuth callback: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("bad authorize URL {0}")]
    BadUrl(String),
    #[error("Zoom did not authorize ferry: {0}")]
    Denied(String),
    #[error("the callback's state does not match this authorization (a stale or forged redirect)")]
    StateMismatch,
    #[error("the callback server stopped before Zoom called back")]
    NoCallback,
    #[error("Zoom refused the authorization code ({error}): {reason}")]
    Refused { error: String, reason: String },
    #[error("Zoom token endpoint answered HTTP {0}")]
    Status(u16),
    #[error("Zoom token response is malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error(transparent)]
    Store(#[from] TokenStoreError),
}

/// The callback's query parameters.
type Callback = BTreeMap<String, String>;

/// An authorization waiting for the user to approve it in a browser.
pub struct PendingAuthorization {
    settings: AuthorizeSettings,
    url: String,
    redirect_uri: String,
    state: String,
    verifier: String,
    callback: tokio::sync::mpsc::Receiver<Callback>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PendingAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingAuthorization")
            .field("url", &self.url)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl Drop for PendingAuthorization {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn random_b64(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// PKCE S256: base64url(sha256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

const CALLBACK_PAGE: &str = "<!doctype html><title>ferry</title><p>ferry received the \
Zoom authorization. You can close this tab.</p>";

/// Starts the callback server and builds the URL the user opens.
pub async fn begin(settings: AuthorizeSettings) -> Result<PendingAuthorization, AuthorizeError> {
    if !settings.listen.ip().is_loopback() {
        return Err(AuthorizeError::NotLoopback(settings.listen));
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| AuthorizeError::Listen {
            addr: settings.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| AuthorizeError::Listen {
            addr: settings.listen,
            source,
        })?;
    let redirect_uri = settings
        .redirect_uri
        .clone()
        .unwrap_or_else(|| format!("http://{addr}/callback"));
    let state = random_b64(18);
    let verifier = random_b64(48);
    let mut url = url::Url::parse(&settings.authorize_url)
        .map_err(|_| AuthorizeError::BadUrl(settings.authorize_url.clone()))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &settings.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("state", &state)
        .append_pair("code_challenge", &pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    let (tx, rx) = tokio::sync::mpsc::channel::<Callback>(1);
    // The first callback wins; later ones (a browser retrying) only see the page.
    let tx = Arc::new(Mutex::new(Some(tx)));
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(
            move |axum::extract::Query(q): axum::extract::Query<Callback>| {
                let tx = tx.lock().unwrap_or_else(|e| e.into_inner()).take();
                async move {
                    if let Some(tx) = tx {
                        let _ = tx.send(q).await;
                    }
                    axum::response::Html(CALLBACK_PAGE)
                }
            },
        ),
    );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(PendingAuthorization {
        url: url.to_string(),
        settings,
        redirect_uri,
        state,
        verifier,
        callback: rx,
        server,
    })
}

impl PendingAuthorization {
    /// The URL to open in a browser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The redirect URL the app must have registered.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits for the callback, exchanges the code and stores the refresh token under the
    /// key the connector reads ([`TokenCache::refresh_token_key`]). Returns that key.
    pub async fn finish(
        mut self,
        http: &HttpClient,
        store: &dyn TokenStore,
    ) -> Result<String, AuthorizeError> {
        let q = self
            .callback
            .recv()
            .await
            .ok_or(AuthorizeError::NoCallback)?;
        if let Some(err) = q.get("error") {
            let detail = q.get("error_description").map(String::as_str).unwrap_or("");
            return Err(AuthorizeError::Denied(
                format!("{err} {detail}").trim().to_string(),
            ));
        }
        if q.get("state") != Some(&self.state) {
            return Err(AuthorizeError::StateMismatch);
        }
        let code = q
            .get("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| AuthorizeError::Denied("the callback carries no code".into()))?;
        let s = &self.settings;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            s.client_id,
            s.client_secret.expose()
        ));
        let req = Request::new(Service::Zoom, Method::POST, &s.token_url)
            .header("Authorization", format!("Basic {basic}"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &self.redirect_uri),
                ("code_verifier", &self.verifier),
            ])
            .category("oauth")
            // A code is single-use: never resend an exchange whose outcome is unknown.
            .idempotent(false);
        let resp = http.send(req).await?;
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        if (400..500).contains(&resp.status) {
            return Err(AuthorizeError::Refused {
                error: body["error"].as_str().unwrap_or("unknown").to_string(),
                reason: body["reason"].as_str().unwrap_or("").to_string(),
            });
        }
        if !resp.is_success() {
            return Err(AuthorizeError::Status(resp.status));
        }
        let refresh = body["refresh_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthorizeError::Malformed("no refresh_token".into()))?;
        let key = TokenCache::refresh_token_key(&s.client_id);
        store.put(&key, &Secret::new(refresh)).await?;
        self.server.abort();
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorize_url_sits_beside_the_token_url() {
        assert_eq!(
            authorize_url_for("https://zoom.us/oauth/token"),
            "https://zoom.us/oauth/authorize"
        );
        assert_eq!(
            authorize_url_for("http://127.0.0.1:9/oauth/token/"),
            "http://127.0.0.1:9/oauth/token/authorize"
        );
    }

    #[test]
    fn pkce_matches_rfc_7636_example() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[tokio::test]
    async fn refuses_a_public_listen_address() {
        let r = begin(AuthorizeSettings {
            authorize_url: "http://127.0.0.1:9/oauth/authorize".into(),
            token_url: "http://127.0.0.1:9/oauth/token".into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
            listen: "0.0.0.0:0".parse().expect("addr"),
            redirect_uri: None,
        })
        .await;
        assert!(matches!(r, Err(AuthorizeError::NotLoopback(_))));
    }
}
