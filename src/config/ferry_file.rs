//! ferry.yaml: `${NAME}` / `${file:PATH}` interpolation, connection checks, secrets.

use super::at::{At, Pos};
use super::diagnostic::Code;
use super::diagnostic::{Diagnostics, Problem, SourceFile};
use super::model::*;
use super::spec::{AuthSpec, ConnectionSpec, FerryConfigSpec};
use std::path::Path;
use std::sync::Arc;

/// Reads an environment variable (injectable so tests need not touch the process env).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(crate) struct FerryFileResolver<'a> {
    pub file: &'a SourceFile,
    pub root: &'a Path,
    pub env: EnvLookup<'a>,
    pub diags: &'a mut Diagnostics,
    /// Files `${file:...}` values were read from.
    pub read: Vec<std::path::PathBuf>,
}

/// Byte offset of a scalar's content (after an opening quote).
pub(crate) fn content_offset(file: &SourceFile, pos: Pos) -> usize {
    let off = file.offset_of(pos.line, pos.column);
    match file.text[off..].chars().next() {
        Some('"') | Some('\'') => off + 1,
        _ => off,
    }
}

impl FerryFileResolver<'_> {
    fn display(&self) -> Arc<str> {
        self.file.display.as_str().into()
    }

    fn pos(&self, p: Pos) -> SourcePos {
        SourcePos {
            file: self.display(),
            line: p.line,
            column: p.column,
        }
    }

    /// Expands `${NAME}` and `${file:PATH}` in a string value; every missing variable or
    /// file is a problem at its own column.
    pub fn interpolate(&mut self, s: &At<String>) -> Option<String> {
        let text = &s.value;
        let base = content_offset(self.file, s.pos);
        let mut out = String::new();
        let mut ok = true;
        let mut rest = 0;
        while let Some(i) = text[rest..].find("${") {
            let start = rest + i;
            out.push_str(&text[rest..start]);
            let Some(close) = text[start..].find('}') else {
                self.diags.push(
                    Problem::at(
                        self.file,
                        Code::Interpolation,
                        base + start,
                        2,
                        "`${` without a closing `}`",
                    )
                    .label("opened here")
                    .help(
                        "write `${NAME}` for an environment variable or `${file:PATH}` for a file",
                    ),
                );
                return None;
            };
            let inner = &text[start + 2..start + close];
            let span = (base + start, close + 1);
            if let Some(path) = inner.strip_prefix("file:") {
                let full = self.root.join(path.trim());
                if !self.read.contains(&full) {
                    self.read.push(full.clone());
                }
                match std::fs::read_to_string(&full) {
                    Ok(content) => {
                        let content = content.strip_suffix('\n').unwrap_or(&content);
                        let content = content.strip_suffix('\r').unwrap_or(content);
                        out.push_str(content);
                    }
                    Err(e) => {
                        ok = false;
                        self.diags.push(
                            Problem::at(
                                self.file,
                                Code::MissingFile,
                                span.0,
                                span.1,
                                format!("cannot read `{}`: {}", path.trim(), io_reason(&e)),
                            )
                            .label("file not readable")
                            .help("paths in `${file:...}` are relative to ferry.yaml"),
                        );
                    }
                }
            } else {
                // `${NAME:-default}`: the default when NAME is unset, as in a shell.
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n.trim(), Some(d)),
                    None => (inner.trim(), None),
                };
                let valid =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    ok = false;
                    self.diags.push(
                        Problem::at(
                            self.file,
                            Code::Interpolation,
                            span.0,
                            span.1,
                            format!(
                                "`{}` is not a variable name",
                                &text[start..start + close + 1]
                            ),
                        )
                        .label("here")
                        .help("write `${NAME}` (letters, digits, _) or `${file:PATH}`"),
                    );
                } else {
                    match (self.env)(name) {
                        Some(v) => out.push_str(&v),
                        None if default.is_some() => out.push_str(default.unwrap_or_default()),
                        None => {
                            ok = false;
                            self.diags.push(
                                Problem::at(
                                    self.file,
                                    Code::MissingEnv,
                                    span.0,
                                    span.1,
                                    format!("environment variable `{name}` is not set"),
                                )
                                .label("not set")
                                .help(format!(
                                    "set {name} in the environment ferry runs in, give a default with `${{{name}:-value}}`, or use `${{file:PATH}}`"
                                )),
                            );
                        }
                    }
                }
            }
            rest = start + close + 1;
        }
        out.push_str(&text[rest..]);
        ok.then_some(out)
    }

    /// A secret value: interpolated, and a warning when written inline.
    fn secret(&mut self, s: &At<String>, key: &str) -> Option<Secret> {
        if !s.value.contains("${") && !s.value.is_empty() {
            self.diags.push(
                Problem::at_pos(
                    self.file,
                    Code::InlineSecret,
                    s.pos,
                    format!("`{key}` is written inline"),
                )
                .warning()
                .label("a secret in clear text")
                .help(format!(
                    "read it from the environment (`${{{}}}`) or a file (`${{file:secrets/...}}`)",
                    key.to_ascii_uppercase()
                )),
            );
        }
        self.interpolate(s).map(Secret::new)
    }

    fn string(&mut self, s: &Option<At<String>>) -> Option<Option<String>> {
        match s {
            None => Some(None),
            Some(s) => self.interpolate(s).map(Some),
        }
    }

    fn url(&mut self, s: &Option<At<String>>, default: &str) -> Option<String> {
        let v = self.string(s)?;
        match v {
            None => Some(default.to_string()),
            Some(u) => {
                if let Some(at) = s
                    && url::Url::parse(&u).is_err()
                {
                    self.diags.push(
                        Problem::at_pos(
                            self.file,
                            Code::BadUrl,
                            at.pos,
                            format!("`{u}` is not a URL"),
                        )
                        .label("not a URL")
                        .help("write an absolute URL like https://api.zoom.us/v2"),
                    );
                    return None;
                }
                Some(u.trim_end_matches('/').to_string())
            }
        }
    }

    fn not_for_kind(&mut self, pos: Pos, key: &str, kind: ConnectionKind) {
        let other = match kind {
            ConnectionKind::Zoom => "salesforce",
            ConnectionKind::Salesforce => "zoom",
        };
        self.diags.push(
            Problem::at_pos(
                self.file,
                Code::WrongKindOption,
                pos,
                format!(
                    "`{key}` is a {other} option; this connection is `kind: {}`",
                    kind.as_str()
                ),
            )
            .label("not for this kind")
            .help(format!("remove `{key}`, or change `kind`")),
        );
    }

    fn required<'s>(
        &mut self,
        v: &'s Option<At<String>>,
        key: &str,
        auth_pos: Pos,
        auth_type: AuthType,
    ) -> Option<&'s At<String>> {
        if v.is_none() {
            self.diags.push(
                Problem::at_pos(
                    self.file,
                    Code::MissingKey,
                    auth_pos,
                    format!("auth `type: {}` needs `{key}`", auth_type.as_str()),
                )
                .label("in this auth block")
                .help(format!("add `{key}: ${{...}}`")),
            );
        }
        v.as_ref()
    }

    pub fn resolve(&mut self, spec: &FerryConfigSpec) -> Option<FerryConfig> {
        let mut ok = true;
        let mut connections = Vec::new();
        for (name, c) in spec.connections.iter() {
            match self.connection(name, c) {
                Some(conn) => connections.push(conn),
                None => ok = false,
            }
        }
        let state = match &spec.state {
            Some(s) => match self.interpolate(s) {
                // A database URL is kept as it is (a secret: shown only without its password).
                Some(p) if crate::state::is_postgres_url(&p) => std::path::PathBuf::from(p.trim()),
                Some(p) => self.root.join(p),
                None => {
                    ok = false;
                    self.root.join(DEFAULT_STATE)
                }
            },
            None => self.root.join(DEFAULT_STATE),
        };
        let listen = match spec.daemon.as_ref().and_then(|d| d.listen.as_ref()) {
            Some(l) => match self.interpolate(l) {
                Some(v) if v.parse::<std::net::SocketAddr>().is_ok() => v,
                Some(v) => {
                    ok = false;
                    self.diags.push(
                        Problem::at_pos(
                            self.file,
                            Code::BadAddress,
                            l.pos,
                            format!("`{v}` is not an address to listen on"),
                        )
                        .label("not host:port")
                        .help("write an IP address and a port, like 127.0.0.1:8787"),
                    );
                    v
                }
                None => {
                    ok = false;
                    String::new()
                }
            },
            None => DEFAULT_LISTEN.to_string(),
        };
        let api_token = match spec.daemon.as_ref().and_then(|d| d.api_token.as_ref()) {
            Some(t) => {
                let v = self.secret(t, "api_token");
                if v.as_ref().is_some_and(|v| v.expose().trim().is_empty()) {
                    // An empty token would refuse every request without saying why.
                    ok = false;
                    self.diags.push(
                        Problem::at_pos(
                            self.file,
                            Code::EmptySecret,
                            t.pos,
                            "`daemon.api_token` is empty",
                        )
                        .label("no token")
                        .help("give the token (from a file or the environment), or remove `api_token` to turn the run endpoint off"),
                    );
                }
                ok &= v.is_some();
                v
            }
            None => None,
        };
        let mut public_host = Vec::new();
        if let Some(h) = spec.daemon.as_ref().and_then(|d| d.public_host.as_ref()) {
            for name in h.value.items() {
                match public_host_name(name) {
                    Some(n) => public_host.push(n),
                    None => {
                        ok = false;
                        self.diags.push(
                            Problem::at_pos(
                                self.file,
                                Code::BadPublicHost,
                                h.pos,
                                format!("`{name}` is not a host name for daemon.public_host"),
                            )
                            .label("not a host name")
                            .help("write the name clients use, without scheme or path, like ferry.example.com or ferry.example.com:8443"),
                        );
                    }
                }
            }
        }
        let settings = spec
            .settings
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        ok.then(|| FerryConfig {
            file: self.file.path.clone(),
            state,
            connections,
            settings,
            daemon: Daemon {
                listen,
                api_token,
                public_host,
            },
        })
    }

    fn connection(&mut self, name: &At<String>, c: &ConnectionSpec) -> Option<Connection> {
        let kind = c.kind.value;
        let pos = self.pos(name.pos);
        let mut ok = true;
        match kind {
            ConnectionKind::Zoom => {
                for (v, key) in [(&c.api_version.as_ref().map(|a| a.pos), "api_version")] {
                    if let Some(p) = v {
                        self.not_for_kind(*p, key, kind);
                        ok = false;
                    }
                }
                if let Some(b) = &c.daily_budget {
                    self.not_for_kind(b.pos, "daily_budget", kind);
                    ok = false;
                }
                if let Some(b) = &c.max_request_bytes {
                    self.not_for_kind(b.pos, "max_request_bytes", kind);
                    ok = false;
                }
            }
            ConnectionKind::Salesforce => {
                let zoom_only = [
                    c.plan.as_ref().map(|a| (a.pos, "plan")),
                    c.headroom.as_ref().map(|a| (a.pos, "headroom")),
                    c.webhook_secret.as_ref().map(|a| (a.pos, "webhook_secret")),
                    c.base_url.as_ref().map(|a| (a.pos, "base_url")),
                    c.token_url.as_ref().map(|a| (a.pos, "token_url")),
                ];
                for (p, key) in zoom_only.into_iter().flatten() {
                    self.not_for_kind(p, key, kind);
                    ok = false;
                }
            }
        }
        let Some(auth) = &c.auth else {
            self.diags.push(
                Problem::at_pos(
                    self.file,
                    Code::MissingKey,
                    name.pos,
                    format!("connection `{}` has no `auth`", name.value),
                )
                .label("this connection")
                .help(match kind {
                    ConnectionKind::Zoom => "add `auth: {type: server_to_server, account_id: ..., client_id: ..., client_secret: ...}`",
                    ConnectionKind::Salesforce => "add `auth: {type: jwt_bearer, client_id: ..., username: ..., private_key: ...}`",
                }),
            );
            return None;
        };
        let max_wait = match &c.max_wait {
            Some(w) => match super::model::parse_duration(&w.value) {
                Ok(d) => d,
                Err(e) => {
                    self.diags.push(
                        Problem::at_pos(self.file, Code::BadDuration, w.pos, e.to_string())
                            .label("not a duration")
                            .help("like 5m: the longest wait the service may ask for that ferry sleeps through"),
                    );
                    ok = false;
                    crate::http::DEFAULT_MAX_WAIT
                }
            },
            None => crate::http::DEFAULT_MAX_WAIT,
        };
        let settings = match kind {
            ConnectionKind::Zoom => {
                let auth = self.zoom_auth(auth);
                let headroom = match &c.headroom {
                    Some(h) if !(h.value > 0.0 && h.value <= 1.0) => {
                        self.diags.push(
                            Problem::at_pos(
                                self.file,
                                Code::OutOfRange,
                                h.pos,
                                format!("headroom {} is outside (0, 1]", h.value),
                            )
                            .label("out of range")
                            .help("0.8 spends at most 80% of the published limits"),
                        );
                        ok = false;
                        1.0
                    }
                    Some(h) => h.value,
                    None => 0.8,
                };
                let webhook_secret = match &c.webhook_secret {
                    Some(s) => {
                        let v = self.secret(s, "webhook_secret");
                        ok &= v.is_some();
                        v
                    }
                    None => None,
                };
                let base_url = self.url(&c.base_url, DEFAULT_ZOOM_BASE_URL);
                let token_url = self.url(&c.token_url, DEFAULT_ZOOM_TOKEN_URL);
                ConnectionSettings::Zoom(ZoomConnection {
                    auth: auth?,
                    plan: c.plan.as_ref().map(|p| p.value).unwrap_or(ZoomPlan::Pro),
                    headroom,
                    webhook_secret,
                    base_url: base_url?,
                    token_url: token_url?,
                    max_wait,
                })
            }
            ConnectionKind::Salesforce => {
                let login_url = self.url(&auth.login_url, DEFAULT_SF_LOGIN_URL);
                let auth = self.salesforce_auth(auth);
                let daily_budget = match &c.daily_budget {
                    Some(b) if b.value == 0 => {
                        self.diags.push(
                            Problem::at_pos(
                                self.file,
                                Code::OutOfRange,
                                b.pos,
                                "a daily budget of 0 allows no API calls",
                            )
                            .label("zero")
                            .help("leave `daily_budget` out for no budget of ferry's own"),
                        );
                        ok = false;
                        None
                    }
                    Some(b) => Some(b.value),
                    None => None,
                };
                let max_request_bytes = match &c.max_request_bytes {
                    Some(b) if !(1024..=16_384).contains(&b.value) => {
                        self.diags.push(
                            Problem::at_pos(
                                self.file,
                                Code::OutOfRange,
                                b.pos,
                                format!(
                                    "max_request_bytes must be between 1024 and 16384, not {}",
                                    b.value
                                ),
                            )
                            .label("out of range")
                            .help("Salesforce refuses requests whose URI and headers pass 16,384 bytes; leave it out for 15,360"),
                        );
                        ok = false;
                        None
                    }
                    Some(b) => usize::try_from(b.value).ok(),
                    None => None,
                };
                let api_version = c
                    .api_version
                    .as_ref()
                    .map(|v| v.value.0.trim_start_matches('v').to_string())
                    .unwrap_or_else(|| DEFAULT_SF_API_VERSION.to_string());
                if let Some(v) = &c.api_version
                    && api_version.parse::<f64>().is_err()
                {
                    self.diags.push(
                        Problem::at_pos(
                            self.file,
                            Code::BadApiVersion,
                            v.pos,
                            format!("`{}` is not a Salesforce API version", v.value.0),
                        )
                        .label("not a version")
                        .help("write it quoted, like \"62.0\""),
                    );
                    ok = false;
                }
                ConnectionSettings::Salesforce(SalesforceConnection {
                    auth: auth?,
                    login_url: login_url?,
                    api_version,
                    daily_budget,
                    max_wait,
                    max_request_bytes,
                })
            }
        };
        ok.then(|| Connection {
            name: name.value.clone(),
            settings,
            pos,
        })
    }

    fn unused_auth_keys(&mut self, a: &AuthSpec, allowed: &[&str]) -> bool {
        let present = [
            ("account_id", a.account_id.as_ref()),
            ("client_id", a.client_id.as_ref()),
            ("client_secret", a.client_secret.as_ref()),
            ("refresh_token", a.refresh_token.as_ref()),
            ("redirect_uri", a.redirect_uri.as_ref()),
            ("login_url", a.login_url.as_ref()),
            ("username", a.username.as_ref()),
            ("private_key", a.private_key.as_ref()),
        ];
        let mut ok = true;
        for (key, v) in present {
            if let Some(v) = v
                && !allowed.contains(&key)
            {
                ok = false;
                self.diags.push(
                    Problem::at_pos(
                        self.file,
                        Code::WrongAuthOption,
                        v.pos,
                        format!(
                            "`{key}` does not apply to auth `type: {}`",
                            a.type_.value.as_str()
                        ),
                    )
                    .label("not used by this auth type")
                    .help(format!("keys for this type: {}", allowed.join(", "))),
                );
            }
        }
        ok
    }

    fn zoom_auth(&mut self, auth: &At<AuthSpec>) -> Option<ZoomAuth> {
        let a = &auth.value;
        let t = a.type_.value;
        match t {
            AuthType::ServerToServer => {
                let ok = self.unused_auth_keys(a, &["account_id", "client_id", "client_secret"]);
                let account_id = self.required(&a.account_id, "account_id", auth.pos, t);
                let client_id = self.required(&a.client_id, "client_id", auth.pos, t);
                let client_secret = self.required(&a.client_secret, "client_secret", auth.pos, t);
                let (account_id, client_id, client_secret) = (
                    account_id?.clone(),
                    client_id?.clone(),
                    client_secret?.clone(),
                );
                let account_id = self.interpolate(&account_id).map(Secret::new);
                let client_id = self.interpolate(&client_id).map(Secret::new);
                let client_secret = self.secret(&client_secret, "client_secret");
                ok.then_some(())?;
                Some(ZoomAuth::ServerToServer {
                    account_id: account_id?,
                    client_id: client_id?,
                    client_secret: client_secret?,
                })
            }
            AuthType::Oauth => {
                let ok = self.unused_auth_keys(
                    a,
                    &[
                        "client_id",
                        "client_secret",
                        "refresh_token",
                        "redirect_uri",
                    ],
                );
                let client_id = self
                    .required(&a.client_id, "client_id", auth.pos, t)
                    .cloned();
                let client_secret = self
                    .required(&a.client_secret, "client_secret", auth.pos, t)
                    .cloned();
                let client_id = self.interpolate(&client_id?).map(Secret::new);
                let client_secret = self.secret(&client_secret?, "client_secret");
                let refresh_token = match &a.refresh_token {
                    Some(r) => Some(self.secret(r, "refresh_token")?),
                    None => None,
                };
                let redirect_uri = self.string(&a.redirect_uri)?;
                ok.then_some(())?;
                Some(ZoomAuth::OAuth {
                    client_id: client_id?,
                    client_secret: client_secret?,
                    refresh_token,
                    redirect_uri,
                })
            }
            other => {
                self.diags.push(
                    Problem::at_pos(
                        self.file,
                        Code::WrongAuthType,
                        a.type_.pos,
                        format!(
                            "`{}` is a Salesforce auth type; Zoom uses server_to_server or oauth",
                            other.as_str()
                        ),
                    )
                    .label("not a Zoom auth type")
                    .help("write `type: server_to_server` (or `oauth`)"),
                );
                None
            }
        }
    }

    fn salesforce_auth(&mut self, auth: &At<AuthSpec>) -> Option<SalesforceAuth> {
        let a = &auth.value;
        let t = a.type_.value;
        match t {
            AuthType::JwtBearer => {
                let ok = self
                    .unused_auth_keys(a, &["login_url", "client_id", "username", "private_key"]);
                let client_id = self
                    .required(&a.client_id, "client_id", auth.pos, t)
                    .cloned();
                let username = self.required(&a.username, "username", auth.pos, t).cloned();
                let private_key = self
                    .required(&a.private_key, "private_key", auth.pos, t)
                    .cloned();
                let client_id = self.interpolate(&client_id?).map(Secret::new);
                let username = self.interpolate(&username?);
                let private_key = self.secret(&private_key?, "private_key");
                ok.then_some(())?;
                Some(SalesforceAuth::JwtBearer {
                    client_id: client_id?,
                    username: username?,
                    private_key: private_key?,
                })
            }
            AuthType::RefreshToken => {
                let ok = self.unused_auth_keys(
                    a,
                    &[
                        "login_url",
                        "client_id",
                        "client_secret",
                        "refresh_token",
                        "redirect_uri",
                    ],
                );
                let client_id = self
                    .required(&a.client_id, "client_id", auth.pos, t)
                    .cloned();
                let client_id = self.interpolate(&client_id?).map(Secret::new);
                let client_secret = match &a.client_secret {
                    Some(s) => Some(self.secret(s, "client_secret")?),
                    None => None,
                };
                let refresh_token = match &a.refresh_token {
                    Some(s) => Some(self.secret(s, "refresh_token")?),
                    None => None,
                };
                let redirect_uri = self.string(&a.redirect_uri)?;
                ok.then_some(())?;
                Some(SalesforceAuth::RefreshToken {
                    client_id: client_id?,
                    client_secret,
                    refresh_token,
                    redirect_uri,
                })
            }
            AuthType::ClientCredentials => {
                let ok = self.unused_auth_keys(a, &["login_url", "client_id", "client_secret"]);
                let client_id = self
                    .required(&a.client_id, "client_id", auth.pos, t)
                    .cloned();
                let client_secret = self
                    .required(&a.client_secret, "client_secret", auth.pos, t)
                    .cloned();
                let client_id = self.interpolate(&client_id?).map(Secret::new);
                let client_secret = self.secret(&client_secret?, "client_secret");
                ok.then_some(())?;
                Some(SalesforceAuth::ClientCredentials {
                    client_id: client_id?,
                    client_secret: client_secret?,
                })
            }
            other => {
                self.diags.push(
                    Problem::at_pos(
                        self.file,
                        Code::WrongAuthType,
                        a.type_.pos,
                        format!(
                            "`{}` is a Zoom auth type; Salesforce uses jwt_bearer, refresh_token or client_credentials",
                            other.as_str()
                        ),
                    )
                    .label("not a Salesforce auth type")
                    .help("write `type: jwt_bearer` (or `refresh_token`, `client_credentials`)"),
                );
                None
            }
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// A `daemon.public_host` entry as the daemon compares it with a Host header: lowercase,
/// without a trailing dot; None when it is not a host name (with an optional port).
pub(crate) fn public_host_name(s: &str) -> Option<String> {
    let s = s.trim().to_ascii_lowercase();
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
        _ => (s.as_str(), None),
    };
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return None;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let ok = !host.is_empty()
        && host.len() <= 253
        && (host.starts_with('[') && host.ends_with(']')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
    ok.then(|| match port {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    })
}

#[cfg(test)]
mod public_host_tests {
    use super::public_host_name;

    #[test]
    fn public_host_names_are_normalised_and_checked() {
        assert_eq!(
            public_host_name("Ferry.Example.com."),
            Some("ferry.example.com".into())
        );
        assert_eq!(
            public_host_name("ferry.example.com:8443"),
            Some("ferry.example.com:8443".into())
        );
        assert_eq!(public_host_name("[::1]:8787"), Some("[::1]:8787".into()));
        assert_eq!(public_host_name("https://ferry.example.com"), None);
        assert_eq!(public_host_name("ferry.example.com/path"), None);
        assert_eq!(public_host_name("ferry.example.com:99999"), None);
        assert_eq!(public_host_name(""), None);
    }
}
