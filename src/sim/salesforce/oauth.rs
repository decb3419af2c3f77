//! The sim's OAuth token endpoint: JWT bearer (RS256 against the connected app's
//! certificate), refresh_token (with optional rotation and revocation), client_credentials
//! (My Domain only) and authorization_code (with PKCE). Errors use the OAuth shape
//! `{"error","error_description"}`; successes carry no `expires_in`, as in Salesforce.

use super::{Session, SimState};
use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

type Reply = (StatusCode, Json<Value>);

fn oauth_error(error: &str, description: &str) -> Reply {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
}

#[derive(serde::Deserialize)]
struct JwtClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Value>,
    exp: Option<i64>,
}

impl SimState {
    pub(crate) fn token(&mut self, my_domain: bool, headers: &HeaderMap, body: &[u8]) -> Reply {
        self.calls.auth += 1;
        let form: HashMap<String, String> =
            url::form_urlencoded::parse(body).into_owned().collect();
        let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
        match grant {
            JWT_BEARER => self.jwt_grant(form.get("assertion").map(String::as_str).unwrap_or("")),
            "refresh_token" => self.refresh_grant(&form),
            "client_credentials" => {
                if !my_domain {
                    return oauth_error("invalid_grant", "request not supported on this domain");
                }
                let (id, secret) = basic_auth(headers).unwrap_or_else(|| {
                    (
                        form.get("client_id").cloned().unwrap_or_default(),
                        form.get("client_secret").cloned().unwrap_or_default(),
                    )
                });
                if id != self.client_id || secret != self.client_secret {
                    return oauth_error("invalid_client", "invalid client credentials");
                }
                self.issue(true, None)
            }
            "authorization_code" => self.code_grant(&form),
            "" => oauth_error("unsupported_grant_type", "grant type not supported"),
            _ => oauth_error("unsupported_grant_type", "grant type not supported"),
        }
    }

    fn jwt_grant(&mut self, assertion: &str) -> Reply {
        let Some(key) = &self.jwt_key else {
            return oauth_error("invalid_grant", "invalid assertion");
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        // exp and aud are checked below, against the sim's clock and its own hosts.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let claims = match jsonwebtoken::decode::<JwtClaims>(assertion, key, &validation) {
            Ok(d) => d.claims,
            Err(_) => return oauth_error("invalid_grant", "invalid assertion"),
        };
        if claims.iss.as_deref() != Some(self.client_id.as_str()) {
            return oauth_error("invalid_client_id", "client identifier invalid");
        }
        let auds: Vec<String> = match &claims.aud {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        };
        let accepted = [
            self.login_url.as_str(),
            "https://login.salesforce.com",
            "https://test.salesforce.com",
        ];
        if !auds
            .iter()
            .any(|a| accepted.contains(&a.trim_end_matches('/')))
        {
            return oauth_error("invalid_grant", "audience is invalid");
        }
        match claims.exp {
            Some(exp) if exp > self.now().timestamp() => {}
            _ => return oauth_error("invalid_grant", "expired authorization code"),
        }
        if claims.sub.as_deref() != Some(self.username.as_str()) {
            return oauth_error("invalid_grant", "user hasn't approved this consumer");
        }
        self.issue(false, None)
    }

    fn refresh_grant(&mut self, form: &HashMap<String, String>) -> Reply {
        if form.get("client_id") != Some(&self.client_id) {
            return oauth_error("invalid_client_id", "client identifier invalid");
        }
        if let Some(secret) = form.get("client_secret")
            && *secret != self.client_secret
        {
            return oauth_error("invalid_client", "invalid client credentials");
        }
        let token = form.get("refresh_token").cloned().unwrap_or_default();
        if self.faults.revoke_refresh || !self.refresh_tokens.contains(&token) {
            return oauth_error("invalid_grant", "expired access/refresh token");
        }
        let rotated = if self.faults.rotate_refresh {
            self.refresh_tokens.remove(&token);
            let new = self.next_token("5Aep861");
            self.refresh_tokens.insert(new.clone());
            Some(new)
        } else {
            None
        };
        self.issue(true, rotated)
    }

