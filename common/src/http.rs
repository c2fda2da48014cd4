// SPDX-License-Identifier: MPL-2.0
//! The HTTP policy the plugins share: bounded retries with exponential backoff, jitter and
//! `Retry-After`, which statuses are worth a retry, redaction for logs, and the `Secret` type.
//!
//! The three stacks (amazonmusic's services, amzdash's CDN, the decryptor's license server)
//! differ on purpose in a few points; each difference is a parameter here, named at the caller.

use std::fmt;
use std::path::PathBuf;
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

/// The CA file every element reads when its `ca-file` property is unset (playbin3 users set
/// no properties): PEM certificates trusted on top of the system roots.
pub const ENV_CA_FILE: &str = "AMAZONMUSIC_CA_FILE";

/// What an element's `ca-file` and `proxy` properties say (None: unset). The one set of TLS
/// and proxy rules of the three plugins: the system roots are always trusted, plus every
/// certificate of the CA file; nothing disables verification. A `proxy` carries every request
/// (as souphttpsrc's does); without it the standard `http_proxy`, `https_proxy`, `all_proxy`
/// and `no_proxy` variables apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsProxy {
    /// The `ca-file` property.
    pub ca_file: Option<PathBuf>,
    /// The `proxy` property.
    pub proxy: Option<String>,
}

/// Why a `ca-file` or `proxy` cannot be used: an error at start, naming the setting and its
/// value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    #[error("{setting} {path}: the file cannot be read: {why}")]
    CaFileUnreadable {
        /// `ca-file` or [`ENV_CA_FILE`].
        setting: &'static str,
        path: String,
        why: String,
    },
    #[error("{setting} {path} holds no usable PEM certificate{why}")]
    CaFileNoCertificate {
        setting: &'static str,
        path: String,
        /// ": <parser's reason>", or empty when the file has no CERTIFICATE block at all.
        why: String,
    },
    #[error("proxy {url:?} is not a usable proxy URL: {why}")]
    BadProxy {
        /// The value with any password replaced.
        url: String,
        why: String,
    },
}

/// A [`TlsProxy`] checked and loaded: the CA file's certificates and the proxy, ready for
/// any number of clients ([`Transport::client_builder`]).
#[derive(Debug, Clone, Default)]
pub struct Transport {
    roots: Vec<reqwest::Certificate>,
    proxy: Option<reqwest::Proxy>,
}

impl TlsProxy {
    /// Reads the CA file (the property, else [`ENV_CA_FILE`] from the process environment)
    /// and checks the proxy URL.
    pub fn load(&self) -> Result<Transport, TransportError> {
        self.load_with_env(|k| std::env::var(k).ok())
    }

    /// [`load`](Self::load) with `env` looking variables up.
    pub fn load_with_env(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Transport, TransportError> {
        let ca_file = match &self.ca_file {
            Some(p) if !p.as_os_str().is_empty() => Some(("ca-file", p.clone())),
            _ => env(ENV_CA_FILE)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (ENV_CA_FILE, PathBuf::from(v))),
        };
        let roots = match ca_file {
            Some((setting, path)) => load_ca_file(setting, &path)?,
            None => Vec::new(),
        };
        let proxy = match self.proxy.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => Some(parse_proxy(p)?),
            _ => None,
        };
        Ok(Transport { roots, proxy })
    }
}

fn load_ca_file(
    setting: &'static str,
    path: &std::path::Path,
) -> Result<Vec<reqwest::Certificate>, TransportError> {
    let shown = path.display().to_string();
    let no_cert = |why: String| TransportError::CaFileNoCertificate {
        setting,
        path: shown.clone(),
        why,
    };
    // A CA bundle is kilobytes; a path naming something huge (a device, a disk image) is not
    // read whole.
    const MAX_CA_FILE: u64 = 4 * 1024 * 1024;
    let unreadable = |why: String| TransportError::CaFileUnreadable {
        setting,
        path: shown.clone(),
        why,
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut pem = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_CA_FILE + 1), &mut pem)
        .map_err(|e| unreadable(e.to_string()))?;
    if pem.len() as u64 > MAX_CA_FILE {
        return Err(unreadable(format!(
            "larger than the {MAX_CA_FILE} bytes a CA file may hold"
        )));
    }
    let certs =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| no_cert(format!(": {e}")))?;
    if certs.is_empty() {
        return Err(no_cert(String::new()));
    }
    // A CERTIFICATE block whose content is not a certificate fails only when a client is
    // built: build one now (without the system roots, which it does not need) so the error
    // comes at start and names the file.
    let mut probe = reqwest::Client::builder().tls_built_in_root_certs(false);
    for c in &certs {
        probe = probe.add_root_certificate(c.clone());
    }
    probe
        .build()
        .map_err(|e| no_cert(format!(": {}", error_chain_without_url(&e))))?;
    Ok(certs)
}

