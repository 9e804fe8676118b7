//! Provider adapters: one module per wire format.
//!
//! Each adapter turns a [`ChatRequest`] into its provider's HTTP request,
//! sends it with the key in the header its provider documents (never in a
//! URL), parses the reply and its usage by that provider's own rules, and maps
//! failures to [`ProviderError`] with the provider's text sanitised.
//!
//! Calls go through [`complete`] (one reply) or [`stream`] (a
//! [`ProviderStream`] of deltas); [`transport`] holds what both share:
//! timeouts, the size cap and retries. Streams are read with the
//! [`sse`] parser. The development emulator that speaks these formats on
//! loopback lives in [`dev`].

pub mod anthropic;
pub mod dev;
#[cfg(test)]
mod fixtures;
pub mod gemini;
pub mod openai;
mod redact;
pub mod sse;
pub mod stream;
pub mod transport;
mod types;

pub use redact::{StreamScrubber, sanitise, scrub};
pub use stream::{Partial, ProviderStream, StreamEvent, ToolCallDelta};
pub use transport::{
    MAX_RESPONSE_BYTES, MAX_RETRY_AFTER, OptionError, ProviderOptions, http_client,
};

pub use types::{
    ChatRequest, Completion, FinishReason, Message, Role, ToolCall, ToolDefinition, Usage,
};

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;
use url::Url;

use crate::vault::ProviderSecret;

/// The wire format a key speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini generateContent.
    Gemini,
    /// Any server speaking Chat Completions (Ollama, vLLM, OpenRouter, Groq,
    /// Together, Azure OpenAI deployments), with its path and auth header
    /// set per key.
    OpenAiCompatible,
}

impl ProviderKind {
    /// The name used on the command line and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::OpenAiCompatible => "openai-compatible",
        }
    }

    /// The official base URL, written the way the provider's SDK takes it;
    /// `None` for `openai-compatible`, whose keys must name their server.
    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::OpenAiCompatible => None,
        }
    }

    /// The provider name of the OpenTelemetry GenAI conventions.
    pub fn otel_name(self) -> &'static str {
        match self {
            ProviderKind::Gemini => "gcp.gemini",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider kind name that clawrun does not speak.
#[derive(Debug, thiserror::Error)]
#[error("unknown provider `{0}`: use `openai`, `anthropic`, `gemini` or `openai-compatible`")]
pub struct UnknownProvider(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "openai" => Ok(ProviderKind::OpenAi),
            "anthropic" => Ok(ProviderKind::Anthropic),
            "gemini" => Ok(ProviderKind::Gemini),
            "openai-compatible" => Ok(ProviderKind::OpenAiCompatible),
            other => Err(UnknownProvider(other.to_owned())),
        }
    }
}

/// A base URL that may not carry a key.
#[derive(Debug, thiserror::Error)]
pub enum BaseUrlError {
    /// Not a URL.
    #[error("base URL `{0}` is not a valid URL")]
    Invalid(String),
    /// Plain HTTP to a host that is not loopback.
    #[error("base URL must use https (plain http is allowed only for loopback addresses)")]
    NotHttps,
    /// Carries a user name or password.
    #[error("base URL must not contain a user name or password")]
    Userinfo,
    /// Carries a query or fragment.
    #[error("base URL must not contain a query or fragment")]
    QueryOrFragment,
}

/// Checks a key's base URL: https, or http to a loopback address; no
/// userinfo, query or fragment. A trailing `/` is dropped.
///
/// # Errors
///
/// A [`BaseUrlError`] naming what to change.
pub fn validate_base_url(text: &str) -> Result<Url, BaseUrlError> {
    let url =
        Url::parse(text.trim_end_matches('/')).map_err(|_| BaseUrlError::Invalid(text.into()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(BaseUrlError::Userinfo);
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(BaseUrlError::QueryOrFragment);
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => return Err(BaseUrlError::Invalid(text.into())),
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(BaseUrlError::NotHttps),
    }
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// 401: the provider refused the key.
    Unauthorized,
    /// 403: the key may not use this resource.
    Forbidden,
    /// 404: unknown model or path.
    NotFound,
    /// 400 or 422: the provider rejected the request itself.
    BadRequest,
    /// 429: rate limited or out of quota.
    RateLimited {
        /// How long the provider asked to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// 529 (Anthropic): overloaded.
    Overloaded,
    /// 5xx.
    Server,
    /// Any other status.
    OtherStatus,
    /// The provider answered, but not in its documented format.
    BadResponse,
    /// The provider did not answer in time.
    Timeout,
    /// No connection could be made, or it broke.
    Connect,
}

/// A failed provider call, with a sanitised message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderError {
    /// What happened.
    pub kind: ProviderErrorKind,
    /// HTTP status, or 0 when there was none.
    pub status: u16,
    /// The provider's text or ours, without key material, at most 300 chars.
    pub message: String,
}

impl ProviderError {
    /// The same error with any trace of `secret` removed from its message.
    pub fn sanitised(mut self, secret: &ProviderSecret) -> Self {
        self.message = sanitise(&self.message, secret);
        self
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.status == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "status {}: {}", self.status, self.message)
        }
    }
}