    fn code_grant(&mut self, form: &HashMap<String, String>) -> Reply {
        if form.get("client_id") != Some(&self.client_id) {
            return oauth_error("invalid_client_id", "client identifier invalid");
        }
        if let Some(secret) = form.get("client_secret")
            && *secret != self.client_secret
        {
            return oauth_error("invalid_client", "invalid client credentials");
        }
        let code = form.get("code").cloned().unwrap_or_default();
        let Some((redirect, challenge)) = self.auth_codes.remove(&code) else {
            return oauth_error("invalid_grant", "invalid authorization code");
        };
        if form.get("redirect_uri") != Some(&redirect) {
            return oauth_error("invalid_grant", "redirect_uri must match configuration");
        }
        if let Some(challenge) = challenge {
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if computed != challenge {
                return oauth_error("invalid_grant", "invalid code verifier");
            }
        }
        let refresh = self.next_token("5Aep861");
        self.refresh_tokens.insert(refresh.clone());
        self.issue(true, Some(refresh))
    }

    /// A successful token response. JWT responses omit `signature` and `issued_at`.
    fn issue(&mut self, signed: bool, refresh_token: Option<String>) -> Reply {
        let suffix = self.next_token("AQ");
        let token = format!("{}!{suffix}", &self.org_id[..15]);
        let now = self.now();
        self.sessions.insert(token.clone(), Session { issued: now });
        let user = self.org.integration_user_id.clone();
        let id = format!("{}/id/{}/{}", self.login_url, self.org_id, user);
        let mut body = json!({
            "access_token": token,
            "scope": "api refresh_token",
            "instance_url": self.instance_url,
            "id": id,
            "token_type": "Bearer",
        });
        if signed {
            let issued_at = now.timestamp_millis().to_string();
            if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.client_secret.as_bytes()) {
                mac.update(format!("{id}{issued_at}").as_bytes());
                body["signature"] = json!(STANDARD.encode(mac.finalize().into_bytes()));
            }
            body["issued_at"] = json!(issued_at);
        }
        if let Some(r) = refresh_token {
            body["refresh_token"] = json!(r);
        }
        (StatusCode::OK, Json(body))
    }

    /// The authorize page. The sim's user approves at once: 302 back to the redirect URI
    /// with a one-time code and the caller's state.
    pub(crate) fn authorize(&mut self, query: &str) -> Response {
        let q: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        if q.get("client_id") != Some(&self.client_id) {
            return (StatusCode::BAD_REQUEST, "error=invalid_client_id").into_response();
        }
        if q.get("response_type").map(String::as_str) != Some("code") {
            return (StatusCode::BAD_REQUEST, "error=unsupported_response_type").into_response();
        }
        let Some(redirect) = q.get("redirect_uri").cloned() else {
            return (StatusCode::BAD_REQUEST, "error=redirect_uri_missing").into_response();
        };
        let code = self.next_token("aPrx");
        self.auth_codes.insert(
            code.clone(),
            (redirect.clone(), q.get("code_challenge").cloned()),
        );
        let mut location = url::Url::parse(&redirect)
            .map(|u| u.to_string())
            .unwrap_or(redirect);
        location.push(if location.contains('?') { '&' } else { '?' });
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        ser.append_pair("code", &code);
        if let Some(s) = q.get("state") {
            ser.append_pair("state", s);
        }
        location.push_str(&ser.finish());
        (StatusCode::FOUND, [("Location", location)]).into_response()
    }

    /// Whether a bearer token names a live session.
    pub(crate) fn session_valid(&mut self, headers: &HeaderMap) -> bool {
        let Some(token) = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("OAuth "))
            })
        else {
            return false;
        };
        let now = self.now();
        let ttl = self.faults.session_ttl;
        match self.sessions.get(token) {
            None => false,
            Some(s) => match ttl {
                Some(ttl) => {
                    now - s.issued
                        < chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
                }
                None => true,
            },
        }
    }
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let raw = STANDARD.decode(v.strip_prefix("Basic ")?).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (id, secret) = s.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}