/// The `proxy` property's URL: `http://` or `https://` (a bare `host:port` is `http://`, as
/// souphttpsrc reads it), with a host.
fn parse_proxy(value: &str) -> Result<reqwest::Proxy, TransportError> {
    let with_scheme = if value.contains("://") {
        value.to_string()
    } else {
        format!("http://{value}")
    };
    let bad = |why: String| TransportError::BadProxy {
        url: redact_password(value),
        why,
    };
    let url = Url::parse(&with_scheme).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme {:?} is not supported (http or https)",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host".into()));
    }
    reqwest::Proxy::all(url.as_str()).map_err(|e| bad(error_chain_without_url(&e)))
}

/// `value` with the password of a `user:password@` part replaced, for messages.
fn redact_password(value: &str) -> String {
    let start = value.find("://").map_or(0, |i| i + 3);
    let Some(at) = value[start..].rfind('@').map(|i| start + i) else {
        return value.to_string();
    };
    match value[start..at].find(':') {
        Some(colon) => format!("{}:<redacted>{}", &value[..start + colon], &value[at..]),
        None => value.to_string(),
    }
}

impl Transport {
    /// A client builder with the user agent (none when empty: each request names its own),
    /// the CA file's certificates on top of the system roots, and the proxy; the caller adds
    /// its timeouts and pool settings.
    /// Redirects follow [`crate::url_policy::redirect_policy`] (same scheme, never more
    /// private, no loop, at most 10): the URLs these clients are sent to come from manifests
    /// and audio objects.
    pub fn client_builder(&self, user_agent: &str) -> reqwest::ClientBuilder {
        let mut b = reqwest::Client::builder()
            .redirect(crate::url_policy::redirect_policy(Default::default()));
        if !user_agent.is_empty() {
            b = b.user_agent(user_agent);
        }
        for c in &self.roots {
            b = b.add_root_certificate(c.clone());
        }
        if let Some(p) = &self.proxy {
            // Replaces the environment's proxies (reqwest reads them only without one).
            b = b.proxy(p.clone());
        }
        b
    }

    /// The CA file's certificates (none without one).
    pub fn extra_roots(&self) -> usize {
        self.roots.len()
    }

    pub fn has_proxy(&self) -> bool {
        self.proxy.is_some()
    }
}

/// [`TlsProxy::load`] then [`Transport::client_builder`].
pub fn client_builder(
    user_agent: &str,
    settings: &TlsProxy,
) -> Result<reqwest::ClientBuilder, TransportError> {
    Ok(settings.load()?.client_builder(user_agent))
}

/// Why the server's certificate was refused, when that is what `e` failed on (rustls's
/// reason: "invalid peer certificate: UnknownIssuer"). Final: no retry changes it.
pub fn certificate_error(e: &reqwest::Error) -> Option<String> {
    causes(e).find_map(|inner| {
        // hyper-rustls wraps rustls's error in an io::Error, itself in another: an io::Error's
        // `source` skips the error it wraps, so each is opened by hand.
        let mut here = inner;
        while let Some(wrapped) = here
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            here = wrapped;
        }
        match here.downcast_ref::<rustls::Error>() {
            Some(t @ rustls::Error::InvalidCertificate(_)) => Some(t.to_string()),
            _ => None,
        }
    })
}

/// The causes of `e`, outermost first (not `e` itself).
fn causes(e: &reqwest::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(e), |inner| inner.source())
}

