//! Provider adapters: one module per wire format.
//!
//! Each adapter turns a [`ChatRequest`] into its provider's HTTP request,
//! sends it with the key in the header its provider documents (never in a
//! URL), parses the reply and its usage by that provider's own rules, and maps
//! failures to [`ProviderError`] with the provider's text sanitised.
//!
//! The development emulator that speaks these formats on loopback lives in
//! [`dev`].

pub mod anthropic;
pub mod dev;
pub mod openai;
mod redact;
mod types;

pub use redact::{sanitise, scrub};

pub use types::{
    ChatRequest, Completion, FinishReason, Message, Role, ToolCall, ToolDefinition, Usage,
};

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use url::Url;

use crate::vault::ProviderSecret;

/// Largest provider response body read, in bytes. A reply larger than this is
/// refused rather than buffered without bound.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The wire format a key speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// OpenAI Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl ProviderKind {
    /// The name used on the command line and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// The official base URL, written the way the provider's SDK takes it.
    pub fn default_base_url(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "https://api.openai.com/v1",
            ProviderKind::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The provider name of the OpenTelemetry GenAI conventions.
    pub fn otel_name(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider kind name that clawrun does not speak.
#[derive(Debug, thiserror::Error)]
#[error("unknown provider `{0}`: use `openai` or `anthropic`")]
pub struct UnknownProvider(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "openai" => Ok(ProviderKind::OpenAi),
            "anthropic" => Ok(ProviderKind::Anthropic),
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
    fn new(kind: ProviderErrorKind, status: u16, message: impl Into<String>) -> Self {
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
                retry_after: retry_after(headers),
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

    fn transport(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::new(
                ProviderErrorKind::Timeout,
                0,
                "the provider did not answer in time",
            )
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

/// Reads `retry-after-ms` or `retry-after` (seconds); HTTP dates are not
/// used by the providers we speak.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    let seconds = number("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| number("retry-after"))?;
    // A provider's answer must not be able to ask for forever (or overflow
    // a Duration): an hour is already longer than any real back-off.
    Some(Duration::from_secs_f64(
        seconds.min(MAX_RETRY_AFTER.as_secs_f64()),
    ))
}

/// The longest `retry-after` passed on to a claw.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The HTTP client every adapter shares: rustls, never follows redirects
/// (a redirect could carry the key's header to another host), no proxy from
/// the environment.
///
/// # Errors
///
/// When the TLS backend cannot be initialised.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(300))
        .user_agent(concat!("clawrun/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// A header value holding key material, marked sensitive so that no
/// `Debug` output of the request shows it.
fn secret_header(value: &str) -> Result<HeaderValue, ProviderError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| {
        ProviderError::new(
            ProviderErrorKind::Unauthorized,
            0,
            "the stored key contains characters that cannot be sent in an HTTP header",
        )
    })?;
    header.set_sensitive(true);
    Ok(header)
}

/// Sends a JSON request and returns the raw success body, mapping every
/// failure to a [`ProviderError`].
async fn post_json(
    http: &reqwest::Client,
    url: Url,
    headers: HeaderMap,
    body: &serde_json::Value,
    secret: &ProviderSecret,
) -> Result<Vec<u8>, ProviderError> {
    let mut response = http
        .post(url)
        .headers(headers)
        .json(body)
        .send()
        .await
        .map_err(|e| ProviderError::transport(&e))?;
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ProviderError::transport(&e))?
    {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ProviderError::bad_response(format!(
                "larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    if !(200..300).contains(&status) {
        return Err(ProviderError::from_status(
            status,
            response.headers(),
            &bytes,
            secret,
        ));
    }
    Ok(bytes)
}

/// Calls the provider of kind `kind` at `base_url` with `secret`.
///
/// # Errors
///
/// A [`ProviderError`] for every failure, its message sanitised.
pub async fn complete(
    http: &reqwest::Client,
    kind: ProviderKind,
    base_url: &Url,
    secret: &ProviderSecret,
    request: &ChatRequest,
) -> Result<Completion, ProviderError> {
    let mut done = match kind {
        ProviderKind::OpenAi => openai::complete(http, base_url, secret, request).await,
        ProviderKind::Anthropic => anthropic::complete(http, base_url, secret, request).await,
    }?;
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
    Ok(done)
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
    }

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        headers.clear();
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
        headers.insert(
            "retry-after",
            HeaderValue::from_static("18446744073709551615"),
        );
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert("retry-after", HeaderValue::from_static("1e308"));
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
    }
}
