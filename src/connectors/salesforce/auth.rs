//! OAuth for the Salesforce connector: JWT bearer, refresh token and client credentials for
//! unattended runs, and the authorization-code flow (`ferry auth salesforce`) that obtains a
//! refresh token through a browser and a one-shot callback listener on 127.0.0.1.

use super::SfError;
use crate::clock::SharedClock;
use crate::http::{HttpClient, Method, Request, Service};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

pub use crate::connectors::tokens::{MemoryTokenStore, TokenStore, TokenStoreError};
pub use crate::secret::Secret;

/// How the connector authenticates. `login_url` is the login host (production, sandbox or
/// the org's My Domain, which client credentials require).
#[derive(Clone, Debug)]
pub enum SfAuth {
    JwtBearer {
        login_url: String,
        client_id: String,
        username: String,
        private_key_pem: Secret,
    },
    RefreshToken {
        login_url: String,
        client_id: String,
        client_secret: Option<Secret>,
        refresh_token: Secret,
    },
    ClientCredentials {
        login_url: String,
        client_id: String,
        client_secret: Secret,
    },
}

impl SfAuth {
    pub fn login_url(&self) -> &str {
        match self {
            SfAuth::JwtBearer { login_url, .. }
            | SfAuth::RefreshToken { login_url, .. }
            | SfAuth::ClientCredentials { login_url, .. } => login_url.trim_end_matches('/'),
        }
    }
    fn flow(&self) -> &'static str {
        match self {
            SfAuth::JwtBearer { .. } => "JWT bearer",
            SfAuth::RefreshToken { .. } => "refresh token",
            SfAuth::ClientCredentials { .. } => "client credentials",
        }
    }
}

/// The key a refresh token is stored under.
pub fn token_key(login_url: &str, client_id: &str) -> String {
    format!("salesforce:{}:{client_id}", login_url.trim_end_matches('/'))
}

/// What a token response gives the connector. Everything but `access_token` and
/// `instance_url` is optional (JWT answers omit `signature` and `issued_at`; nothing has
/// `expires_in`).
#[derive(Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub instance_url: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub issued_at: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("instance_url", &self.instance_url)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(serde::Serialize)]
struct JwtClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
}

/// Fetches an access token with the configured flow. `refresh_override` replaces the
/// configured refresh token (a rotated one from the token store).
pub async fn fetch_token(
    http: &HttpClient,
    clock: &SharedClock,
    auth: &SfAuth,
    refresh_override: Option<&Secret>,
) -> Result<TokenResponse, SfError> {
    let url = format!("{}/services/oauth2/token", auth.login_url());
    let req = match auth {
        SfAuth::JwtBearer {
            login_url,
            client_id,
            username,
            private_key_pem,
        } => {
            let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_key_pem.expose().as_bytes())
                .map_err(|_| SfError::Config {
                    message: "the JWT private key is not a valid RSA private key in PEM form"
                        .into(),
                })?;
            let claims = JwtClaims {
                iss: client_id,
                sub: username,
                aud: &jwt_audience(login_url),
                // Salesforce accepts assertions that expire within a few minutes.
                exp: clock.now().timestamp() + 180,
            };
            let assertion = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
                &claims,
                &key,
            )
            .map_err(|e| SfError::Config {
                message: format!("cannot sign the JWT assertion: {e}"),
            })?;
            Request::new(Service::Salesforce, Method::POST, &url).form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &assertion),
            ])
        }
        SfAuth::RefreshToken {
            client_id,
            client_secret,
            refresh_token,
            ..
        } => {
            let token = refresh_override.unwrap_or(refresh_token);
            let mut form = vec![
                ("grant_type", "refresh_token"),
                ("client_id", client_id.as_str()),
                ("refresh_token", token.expose()),
            ];
            if let Some(s) = client_secret {
                form.push(("client_secret", s.expose()));
            }
            Request::new(Service::Salesforce, Method::POST, &url).form(&form)
        }
        SfAuth::ClientCredentials {
            client_id,
            client_secret,
            ..
        } => Request::new(Service::Salesforce, Method::POST, &url).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
        ]),
    };
    // A token request has no side effect worth protecting; resending is safe.
    let resp = http.send(req.idempotent(true)).await?;
    if resp.is_success() {
        return resp
            .json::<TokenResponse>()
            .map_err(|_| SfError::Malformed {
                what: "the token response (no access_token or instance_url)".into(),
            });
    }
    let err = resp.json::<OAuthError>().ok();
    let (code, description) = err
        .map(|e| (e.error, e.error_description))
        .unwrap_or_else(|| (format!("HTTP {}", resp.status), String::new()));
    Err(classify_oauth_error(auth, &code, &description))
}

/// The JWT `aud`: Salesforce wants its login server, not the org's My Domain. Sandboxes
/// (test.salesforce.com or `*.sandbox.my.salesforce.com`) use the test server; other hosts
/// (an Experience Cloud site, or a simulator) are their own audience.
pub fn jwt_audience(login_url: &str) -> String {
    let trimmed = login_url.trim_end_matches('/');
    let host = url::Url::parse(trimmed)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    if host == "test.salesforce.com" || host.ends_with(".sandbox.my.salesforce.com") {
        "https://test.salesforce.com".into()
    } else if host == "login.salesforce.com" || host.ends_with(".my.salesforce.com") {
        "https://login.salesforce.com".into()
    } else {
        trimmed.to_string()
    }
}