impl std::error::Error for ProviderError {}

impl ProviderError {
    pub(crate) fn new(kind: ProviderErrorKind, status: u16, message: impl Into<String>) -> Self {
        Self {
            kind,
            status,
            message: message.into(),
        }
    }

    /// The error for a non-success HTTP status, with the provider's message
    /// taken from its JSON error body when it has one.
    fn from_status(status: u16, headers: &HeaderMap, body: &[u8], secret: &ProviderSecret) -> Self {
        let text = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        let kind = match status {
            400 | 422 => ProviderErrorKind::BadRequest,
            401 => ProviderErrorKind::Unauthorized,
            403 => ProviderErrorKind::Forbidden,
            404 => ProviderErrorKind::NotFound,
            429 => ProviderErrorKind::RateLimited {
                retry_after: transport::retry_after(headers),
            },
            529 => ProviderErrorKind::Overloaded,
            500..=599 => ProviderErrorKind::Server,
            _ => ProviderErrorKind::OtherStatus,
        };
        Self::new(kind, status, sanitise(&text, secret))
    }

    fn bad_response(what: impl fmt::Display) -> Self {
        Self::new(
            ProviderErrorKind::BadResponse,
            0,
            format!("the provider's answer could not be read: {what}"),
        )
    }

    fn timeout() -> Self {
        Self::new(
            ProviderErrorKind::Timeout,
            0,
            "the provider did not answer in time",
        )
    }

    fn too_large(cap: usize) -> Self {
        Self::bad_response(format!(
            "larger than {cap} bytes (raise CLAWRUN_MAX_RESPONSE_BYTES to allow more)"
        ))
    }

    fn transport(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::timeout()
        } else {
            // reqwest's own text can include the URL but never headers.
            Self::new(
                ProviderErrorKind::Connect,
                0,
                "could not reach the provider",
            )
        }
    }
}

/// Where and how a key's requests are sent: host configuration, fixed
/// when the key is added, never chosen by a guest.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Wire format.
    pub kind: ProviderKind,
    /// Base URL, checked by [`validate_base_url`].
    pub base_url: Url,
    /// Path and auth header of an `openai-compatible` key.
    pub compatible: CompatibleConfig,
}

impl Endpoint {
    /// An endpoint of `kind` at `base_url`, with the default path and auth
    /// header.
    pub fn new(kind: ProviderKind, base_url: Url) -> Self {
        Self {
            kind,
            base_url,
            compatible: CompatibleConfig::default(),
        }
    }
}

/// How an `openai-compatible` server wants to be called. Every field
/// defaults to what OpenAI itself does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompatibleConfig {
    /// Path after the base URL, with an optional query (Azure's
    /// `?api-version=`); default `/chat/completions`.
    pub path: Option<String>,
    /// Header carrying the key; default `authorization`.
    pub auth_header: Option<String>,
    /// Word before the key in that header; default `Bearer` for
    /// `authorization` and nothing for any other header. `none` sends the
    /// bare key.
    pub auth_scheme: Option<String>,
}

/// Headers a key's configuration may not take over.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
    "accept",
    "accept-encoding",
];

