// SPDX-License-Identifier: MPL-2.0
//! HTTP plumbing shared by the LWA, music API and FireFly clients: the plugin's one tokio
//! runtime and the reqwest client. The retry, backoff and `Secret` policy they follow is
//! `amzmusic_common::http`, shared with the other plugins.

use std::sync::LazyLock;
use std::time::Duration;

pub use amzmusic_common::http::TlsProxy;
use amzmusic_common::http::{
    certificate_error, client_builder, clock_skew_secs, error_chain_without_url,
    error_text_without_url, is_final, read_body, retry_after_secs, BodyError, RetryOn,
};

/// One runtime for the whole plugin: every element instance and the login tool share it.
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("amazonmusic-net")
        .enable_all()
        .build()
        .expect("tokio runtime for the amazonmusic plugin")
});

/// Runs `fut` on the plugin runtime and waits for it from a plain thread. Safe to call from a
/// thread that is itself inside another tokio runtime (a downstream element's worker asking a
/// query), where `Runtime::block_on` would panic.
pub fn wait_on_runtime<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    RUNTIME.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().ok()
}

/// A string that must never reach a log (shared with the other plugins).
pub use amzmusic_common::http::Secret;

/// Builds the client every service call uses, with the TLS and proxy rules of
/// [`amzmusic_common::http::TlsProxy`] (system roots plus the `ca-file`, the `proxy` or the
/// proxy environment). Err names the setting that cannot be used.
pub fn client(user_agent: &str, tls: &TlsProxy) -> Result<reqwest::Client, String> {
    client_builder(user_agent, tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// The policy type every stack shares.
pub use amzmusic_common::http::RetryPolicy;

/// How the LWA, music API and FireFly calls are retried: 4 attempts, from 300 ms doubling to
/// at most 4 s (plus jitter, never under `Retry-After`), 15 s per request.
pub const API_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 4,
    base_delay: Duration::from_millis(300),
    max_delay: Duration::from_secs(4),
    request_timeout: Duration::from_secs(15),
};

/// What a service call ended with when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The service answered with an error (final: not retryable or retries used up).
    #[error("HTTP {status} {code}: {message}")]
    Status {
        status: u16,
        /// The JSON body's `error`, or `http_<status>` when there is none.
        code: String,
        /// The JSON body's `message` (the services promise it holds no secret).
        message: String,
    },
    /// No answer after every attempt (connection refused or reset, timeout).
    #[error("no answer after {attempts} attempt(s): {message}")]
    Transport { message: String, attempts: u32 },
    /// A 200 whose body is not what the API documents.
    #[error("unexpected answer: {0}")]
    BadBody(String),
    /// A body over its [`body_limit`](amzmusic_common::http::body_limit) (final: not retried).
    #[error("the answer is larger than the {0} bytes allowed")]
    TooLarge(u64),
    /// A request that cannot be sent as built (a header value with a newline, a URL scheme the
    /// client refuses), a redirect loop or a response head over the limit: final, as no retry
    /// can change it.
    #[error("the request cannot be made: {0}")]
    Unsendable(String),
    /// The server's TLS certificate does not verify ([`amzmusic_common::http::certificate_message`]): final.
    #[error("{0}")]
    Certificate(String),
}

impl HttpError {
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
    pub fn code(&self) -> Option<&str> {
        match self {
            HttpError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Whether an answer with this status is worth another attempt.
pub fn retryable_status(status: u16) -> bool {
    RetryOn::TimeoutThrottleAnd5xx.retries(status)
}

/// Reads the services' JSON error body (`{"error", "message"}`) into an [`HttpError`].
pub fn error_from_body(status: u16, body: &[u8]) -> HttpError {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Option<String>,
        message: Option<String>,
        error_description: Option<String>,
    }
    let parsed: Option<Body> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|b| b.error.clone())
        .unwrap_or_else(|| format!("http_{status}"));
    let message = parsed
        .and_then(|b| b.message.or(b.error_description))
        .unwrap_or_default();
    HttpError::Status {
        status,
        code,
        message,
    }
}

/// A successful answer.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// How far this machine's clock is ahead of the server's, by its `Date` header (seconds).
    pub clock_skew_secs: Option<i64>,
}

