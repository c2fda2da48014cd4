// SPDX-License-Identifier: MPL-2.0
//! The HTTP policy the plugins share: bounded retries with exponential backoff, jitter and
//! `Retry-After`, which statuses are worth a retry, redaction for logs, and the `Secret` type.
//!
//! The three stacks (amazonmusic's services, amzdash's CDN, the decryptor's license server)
//! differ on purpose in a few points; each difference is a parameter here, named at the caller.

use std::fmt;
use std::time::Duration;

use rand::Rng;
use url::Url;

/// A string that must never reach a log: `Debug` and `Display` print a placeholder.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How often and how patiently a call is retried: the one policy type of the source's service
/// clients and of the decryptor's license client (each names its own numbers:
/// `gstamazonmusic::http::API_RETRY`, `gstwidevinestub::fetch::LICENSE_RETRY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Whole-request timeout (headers and body).
    pub request_timeout: Duration,
}

impl RetryPolicy {
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.base_delay, self.max_delay)
    }

    /// The wait after failed attempt `attempt` (from 1): [`Backoff::delay`].
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        self.backoff().delay(attempt, retry_after)
    }

    /// A fresh attempt counter bounded by `max_attempts`.
    pub fn retries(&self) -> Retries {
        Retries::new(self.max_attempts, self.backoff())
    }
}

/// The most bytes an answer's body may hold, by kind: the one place for body limits. A reader
/// stops at its limit and fails, whatever Content-Length says or does not say, instead of
/// buffering what a broken or hostile server sends.
pub mod body_limit {
    /// An MPD (amazonmusicsrc's download and amzdashdemux's reload and sink).
    pub const MANIFEST: u64 = 8 * 1024 * 1024;
    /// A JSON answer of the music API, LWA or FireFly (an audio object is a few kB).
    pub const API: u64 = 4 * 1024 * 1024;
    /// A license answer (a few kB).
    pub const LICENSE: u64 = 1024 * 1024;
    /// A cover image.
    pub const IMAGE: u64 = 16 * 1024 * 1024;
    /// A media or init segment, or a segment index (amzdashdemux; a 10 s 192 kHz/24 bit FLAC
    /// segment is about 8 MB).
    pub const SEGMENT: u64 = 64 * 1024 * 1024;
}

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the answer is larger than the {0} bytes allowed")]
    TooLarge(u64),
    /// The connection failed while the body came (reqwest's text, without the URL).
    #[error("{0}")]
    Transport(String),
}

/// `resp`'s body, at most `limit` bytes: [`BodyError::TooLarge`] as soon as the
/// Content-Length or the bytes received say it is more, having kept no more than `limit`.
pub async fn read_body(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| BodyError::Transport(error_text_without_url(e)))?
    {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::TooLarge(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The longest `Retry-After` any client waits: a server asking for more (or a hostile one
/// asking for a year) is retried after this, within the attempt budget.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Exponential backoff: the wait after failed attempt `n` (from 1) doubles from `base_delay`,
/// is capped at `max_delay`, and gets up to 50 % jitter so that clients hit by the same outage
/// do not retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Backoff {
    pub fn new(base_delay: Duration, max_delay: Duration) -> Backoff {
        Backoff {
            base_delay,
            max_delay,
        }
    }

    /// The capped exponential part of [`delay`](Self::delay), without jitter.
    pub fn exponential(&self, attempt: u32) -> Duration {
        self.base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay)
    }

    /// The wait after failed attempt `attempt`, never shorter than the server's `retry_after`
    /// up to [`MAX_RETRY_AFTER`] (callers without a `Retry-After` pass `None`).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self.exponential(attempt);
        let jitter = exp.mul_f64(rand::thread_rng().gen_range(0.0..=0.5));
        (exp + jitter).max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER))
    }
}

/// Which HTTP statuses are worth another attempt. The stacks differ; each names its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    /// 408, 429 and 500–599: the music API, Login with Amazon and FireFly.
    TimeoutThrottleAnd5xx,
    /// 408, 429 and every status from 500 up (a non-standard 6xx too): the CDN.
    TimeoutThrottleAndFrom500,
    /// 429, 500, 502, 503 and 504: the license error table (docs/license-protocol.md), where
    /// 408 and 501 fail at once.
    LicenseTable,
}