/// The message of a refused server certificate: what failed and what to do about it.
pub fn certificate_message(reason: &str) -> String {
    format!(
        "TLS certificate verification failed ({reason}): the server's certificate is not signed \
         by a trusted CA; if it is a private CA, name its PEM file in the ca-file property or \
         {ENV_CA_FILE}"
    )
}

/// Whether `e` is final: no retry can change it. A request that cannot be sent as built (a
/// header value with a newline, a scheme the client refuses), a redirect loop, or a response
/// head that does not parse: one over hyper's limit (about 400 KiB: a server that never ends
/// its headers; the client holds no more of it than that), or not HTTP at all; or a server
/// certificate that does not verify ([`certificate_error`]).
pub fn is_final(e: &reqwest::Error) -> bool {
    e.is_builder()
        || e.is_redirect()
        || bad_head(e)
        || refused_by_policy(e)
        || certificate_error(e).is_some()
}

/// Whether the URL policy refused the request (a redirect, a resolved address).
pub fn refused_by_policy(e: &reqwest::Error) -> bool {
    causes(e).any(|inner| inner.is::<crate::url_policy::Refused>())
}

/// Whether hyper could not parse the response head (the first hyper error among the causes).
fn bad_head(e: &reqwest::Error) -> bool {
    causes(e)
        .find_map(|inner| inner.downcast_ref::<hyper::Error>())
        .is_some_and(hyper::Error::is_parse)
}

/// A reqwest error as reqwest prints it, without its URL, followed by its causes ("builder
/// error: failed to parse header value"): for errors whose kind alone says too little.
pub fn error_chain_without_url(e: &reqwest::Error) -> String {
    if let Some(reason) = certificate_error(e) {
        return certificate_message(&reason);
    }
    let mut s = if e.is_builder() {
        "builder error".to_string()
    } else if e.is_redirect() {
        "error following redirect".to_string()
    } else if bad_head(e) {
        "the response's head cannot be read".to_string()
    } else {
        "request failed".to_string()
    };
    for inner in causes(e) {
        s.push_str(": ");
        s.push_str(&inner.to_string());
    }
    s
}