fn classify_oauth_error(auth: &SfAuth, code: &str, description: &str) -> SfError {
    match (auth, code) {
        (SfAuth::RefreshToken { .. }, "invalid_grant") => SfError::Reauthorize {
            reason: description.to_string(),
        },
        (SfAuth::JwtBearer { .. }, "invalid_grant") => {
            let hint = match description {
                "audience is invalid" => "the login URL (aud) must be the org's login host",
                "expired authorization code" => "the assertion expired: check this machine's clock",
                "user hasn't approved this consumer" => {
                    "pre-authorize the user on the connected app (admin-approved profile or permission set)"
                }
                _ => {
                    "check the connected app's certificate matches ferry's private key, and the username"
                }
            };
            SfError::Auth {
                message: format!(
                    "Salesforce refused the JWT bearer assertion ({description}): {hint}"
                ),
            }
        }
        _ => SfError::Auth {
            message: format!(
                "Salesforce refused the {} login: {code}{}",
                auth.flow(),
                if description.is_empty() {
                    String::new()
                } else {
                    format!(" ({description})")
                }
            ),
        },
    }
}

/// The authorization-code flow's inputs.
#[derive(Clone, Debug)]
pub struct AuthorizeRequest {
    pub login_url: String,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// Port for the callback listener on 127.0.0.1 (0 = any free port). The connected app's
    /// callback URL must match `http://127.0.0.1:{port}/callback`.
    pub port: u16,
    pub scope: String,
}

/// Runs the authorization-code flow with PKCE: listens on 127.0.0.1, hands the authorize URL
/// to `open` (print it, or open a browser), waits for the redirect, checks `state`, and
/// exchanges the code. Stores the refresh token in `store` when one is given.
pub async fn authorize_interactively(
    http: &HttpClient,
    req: &AuthorizeRequest,
    store: Option<&Arc<dyn TokenStore>>,
    open: impl FnOnce(&str),
) -> Result<TokenResponse, SfError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", req.port))
        .await
        .map_err(|e| SfError::Config {
            message: format!(
                "cannot listen for the OAuth callback on 127.0.0.1:{}: {e}",
                req.port
            ),
        })?;
    let port = listener
        .local_addr()
        .map_err(|e| SfError::Config {
            message: format!("callback listener: {e}"),
        })?
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let state = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let login = req.login_url.trim_end_matches('/');
    let authorize_url = {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        ser.append_pair("response_type", "code")
            .append_pair("client_id", &req.client_id)
            .append_pair("redirect_uri", &redirect)
            .append_pair("scope", &req.scope)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        format!("{login}/services/oauth2/authorize?{}", ser.finish())
    };
    open(&authorize_url);
    let code = loop {
        let (mut sock, _) = listener.accept().await.map_err(|e| SfError::Config {
            message: format!("OAuth callback: {e}"),
        })?;
        let mut buf = vec![0u8; 8192];
        let n = sock.read(&mut buf).await.unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        let target = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let Some(query) = target.strip_prefix("/callback?") else {
            let _ = sock
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let params: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
        let (page, outcome) = if params.get("state") != Some(&state) {
            (
                "The sign-in could not be verified (state mismatch). Run `ferry auth salesforce` again.",
                Err(SfError::Auth {
                    message:
                        "the OAuth callback's state did not match; the sign-in was not completed"
                            .into(),
                }),
            )
        } else if let Some(code) = params.get("code") {
            (
                "ferry is authorized. You can close this window.",
                Ok(code.clone()),
            )
        } else {
            let err = params
                .get("error_description")
                .or(params.get("error"))
                .cloned()
                .unwrap_or_default();
            (
                "Salesforce did not authorize ferry. See the terminal for details.",
                Err(SfError::Auth {
                    message: format!("Salesforce did not authorize ferry: {err}"),
                }),
            )
        };
        let html = format!("<html><body><p>{page}</p></body></html>");
        let _ = sock
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                )
                .as_bytes(),
            )
            .await;
        break outcome?;
    };
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", req.client_id.as_str()),
        ("redirect_uri", redirect.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    if let Some(s) = &req.client_secret {
        form.push(("client_secret", s.expose()));
    }
    let resp = http
        .send(
            Request::new(
                Service::Salesforce,
                Method::POST,
                format!("{login}/services/oauth2/token"),
            )
            .form(&form),
        )
        .await?;
    if !resp.is_success() {
        let e = resp.json::<OAuthError>().ok();
        return Err(SfError::Auth {
            message: format!(
                "Salesforce refused the authorization code: {}",
                e.map(|e| format!("{} ({})", e.error, e.error_description))
                    .unwrap_or_else(|| format!("HTTP {}", resp.status))
            ),
        });
    }
    let tokens: TokenResponse = resp.json().map_err(|_| SfError::Malformed {
        what: "the token response".into(),
    })?;
    if let (Some(store), Some(rt)) = (store, &tokens.refresh_token) {
        store
            .put(&token_key(login, &req.client_id), &Secret::new(rt.clone()))
            .await
            .map_err(|e| SfError::Config {
                message: e.to_string(),
            })?;
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_audience_is_the_login_server() {
        assert_eq!(
            jwt_audience("https://acme.my.salesforce.com/"),
            "https://login.salesforce.com"
        );
        assert_eq!(
            jwt_audience("https://login.salesforce.com"),
            "https://login.salesforce.com"
        );
        assert_eq!(
            jwt_audience("https://acme--uat.sandbox.my.salesforce.com"),
            "https://test.salesforce.com"
        );
        assert_eq!(
            jwt_audience("https://test.salesforce.com"),
            "https://test.salesforce.com"
        );
        assert_eq!(
            jwt_audience("http://127.0.0.1:4000"),
            "http://127.0.0.1:4000"
        );
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let a = SfAuth::ClientCredentials {
            login_url: "https://acme.my.salesforce.com".into(),
            client_id: "id".into(),
            client_secret: s,
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