impl RetryOn {
    pub fn retries(self, status: u16) -> bool {
        match self {
            RetryOn::TimeoutThrottleAnd5xx => {
                status == 429 || status == 408 || (500..600).contains(&status)
            }
            RetryOn::TimeoutThrottleAndFrom500 => status == 429 || status >= 500 || status == 408,
            RetryOn::LicenseTable => matches!(status, 429 | 500 | 502 | 503 | 504),
        }
    }
}

/// The `Retry-After` header in whole seconds (the HTTP-date form is not used by the services).
pub fn retry_after_secs(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// How many seconds this machine's clock is ahead of the server's (negative: behind), from the
/// response's `Date` header and `local_now`; None without a readable `Date`.
pub fn clock_skew_secs(
    headers: &reqwest::header::HeaderMap,
    local_now: std::time::SystemTime,
) -> Option<i64> {
    let date = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    let server = httpdate::parse_http_date(date).ok()?;
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    };
    Some(secs(local_now) - secs(server))
}

/// The attempt count of one request and the wait between its attempts: callers run their own
/// loop (each stack decides what is final), `begin` each attempt and hand a failure worth
/// another attempt to [`backoff_or`](Self::backoff_or).
#[derive(Debug, Clone)]
pub struct Retries {
    max_attempts: u32,
    backoff: Backoff,
    attempt: u32,
}

impl Retries {
    /// At most `max_attempts` attempts in total (1: no retry).
    pub fn new(max_attempts: u32, backoff: Backoff) -> Retries {
        Retries {
            max_attempts,
            backoff,
            attempt: 0,
        }
    }

    /// Starts the next attempt and returns its number (from 1). An attempt begun without a
    /// [`backoff_or`](Self::backoff_or) before it (the license client's one retry with a
    /// refreshed token) still counts.
    pub fn begin(&mut self) -> u32 {
        self.attempt += 1;
        self.attempt
    }

    /// Whether the attempt in progress is the last one the bound allows.
    pub fn is_last(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// After a failure worth another attempt: `Err(error)` when the attempts are used up,
    /// otherwise waits [`Backoff::delay`] (at least `retry_after`) and returns `Ok`.
    pub async fn backoff_or<E>(&self, error: E, retry_after: Option<Duration>) -> Result<(), E> {
        if self.is_last() {
            return Err(error);
        }
        tokio::time::sleep(self.backoff.delay(self.attempt, retry_after)).await;
        Ok(())
    }
}

/// A URL fit for logs: scheme, host, port and path, never the (signed) query.
pub fn redact_url(u: &Url) -> String {
    let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
    let mut s = format!(
        "{}://{}{port}{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.path()
    );
    if u.query().is_some() {
        s.push_str("?…");
    }
    s
}

/// A reqwest error as reqwest prints it without its URL (which may be signed): the text the
/// music API, LWA, FireFly and license clients report.
pub fn error_text_without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// Whether `e` is final: no retry can change it. A request that cannot be sent as built (a
/// header value with a newline, a scheme the client refuses), a redirect loop, or a response
/// head that does not parse: one over hyper's limit (about 400 KiB: a server that never ends
/// its headers; the client holds no more of it than that), or not HTTP at all.
pub fn is_final(e: &reqwest::Error) -> bool {
    e.is_builder() || e.is_redirect() || bad_head(e) || refused_by_policy(e)
}

/// Whether the URL policy refused the request (a redirect, a resolved address).
pub fn refused_by_policy(e: &reqwest::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if inner.is::<crate::url_policy::Refused>() {
            return true;
        }
        src = inner.source();
    }
    false
}

fn bad_head(e: &reqwest::Error) -> bool {
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        if let Some(h) = inner.downcast_ref::<hyper::Error>() {
            return h.is_parse();
        }
        src = inner.source();
    }
    false
}