impl CompatibleConfig {
    /// Checks the configuration.
    ///
    /// # Errors
    ///
    /// A sentence naming the field and what to change.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(path) = &self.path {
            let ok = path.starts_with('/')
                && !path.contains('#')
                && !path.contains("..")
                && !path.chars().any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(format!(
                    "--path `{path}` must start with `/` and have no spaces, `..` or `#` \
                     (for example `/chat/completions?api-version=2024-10-21`)"
                ));
            }
        }
        if let Some(header) = &self.auth_header {
            let lower = header.to_ascii_lowercase();
            let token = !header.is_empty()
                && header
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
            if !token || RESERVED_HEADERS.contains(&lower.as_str()) {
                return Err(format!(
                    "--auth-header `{header}` cannot carry a key: use a header name such as \
                     `authorization` or `api-key`"
                ));
            }
        }
        if let Some(scheme) = &self.auth_scheme
            && (scheme.is_empty()
                || !scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)))
        {
            return Err(format!(
                "--auth-scheme `{scheme}` must be one word like `Bearer`, or `none` for the bare key"
            ));
        }
        Ok(())
    }

    fn auth_header(&self) -> String {
        self.auth_header
            .as_deref()
            .unwrap_or("authorization")
            .to_ascii_lowercase()
    }

    fn auth_scheme(&self) -> Option<&str> {
        match self.auth_scheme.as_deref() {
            Some(s) if s.eq_ignore_ascii_case("none") => None,
            Some(s) => Some(s),
            None if self.auth_header() == "authorization" => Some("Bearer"),
            None => None,
        }
    }

    fn url(&self, base: &Url) -> Url {
        let path = self.path.as_deref().unwrap_or("/chat/completions");
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let mut url = endpoint(base, path.trim_start_matches('/'));
        url.set_query(query);
        url
    }
}

/// The request for `request` in `endpoint`'s wire format.
fn prepare(
    endpoint: &Endpoint,
    secret: &ProviderSecret,
    request: &ChatRequest,
    stream: bool,
) -> Result<transport::Prepared, ProviderError> {
    match endpoint.kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
            openai::prepare(endpoint, secret, request, stream)
        }
        ProviderKind::Anthropic => anthropic::prepare(endpoint, secret, request, stream),
        ProviderKind::Gemini => gemini::prepare(endpoint, secret, request, stream),
    }
}

/// Calls the provider at `endpoint` with `secret` for one whole reply,
/// retrying refusals within `options`' deadline.
///
/// # Errors
///
/// A [`ProviderError`] for every failure, its message sanitised.
pub async fn complete(
    http: &reqwest::Client,
    options: &ProviderOptions,
    endpoint: &Endpoint,
    secret: &ProviderSecret,
    request: &ChatRequest,
) -> Result<Completion, ProviderError> {
    let deadline = Instant::now() + options.call_deadline;
    let answer = async {
        let prepared = prepare(endpoint, secret, request, false)?;
        let response = transport::send(http, options, &prepared, secret, deadline).await?;
        let body = transport::read_body(response, options, deadline).await?;
        match endpoint.kind {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => openai::parse_response(&body),
            ProviderKind::Anthropic => anthropic::parse_response(&body),
            ProviderKind::Gemini => gemini::parse_response(&body),
        }
    };
    // Every error is sanitised here, whichever path built it (an error
    // object inside a 200 answer, say), and every answer scrubbed.
    let mut done = answer.await.map_err(|e| e.sanitised(secret))?;
    scrub_completion(&mut done, secret);
    Ok(done)
}

/// Starts a streamed reply from the provider at `endpoint`, retrying
/// refusals that come before the stream starts. The stream must be read
/// within `options`' deadline, counted from now.
///
/// # Errors
///
/// As [`complete`], for the part before the stream starts.
pub async fn stream(
    http: &reqwest::Client,
    options: &ProviderOptions,
    endpoint: &Endpoint,
    secret: &ProviderSecret,
    request: &ChatRequest,
) -> Result<ProviderStream, ProviderError> {
    let deadline = Instant::now() + options.call_deadline;
    let prepared = prepare(endpoint, secret, request, true).map_err(|e| e.sanitised(secret))?;
    let response = transport::send(http, options, &prepared, secret, deadline)
        .await
        .map_err(|e| e.sanitised(secret))?;
    Ok(ProviderStream::new(
        response,
        stream::decoder_for(endpoint.kind),
        options,
        deadline,
    ))
}

/// Replaces the key, wherever a reply echoes it verbatim.
pub fn scrub_completion(done: &mut Completion, secret: &ProviderSecret) {
    scrub(&mut done.message.content, secret);
    for call in &mut done.message.tool_calls {
        scrub(&mut call.arguments, secret);
        scrub(&mut call.id, secret);
        scrub(&mut call.name, secret);
    }
    scrub(&mut done.model, secret);
    let mut raw = done.raw_usage.to_string();
    if raw.contains(secret.expose()) {
        scrub(&mut raw, secret);
        done.raw_usage = serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null);
    }
}