/// Sends the request `build` makes, retrying transport failures, 408, 429 and 5xx with
/// [`RetryPolicy::delay`]. Any other non-2xx answer is returned at once as
/// [`HttpError::Status`]. `build` is called once per attempt.
pub async fn send_with_retries(
    policy: &RetryPolicy,
    limit: u64,
    mut build: impl FnMut() -> reqwest::RequestBuilder,
) -> Result<Answer, HttpError> {
    let mut retries = policy.retries();
    loop {
        let attempt = retries.begin();
        let transport = |message| HttpError::Transport {
            message,
            attempts: attempt,
        };
        // `without_url` keeps signed URLs and their signatures out of the message.
        let resp = match build().timeout(policy.request_timeout).send().await {
            Ok(r) => r,
            Err(e) if certificate_error(&e).is_some() => {
                return Err(HttpError::Certificate(error_chain_without_url(&e)))
            }
            Err(e) if is_final(&e) => {
                return Err(HttpError::Unsendable(error_chain_without_url(&e)))
            }
            Err(e) => {
                retries
                    .backoff_or(transport(error_text_without_url(e)), None)
                    .await?;
                continue;
            }
        };
        let status = resp.status().as_u16();
        let retry_after = retry_after_secs(resp.headers()).map(Duration::from_secs);
        let clock_skew_secs = clock_skew_secs(resp.headers(), std::time::SystemTime::now());
        let body = match read_body(resp, limit).await {
            Ok(b) => b,
            Err(BodyError::TooLarge(n)) => return Err(HttpError::TooLarge(n)),
            Err(BodyError::Transport(e)) => {
                retries.backoff_or(transport(e), None).await?;
                continue;
            }
        };
        if (200..300).contains(&status) {
            return Ok(Answer {
                status,
                body,
                clock_skew_secs,
            });
        }
        let error = error_from_body(status, &body);
        if !retryable_status(status) {
            return Err(error);
        }
        retries.backoff_or(error, retry_after).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What no retry can fix fails at once, saying why: a header value with a newline, a URL
    /// scheme the client refuses (it was "no answer after 4 attempt(s): builder error" after
    /// 2.7 s of retries).
    #[test]
    fn an_unsendable_request_fails_at_once_saying_why() {
        let c = client("t", &TlsProxy::default()).unwrap();
        for (build, why) in [
            (
                Box::new(|| c.get("http://127.0.0.1:9/x").header("x-a", "1\n2"))
                    as Box<dyn Fn() -> reqwest::RequestBuilder>,
                "builder error",
            ),
            (Box::new(|| c.get("file:///etc/passwd")), "builder error"),
        ] {
            let started = std::time::Instant::now();
            let r = RUNTIME.block_on(send_with_retries(&API_RETRY, 1024, build));
            let Err(HttpError::Unsendable(msg)) = r else {
                panic!("{:?}", r.map(|a| a.status))
            };
            assert!(msg.starts_with(why), "{msg}");
            assert!(!msg.contains("passwd"), "no URL in the message: {msg}");
            assert!(started.elapsed() < Duration::from_millis(200), "no retry");
        }
    }

    #[test]
    fn backoff_doubles_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            request_timeout: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let d1 = p.delay(1, None);
            assert!(d1 >= Duration::from_millis(100) && d1 <= Duration::from_millis(150));
            let d2 = p.delay(2, None);
            assert!(d2 >= Duration::from_millis(200) && d2 <= Duration::from_millis(300));
            let d9 = p.delay(9, None);
            assert!(d9 >= Duration::from_millis(350) && d9 <= Duration::from_millis(525));
        }
        assert!(p.delay(1, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }

    #[test]
    fn error_bodies_are_read() {
        let e = error_from_body(
            404,
            br#"{"error":"track_not_found","message":"no such track"}"#,
        );
        assert_eq!(e.code(), Some("track_not_found"));
        assert_eq!(e.status(), Some(404));
        let e = error_from_body(502, b"<html>");
        assert_eq!(e.code(), Some("http_502"));
        assert!(retryable_status(503) && retryable_status(429) && !retryable_status(404));
    }
}