/// A reqwest error described by its kind and its causes only, never its URL: the text the CDN
/// fetcher reports.
pub fn error_kind_and_causes(e: &reqwest::Error) -> String {
    if let Some(reason) = certificate_error(e) {
        return certificate_message(&reason);
    }
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_body() || e.is_decode() {
        "response body error".to_string()
    } else {
        "request failed".to_string()
    };
    for inner in causes(e) {
        s = format!("{s}: {inner}");
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
    fn write(dir: &std::path::Path, name: &str, body: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_ca_file_adds_its_certificates_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = format!("{}\n{}", ca_pem(), ca_pem());
        let good = write(dir.path(), "ca.pem", bundle.as_bytes());
        let t = TlsProxy {
            ca_file: Some(good.clone()),
            proxy: None,
        };
        assert_eq!(t.load_with_env(no_env).unwrap().extra_roots(), 2);
        t.load_with_env(no_env)
            .unwrap()
            .client_builder("t")
            .build()
            .unwrap();
        // No file, no certificate in it, a certificate block that is not one.
        let missing = dir.path().join("missing.pem");
        let text = write(dir.path(), "text.pem", b"just some text\n");
        let broken = write(
            dir.path(),
            "broken.pem",
            b"-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n",
        );
        for (path, want) in [
            (&missing, "the file cannot be read"),
            (&text, "holds no usable PEM certificate"),
            (&broken, "holds no usable PEM certificate: "),
        ] {
            let t = TlsProxy {
                ca_file: Some(path.clone()),
                proxy: None,
            };
            let e = t.load_with_env(no_env).unwrap_err().to_string();
            assert!(e.starts_with(&format!("ca-file {}", path.display())), "{e}");
            assert!(e.contains(want), "{e}");
        }
        // The environment's file when the property is unset, named as such.
        let env = |k: &str| (k == ENV_CA_FILE).then(|| missing.display().to_string());
        let e = TlsProxy::default().load_with_env(env).unwrap_err();
        assert!(e.to_string().starts_with(ENV_CA_FILE), "{e}");
        // The property wins over the environment.
        let t = TlsProxy {
            ca_file: Some(good),
            proxy: None,
        };
        assert_eq!(t.load_with_env(env).unwrap().extra_roots(), 2);
        assert_eq!(
            TlsProxy::default()
                .load_with_env(no_env)
                .unwrap()
                .extra_roots(),
            0
        );
    }

    #[test]
    fn a_proxy_url_is_checked_and_its_password_never_printed() {
        for ok in [
            "http://127.0.0.1:3128",
            "127.0.0.1:3128",
            "https://u:p@proxy:8443/",
        ] {
            let t = TlsProxy {
                ca_file: None,
                proxy: Some(ok.into()),
            };
            assert!(t.load_with_env(no_env).unwrap().has_proxy(), "{ok}");
        }
        for (bad, why) in [
            ("socks5://u:hunter2@127.0.0.1:1080", "scheme \"socks5\""),
            ("http://u:hunter2@[::1", "invalid IPv6"),
            ("http://", "empty host"),
            ("ftp://proxy:21", "scheme \"ftp\""),
        ] {
            let t = TlsProxy {
                ca_file: None,
                proxy: Some(bad.into()),
            };
            let e = t.load_with_env(no_env).unwrap_err().to_string();
            assert!(e.starts_with("proxy \""), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(!TlsProxy {
            ca_file: None,
            proxy: Some(" ".into())
        }
        .load_with_env(no_env)
        .unwrap()
        .has_proxy());
    }

    /// A one-shot HTTP proxy on loopback: answers the first request with its request line
    /// as the body, and hands that line back.
    fn one_shot_proxy() -> (String, std::thread::JoinHandle<String>) {
        use std::io::{BufRead, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = std::io::BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut rest = String::new();
            while r.read_line(&mut rest).unwrap() > 2 {
                rest.clear();
            }
            let line = line.trim().to_string();
            write!(
                &s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{line}",
                line.len()
            )
            .unwrap();
            line
        });
        (url, h)
    }

    fn get_text(c: reqwest::Client, url: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async { c.get(url).send().await.unwrap().text().await.unwrap() })
    }

    /// reqwest as the workspace builds it (no `system-proxy` feature) still reads the proxy
    /// environment, and the `proxy` property replaces it. The only test of this binary that
    /// touches the proxy variables.
    #[test]
    fn the_proxy_environment_is_honoured_and_the_property_overrides_it() {
        for k in ["NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"] {
            std::env::remove_var(k);
        }
        let (env_proxy, env_seen) = one_shot_proxy();
        std::env::set_var("http_proxy", &env_proxy);
        // reqwest reads the environment when the client is built.
        let c = client_builder("t", &TlsProxy::default())
            .unwrap()
            .build()
            .unwrap();
        std::env::remove_var("http_proxy");
        let body = get_text(c, "http://upstream.invalid/env");
        assert_eq!(body, "GET http://upstream.invalid/env HTTP/1.1");
        assert_eq!(env_seen.join().unwrap(), body);

        let (prop_proxy, prop_seen) = one_shot_proxy();
        std::env::set_var("http_proxy", "http://127.0.0.1:9");
        let t = TlsProxy {
            ca_file: None,
            proxy: Some(prop_proxy),
        };
        let c = client_builder("t", &t).unwrap().build().unwrap();
        std::env::remove_var("http_proxy");
        let body = get_text(c, "http://upstream.invalid/prop");
        assert_eq!(body, "GET http://upstream.invalid/prop HTTP/1.1");
        assert_eq!(prop_seen.join().unwrap(), body);
    }

    #[test]
    fn a_certificate_refusal_says_what_to_do() {
        let m = certificate_message("invalid peer certificate: UnknownIssuer");
        assert!(
            m.starts_with(
                "TLS certificate verification failed (invalid peer certificate: UnknownIssuer)"
            ),
            "{m}"
        );
        assert!(m.contains("ca-file") && m.contains(ENV_CA_FILE), "{m}");
    }
}