/// Joins `path` onto a base URL whose own path is kept (OpenAI's base ends
/// in `/v1`).
fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let joined = format!("{}/{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn base_urls_must_be_https_unless_loopback() {
        assert!(validate_base_url("https://api.openai.com/v1").is_ok());
        assert!(validate_base_url("http://127.0.0.1:8080/v1").is_ok());
        assert!(validate_base_url("http://localhost:8080").is_ok());
        assert!(validate_base_url("http://[::1]:8080").is_ok());
        assert!(matches!(
            validate_base_url("http://api.openai.com/v1"),
            Err(BaseUrlError::NotHttps)
        ));
        assert!(matches!(
            validate_base_url("https://u:p@api.openai.com"),
            Err(BaseUrlError::Userinfo)
        ));
        assert!(matches!(
            validate_base_url("https://x.com/v1?k=1"),
            Err(BaseUrlError::QueryOrFragment)
        ));
        assert!(matches!(
            validate_base_url("ftp://x.com"),
            Err(BaseUrlError::NotHttps)
        ));
        assert!(validate_base_url("not a url").is_err());
    }

    #[test]
    fn endpoint_keeps_the_base_path() {
        let base = validate_base_url("https://api.openai.com/v1/").expect("valid");
        assert_eq!(
            endpoint(&base, "chat/completions").as_str(),
            "https://api.openai.com/v1/chat/completions"
        );
        let base = validate_base_url("https://api.anthropic.com").expect("valid");
        assert_eq!(
            endpoint(&base, "v1/messages").as_str(),
            "https://api.anthropic.com/v1/messages"
        );
    }

    #[test]
    fn statuses_map_to_their_error_kinds_with_the_provider_message() {
        let secret = ProviderSecret::new("sk-test-0000000000000000".into());
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        let openai =
            br#"{"error":{"message":"You exceeded your quota","type":"insufficient_quota"}}"#;
        let anthropic =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let cases = [
            (400, ProviderErrorKind::BadRequest),
            (401, ProviderErrorKind::Unauthorized),
            (403, ProviderErrorKind::Forbidden),
            (404, ProviderErrorKind::NotFound),
            (422, ProviderErrorKind::BadRequest),
            (
                429,
                ProviderErrorKind::RateLimited {
                    retry_after: Some(Duration::from_secs(3)),
                },
            ),
            (500, ProviderErrorKind::Server),
            (503, ProviderErrorKind::Server),
            (529, ProviderErrorKind::Overloaded),
            (418, ProviderErrorKind::OtherStatus),
        ];
        for (status, kind) in cases {
            let e = ProviderError::from_status(status, &headers, openai, &secret);
            assert_eq!((e.kind, e.status), (kind, status));
            assert_eq!(e.message, "You exceeded your quota");
        }
        let e = ProviderError::from_status(529, &HeaderMap::new(), anthropic, &secret);
        assert_eq!(e.message, "Overloaded");
        let e = ProviderError::from_status(
            502,
            &HeaderMap::new(),
            b"<html>Bad Gateway</html>",
            &secret,
        );
        assert_eq!(e.message, "<html>Bad Gateway</html>");
        // Gemini's error body, as its reference documents it.
        let gemini = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#;
        let e = ProviderError::from_status(400, &HeaderMap::new(), gemini, &secret);
        assert_eq!(e.kind, ProviderErrorKind::BadRequest);
        assert_eq!(e.message, "API key not valid. Please pass a valid API key.");
    }

    #[test]
    fn compatible_configs_are_checked() {
        let ok = CompatibleConfig {
            path: Some("/openai/v1/chat/completions?api-version=2024-10-21".into()),
            auth_header: Some("api-key".into()),
            auth_scheme: Some("none".into()),
        };
        assert!(ok.validate().is_ok());
        assert_eq!(ok.auth_scheme(), None);
        for bad in [
            CompatibleConfig {
                path: Some("chat".into()),
                ..Default::default()
            },
            CompatibleConfig {
                path: Some("/a/../b".into()),
                ..Default::default()
            },
            CompatibleConfig {
                path: Some("/a#b".into()),
                ..Default::default()
            },
            CompatibleConfig {
                auth_header: Some("Host".into()),
                ..Default::default()
            },
            CompatibleConfig {
                auth_header: Some("x y".into()),
                ..Default::default()
            },
            CompatibleConfig {
                auth_scheme: Some("Bearer x".into()),
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(CompatibleConfig::default().auth_scheme(), Some("Bearer"));
        let other = CompatibleConfig {
            auth_header: Some("X-Api-Key".into()),
            ..Default::default()
        };
        assert_eq!(
            (other.auth_header().as_str(), other.auth_scheme()),
            ("x-api-key", None)
        );
    }
}
