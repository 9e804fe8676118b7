//! Sending a provider request: the shared HTTP client, timeouts, the
//! response size cap, and retries with jittered backoff.
//!
//! A request is retried when the provider refused it before doing any work:
//! 429 (after its `retry-after`, when it gives one), 5xx, Anthropic's 529,
//! and connections that could not be made; a 429 asking for a wait longer
//! than [`MAX_RETRY_WAIT`] goes back to the claw at once. Nothing is retried once a
//! successful answer has started, nor after a timeout waiting for one (the
//! provider may have read the prompt and be billing it). Every attempt
//! stays within the call's deadline: a retry whose wait would pass it is not
//! made, and the last refusal goes to the claw.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use tokio::time::Instant;
use url::Url;

use super::{ProviderError, ProviderErrorKind};
use crate::vault::ProviderSecret;

/// Default of [`ProviderOptions::max_response_bytes`].
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The longest `retry-after` the host waits out itself; a provider asking
/// for longer is answered at once with `rate-limited`, leaving the wait to
/// the claw.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// The longest `retry-after` passed on to a claw.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Timeouts, retries and caps of provider requests.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// Time to establish a connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Longest silence while reading an answer: between the request and the
    /// first byte, and between two chunks of a stream.
    pub read_timeout: Duration,
    /// Time one call may take from its first attempt to its last byte,
    /// retries and their waits included; a stream is cut when it passes.
    pub call_deadline: Duration,
    /// Attempts per call, the first included.
    pub max_attempts: u32,
    /// Largest answer read, in bytes: a reply body, or all of a stream.
    pub max_response_bytes: usize,
    /// Wait before the first retry; doubled for each further one, each
    /// wait drawn at random between half and all of it.
    pub backoff: Duration,
    /// Calls of this process past their budget check at once: the rest
    /// wait their turn holding nothing. Each such call holds its key's lock
    /// file and a connection, so the default is a quarter of the process's
    /// open-file limit, which leaves the rest to the API's clients and the
    /// database.
    pub max_calls_in_flight: usize,
}

/// A quarter of the soft limit on open files (at least 64).
fn default_calls_in_flight() -> usize {
    let files = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(files / 4).unwrap_or(usize::MAX).max(64)
}

impl Default for ProviderOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            call_deadline: Duration::from_secs(300),
            max_attempts: 4,
            max_response_bytes: MAX_RESPONSE_BYTES,
            backoff: Duration::from_millis(250),
            max_calls_in_flight: default_calls_in_flight(),
        }
    }
}

/// An environment variable of [`ProviderOptions::from_env`] that does not
/// parse.
#[derive(Debug, thiserror::Error)]
#[error("{name}={value:?} is not valid: {expected}")]
pub struct OptionError {
    name: &'static str,
    value: String,
    expected: &'static str,
}

impl ProviderOptions {
    /// The defaults, overridden by `CLAWRUN_CONNECT_TIMEOUT_SECS`,
    /// `CLAWRUN_READ_TIMEOUT_SECS`, `CLAWRUN_CALL_DEADLINE_SECS`,
    /// `CLAWRUN_MAX_ATTEMPTS`, `CLAWRUN_MAX_RESPONSE_BYTES` and
    /// `CLAWRUN_MAX_CALLS_IN_FLIGHT` when set.
    ///
    /// # Errors
    ///
    /// When a variable is set to something other than a positive whole
    /// number.
    pub fn from_env() -> Result<Self, OptionError> {
        let mut options = Self::default();
        let read = |name: &'static str| -> Result<Option<u64>, OptionError> {
            match std::env::var(name) {
                Err(_) => Ok(None),
                Ok(value) => value
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Some)
                    .ok_or(OptionError {
                        name,
                        value,
                        expected: "use a whole number greater than 0",
                    }),
            }
        };
        if let Some(s) = read("CLAWRUN_CONNECT_TIMEOUT_SECS")? {
            options.connect_timeout = Duration::from_secs(s);
        }
        if let Some(s) = read("CLAWRUN_READ_TIMEOUT_SECS")? {
            options.read_timeout = Duration::from_secs(s);
        }
        if let Some(s) = read("CLAWRUN_CALL_DEADLINE_SECS")? {
            options.call_deadline = Duration::from_secs(s);
        }
        if let Some(n) = read("CLAWRUN_MAX_ATTEMPTS")? {
            options.max_attempts = u32::try_from(n).unwrap_or(u32::MAX);
        }
        if let Some(n) = read("CLAWRUN_MAX_RESPONSE_BYTES")? {
            options.max_response_bytes = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(n) = read("CLAWRUN_MAX_CALLS_IN_FLIGHT")? {
            options.max_calls_in_flight = usize::try_from(n).unwrap_or(usize::MAX);
        }
        Ok(options)
    }

    /// The HTTP client for these options: rustls, never follows redirects
    /// (a redirect could carry the key's header to another host), no proxy
    /// from the environment.
    ///
    /// # Errors
    ///
    /// When the TLS backend cannot be initialised.
    pub fn client(&self) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .user_agent(concat!("clawrun/", env!("CARGO_PKG_VERSION")))
            .build()
    }
}