/// A reqwest error as reqwest prints it, without its URL, followed by its causes ("builder
/// error: failed to parse header value"): for errors whose kind alone says too little.
pub fn error_chain_without_url(e: &reqwest::Error) -> String {
    let mut s = if e.is_builder() {
        "builder error".to_string()
    } else if e.is_redirect() {
        "error following redirect".to_string()
    } else if bad_head(e) {
        "the response's head cannot be read".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// A reqwest error described by its kind and its causes only, never its URL: the text the CDN
/// fetcher reports.
pub fn error_kind_and_causes(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_body() || e.is_decode() {
        "response body error".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s = format!("{s}: {inner}");
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_after_is_honoured_up_to_its_cap() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
        assert_eq!(
            b.delay(1, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        let year = Some(Duration::from_secs(365 * 24 * 3600));
        assert_eq!(b.delay(1, year), MAX_RETRY_AFTER);
    }

    #[test]
    fn the_clock_skew_is_read_from_the_date_header() {
        use std::time::{Duration, UNIX_EPOCH};
        let server = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::DATE,
            httpdate::fmt_http_date(server).parse().unwrap(),
        );
        let ahead = server + Duration::from_secs(3600);
        assert_eq!(clock_skew_secs(&h, ahead), Some(3600));
        assert_eq!(
            clock_skew_secs(&h, server - Duration::from_secs(90)),
            Some(-90)
        );
        h.insert(reqwest::header::DATE, "yesterday".parse().unwrap());
        assert_eq!(clock_skew_secs(&h, ahead), None);
        assert_eq!(clock_skew_secs(&Default::default(), ahead), None);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("Atza|very-secret");
        assert!(!format!("{s:?} {s}").contains("very-secret"));
        assert_eq!(s.expose(), "Atza|very-secret");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"Atza|very-secret\"");
    }

    #[test]
    fn backoff_doubles_is_capped_jittered_and_honours_retry_after() {
        let b = Backoff {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        for _ in 0..50 {
            for (n, exp) in [(1, 100), (2, 200), (3, 350), (30, 350)] {
                let exp = Duration::from_millis(exp);
                assert_eq!(b.exponential(n), exp);
                let d = b.delay(n, None);
                assert!(d >= exp && d <= exp.mul_f64(1.5), "{n}: {d:?}");
            }
        }
        assert!(b.delay(1, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        assert!(b.delay(1, Some(Duration::ZERO)) >= Duration::from_millis(100));
    }

    #[test]
    fn each_stack_retries_its_own_statuses() {
        use RetryOn::*;
        for (status, service, cdn, license) in [
            (408, true, true, false),
            (429, true, true, true),
            (500, true, true, true),
            (501, true, true, false),
            (503, true, true, true),
            (599, true, true, false),
            (600, false, true, false),
            (401, false, false, false),
            (403, false, false, false),
            (404, false, false, false),
        ] {
            assert_eq!(TimeoutThrottleAnd5xx.retries(status), service, "{status}");
            assert_eq!(TimeoutThrottleAndFrom500.retries(status), cdn, "{status}");
            assert_eq!(LicenseTable.retries(status), license, "{status}");
        }
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after_secs(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, " 3 ".parse().unwrap());
        assert_eq!(retry_after_secs(&h), Some(3));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2026 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after_secs(&h), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_and_wait_at_least_retry_after() {
        let fast = Backoff {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
        };
        let mut r = Retries::new(3, fast);
        let mut failures = 0;
        let last = loop {
            let n = r.begin();
            if let Err(n) = r.backoff_or(n, None).await {
                break n;
            }
            failures += 1;
        };
        assert_eq!((last, failures), (3, 2));

        // Retry-After stretches the wait.
        let mut r = Retries::new(2, fast);
        assert_eq!(r.begin(), 1);
        let started = tokio::time::Instant::now();
        assert_eq!(r.backoff_or((), Some(Duration::from_secs(5))).await, Ok(()));
        assert!(started.elapsed() >= Duration::from_secs(5));
        assert_eq!(r.begin(), 2);
        assert!(r.is_last());

        // One attempt in total: the first failure is final, with no wait.
        let mut once = Retries::new(1, fast);
        once.begin();
        let started = tokio::time::Instant::now();
        assert_eq!(once.backoff_or("e", None).await, Err("e"));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[test]
    fn redaction_hides_signed_queries() {
        let u = Url::parse("https://cdn.invalid/x/a.mp4?ao=1&sig=SECRET").unwrap();
        assert_eq!(redact_url(&u), "https://cdn.invalid/x/a.mp4?…");
        let plain = Url::parse("https://cdn.invalid/x/a.mp4").unwrap();
        assert_eq!(redact_url(&plain), "https://cdn.invalid/x/a.mp4");
        // The port stays: two services on one host are told apart (issue 20).
        let local = Url::parse("http://127.0.0.1:8080/cdn/a.mp4?sig=SECRET").unwrap();
        assert_eq!(redact_url(&local), "http://127.0.0.1:8080/cdn/a.mp4?…");
        let v6 = Url::parse("http://[::1]:9/x").unwrap();
        assert_eq!(redact_url(&v6), "http://[::1]:9/x");
    }
}