/// The HTTP client with the default [`ProviderOptions`].
///
/// # Errors
///
/// When the TLS backend cannot be initialised.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    ProviderOptions::default().client()
}

/// A header value holding key material, marked sensitive so that no
/// `Debug` output of the request shows it.
pub(super) fn secret_header(value: &str) -> Result<HeaderValue, ProviderError> {
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

/// One request, ready to send (and to send again). Its `Debug` shows the
/// key header as `Sensitive`.
#[derive(Debug)]
pub(super) struct Prepared {
    pub url: Url,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
}

/// Sends `prepared`, retrying refusals as the module documents, and
/// returns the first successful answer with its body unread.
pub(super) async fn send(
    http: &reqwest::Client,
    options: &ProviderOptions,
    prepared: &Prepared,
    secret: &ProviderSecret,
    deadline: Instant,
) -> Result<reqwest::Response, ProviderError> {
    let mut attempt = 1;
    loop {
        let sent = tokio::time::timeout_at(
            deadline,
            http.post(prepared.url.clone())
                .headers(prepared.headers.clone())
                .json(&prepared.body)
                .send(),
        )
        .await;
        let error = match sent {
            Err(_elapsed) => return Err(ProviderError::timeout()),
            Ok(Ok(response)) if response.status().is_success() => return Ok(response),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                // An error body is small; read it within the same caps.
                let body = read_body(response, options, deadline)
                    .await
                    .unwrap_or_default();
                ProviderError::from_status(status, &headers, &body, secret)
            }
            Ok(Err(e)) if e.is_connect() => ProviderError::transport(&e),
            Ok(Err(e)) => return Err(ProviderError::transport(&e)),
        };
        let Some(wait) = retry_wait(&error, attempt, options) else {
            return Err(error);
        };
        if attempt >= options.max_attempts || Instant::now() + wait >= deadline {
            return Err(error);
        }
        tracing::info!(
            attempt,
            status = error.status,
            wait_ms = wait.as_millis() as u64,
            "provider refused the request; retrying"
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// How long to wait before retrying after `error`, or `None` when it is
/// not worth retrying.
fn retry_wait(error: &ProviderError, attempt: u32, options: &ProviderOptions) -> Option<Duration> {
    let backoff = || {
        let full = options
            .backoff
            .saturating_mul(1 << (attempt - 1).min(10))
            .min(Duration::from_secs(30));
        // Jitter keeps claws refused together from retrying together.
        full.mul_f64(rand::random_range(0.5..=1.0))
    };
    match error.kind {
        ProviderErrorKind::RateLimited {
            retry_after: Some(after),
        } => (after <= MAX_RETRY_WAIT).then_some(after),
        ProviderErrorKind::RateLimited { retry_after: None }
        | ProviderErrorKind::Overloaded
        | ProviderErrorKind::Server
        | ProviderErrorKind::Connect => Some(backoff()),
        _ => None,
    }
}

/// Reads a whole body within the size cap and the deadline.
pub(super) async fn read_body(
    mut response: reqwest::Response,
    options: &ProviderOptions,
    deadline: Instant,
) -> Result<Vec<u8>, ProviderError> {
    let mut bytes = Vec::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .map_err(|_| ProviderError::timeout())?
            .map_err(|e| ProviderError::transport(&e))?;
        let Some(chunk) = chunk else {
            return Ok(bytes);
        };
        if bytes.len() + chunk.len() > options.max_response_bytes {
            return Err(ProviderError::too_large(options.max_response_bytes));
        }
        bytes.extend_from_slice(&chunk);
    }
}

/// Reads `retry-after-ms` or `retry-after` (seconds); HTTP dates are not
/// used by the providers we speak.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn only_refusals_before_any_work_are_retried() {
        let options = ProviderOptions::default();
        let error = |kind| ProviderError::new(kind, 0, "x");
        let after = Duration::from_secs(2);
        assert_eq!(
            retry_wait(
                &error(ProviderErrorKind::RateLimited {
                    retry_after: Some(after)
                }),
                1,
                &options
            ),
            Some(after)
        );
        let long = ProviderErrorKind::RateLimited {
            retry_after: Some(MAX_RETRY_WAIT + Duration::from_secs(1)),
        };
        assert_eq!(retry_wait(&error(long), 1, &options), None);
        for kind in [
            ProviderErrorKind::RateLimited { retry_after: None },
            ProviderErrorKind::Overloaded,
            ProviderErrorKind::Server,
            ProviderErrorKind::Connect,
        ] {
            for attempt in 1..=12 {
                let wait = retry_wait(&error(kind.clone()), attempt, &options).expect("retried");
                let full = options
                    .backoff
                    .saturating_mul(1 << (attempt - 1).min(10))
                    .min(Duration::from_secs(30));
                assert!(
                    wait >= full / 2 && wait <= full,
                    "{kind:?} {attempt}: {wait:?}"
                );
            }
        }
        for kind in [
            ProviderErrorKind::Unauthorized,
            ProviderErrorKind::BadRequest,
            ProviderErrorKind::NotFound,
            ProviderErrorKind::Timeout,
            ProviderErrorKind::BadResponse,
        ] {
            assert_eq!(retry_wait(&error(kind), 1, &options), None);
        }
    }
}
