//! Segment downloads: one reqwest client (rustls, HTTP/2, keep-alive) per element, byte ranges,
//! connect and stall timeouts, retries with exponential backoff and jitter; `file://` for tests.

use amzmusic_common::http::{
    certificate_error, certificate_message, error_chain_without_url, error_kind_and_causes,
    is_final, redact_url, retry_after_secs, Backoff, RetryOn, Transport,
};
use amzmusic_common::url_policy::{self, AllowList, GuardedResolver};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

use crate::mpd::ByteRange;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// 401/403: the signed URL or the headers are no longer accepted.
    #[error("HTTP {0}: access refused (expired or missing audio object?)")]
    Forbidden(u16),
    #[error("HTTP {0} for a segment the manifest lists")]
    NotFound(u16),
    #[error("HTTP {0}")]
    Status(u16),
    /// 429 or 5xx with `Retry-After`: the server said when to come back (at most
    /// [`MAX_RETRY_AFTER`] is waited).
    #[error("HTTP {status}, retry after {retry_after:?}")]
    Throttled { status: u16, retry_after: Duration },
    /// The body stopped: no byte for this long.
    #[error("no data for {0:?} (stalled)")]
    Stalled(Duration),
    /// No response headers within this long (an outage, or a server that does not answer).
    #[error("no response within {0:?}")]
    NoResponse(Duration),
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("network error: {0}")]
    Network(String),
    #[error("short response: got {got} of {want} bytes")]
    Short { got: u64, want: u64 },
    #[error("response larger than the {0} bytes allowed")]
    TooLarge(u64),
    #[error("{0}")]
    File(String),
    /// A request that cannot be sent as built (a header value with a newline) or a redirect
    /// loop: no retry can change it.
    #[error("the request cannot be made: {0}")]
    Unsendable(String),
    /// The server's TLS certificate does not verify: no retry can change it.
    #[error("{0}")]
    Certificate(String),
}

impl FetchError {
    /// Whether a retry of the same request may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Status(s) | FetchError::Throttled { status: s, .. } => {
                RetryOn::TimeoutThrottleAndFrom500.retries(*s)
            }
            FetchError::Stalled(_)
            | FetchError::NoResponse(_)
            | FetchError::Connect(_)
            | FetchError::Network(_)
            | FetchError::Short { .. } => true,
            _ => false,
        }
    }
}

/// The longest `Retry-After` a segment request waits (the shared cap of every client).
pub use amzmusic_common::http::MAX_RETRY_AFTER;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub connect_timeout: Duration,
    /// Give up on a response that delivers no byte for this long.
    pub stall_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(5),
            stall_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Wait before retry `n` (from 1) after `e`: exponential, capped, with up to 50 % jitter so
    /// that clients hit by the same outage do not retry in step, and never less than the
    /// server's `Retry-After` (up to [`MAX_RETRY_AFTER`]).
    pub fn delay(&self, n: u32, e: &FetchError) -> Duration {
        let retry_after = match e {
            FetchError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        Backoff::new(self.base_delay, self.max_delay).delay(n, retry_after)
    }
}

/// One request; header values are secret and never logged.
#[derive(Clone)]
pub struct Request {
    pub url: Url,
    pub range: Option<ByteRange>,
    pub headers: Vec<(String, String)>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The query of signed URLs holds the signature: print the path only.
        write!(f, "{}", redact(&self.url))?;
        if let Some(r) = self.range {
            write!(f, " [{}-{}]", r.start, r.end)?;
        }
        Ok(())
    }
}

/// A URL fit for logs: scheme, host and path, never the (signed) query.
pub fn redact(u: &Url) -> String {
    redact_url(u)
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub data: Bytes,
    /// Time to the response headers.
    pub ttfb: Duration,
    pub total: Duration,
}

/// A response being read: its body comes chunk by chunk as the network delivers it, each
/// chunk within the stall timeout, cut to the requested range.
pub struct Body {
    stream: Option<futures::stream::BoxStream<'static, reqwest::Result<Bytes>>>,
    /// A `file://` body, read at once.
    file: Option<Bytes>,
    ttfb: Duration,
    stall: Duration,
    /// Body bytes to drop first (a server that ignored Range answered 200 with everything).
    skip: u64,
    seen: u64,
    /// Bytes this response must deliver, when known (range, or Content-Length).
    want: Option<u64>,
    max_bytes: u64,
    got: u64,
    done: bool,
}

impl Body {
    /// From sending the request to the response headers.
    pub fn ttfb(&self) -> Duration {
        self.ttfb
    }

    /// How many bytes this response will deliver, when the range or the headers say.
    pub fn expected_len(&self) -> Option<u64> {
        self.want
    }

    /// The next bytes of the body; `None` once it is complete (a body shorter than promised is
    /// [`FetchError::Short`]); [`FetchError::Stalled`] when no byte comes for the stall timeout.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, FetchError> {
        tokio::time::timeout(self.stall, self.next_raw())
            .await
            .map_err(|_| FetchError::Stalled(self.stall))?
    }

    /// As [`next_chunk`](Self::next_chunk) without the stall timeout (the caller keeps its
    /// own). Cancel-safe: dropped while waiting, it loses no byte.
    pub async fn next_raw(&mut self) -> Result<Option<Bytes>, FetchError> {
        loop {
            if self.done || self.want.is_some_and(|w| self.got >= w) {
                self.done = true;
                return Ok(None);
            }
            let next = match self.stream.as_mut() {
                None => self.file.take().map(Ok),
                Some(s) => s.next().await,
            };
            let Some(chunk) = next else {
                self.done = true;
                if let Some(w) = self.want.filter(|w| self.got < *w) {
                    return Err(FetchError::Short {
                        got: self.got,
                        want: w,
                    });
                }
                return Ok(None);
            };
            let chunk = chunk.map_err(|e| FetchError::Network(without_url(&e)))?;
            let start = self.seen;
            self.seen += chunk.len() as u64;
            if self.seen <= self.skip {
                continue;
            }
            let mut c = chunk.slice(self.skip.saturating_sub(start) as usize..);
            let limit = self.want.unwrap_or(self.max_bytes);
            if self.got + c.len() as u64 > limit {
                if self.want.is_none() {
                    return Err(FetchError::TooLarge(self.max_bytes));
                }
                c.truncate((limit - self.got) as usize);
            }
            self.got += c.len() as u64;
            if !c.is_empty() {
                return Ok(Some(c));
            }
        }
    }
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    pub policy: RetryPolicy,
    /// Its DNS resolver: names resolving to addresses more private than the manifest's are
    /// refused ([`url_policy::GuardedResolver`]).
    resolver: GuardedResolver,
    allow: AllowList,
}

impl Fetcher {
    /// A client with `transport`'s CA file and proxy (the element's `ca-file` and `proxy`).
    pub fn new(
        policy: RetryPolicy,
        user_agent: &str,
        transport: &Transport,
    ) -> Result<Fetcher, String> {
        Self::with_allow_list(policy, user_agent, transport, AllowList::default())
    }

    /// [`Fetcher::new`], also reaching the hosts and networks of `allow` whatever their
    /// address class (`allowed-hosts`).
    pub fn with_allow_list(
        policy: RetryPolicy,
        user_agent: &str,
        transport: &Transport,
        allow: AllowList,
    ) -> Result<Fetcher, String> {
        let resolver = GuardedResolver::new(allow.clone());
        let client = transport
            .client_builder(user_agent)
            .connect_timeout(policy.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .redirect(url_policy::redirect_policy(allow.clone()))
            .dns_resolver(Arc::new(resolver.clone()))
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        Ok(Fetcher {
            client,
            policy,
            resolver,
            allow,
        })
    }

    /// The manifest the requests come from: its address class is the floor below which no
    /// resolved address is reached (a DNS lookup when its host is a name).
    pub async fn set_origin(&self, manifest: &url::Url) {
        self.resolver.set_origin(manifest).await;
    }

    /// What `allowed-hosts` allows, for the checks of the URLs a manifest names.
    pub fn allow_list(&self) -> &AllowList {
        &self.allow
    }

    /// One attempt, read whole; `max_bytes` bounds the body whatever the server says.
    pub async fn fetch_once(&self, req: &Request, max_bytes: u64) -> Result<Fetched, FetchError> {
        let started = Instant::now();
        let mut body = self.open(req, 0, max_bytes).await?;
        let mut buf = BytesMut::new();
        while let Some(c) = body.next_chunk().await? {
            buf.extend_from_slice(&c);
        }
        Ok(Fetched {
            data: buf.freeze(),
            ttfb: body.ttfb(),
            total: started.elapsed(),
        })
    }

    /// Sends one attempt and returns once the response headers are in; the body then comes
    /// with [`Body::next_chunk`]. `from` skips that many bytes of what `req` asks for (a retry
    /// resuming after a partial delivery asks the server for the rest only).
    pub async fn open(&self, req: &Request, from: u64, max_bytes: u64) -> Result<Body, FetchError> {
        let started = Instant::now();
        // What to ask for: the request's range from `from` on, or the resource from `from`.
        let (first, last) = match req.range {
            Some(r) => (r.start + from, Some(r.end)),
            None => (from, None),
        };
        let want_range = req.range.map(|r| r.len().saturating_sub(from));
        if want_range.is_some_and(|w| w > max_bytes) {
            return Err(FetchError::TooLarge(max_bytes));
        }
        if req.url.scheme() == "file" {
            let data = fetch_file(&req.url, first, last, max_bytes).await?;
            return Ok(Body {
                stream: None,
                want: Some(data.len() as u64),
                file: Some(data),
                ttfb: started.elapsed(),
                stall: self.policy.stall_timeout,
                skip: 0,
                seen: 0,
                max_bytes,
                got: 0,
                done: false,
            });
        }
        let mut rb = self.client.get(req.url.clone());
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        match (first, last) {
            (f, Some(l)) => rb = rb.header("Range", format!("bytes={f}-{l}")),
            (f, None) if f > 0 => rb = rb.header("Range", format!("bytes={f}-")),
            _ => {}
        }
        let resp = tokio::time::timeout(self.policy.stall_timeout, rb.send())
            .await
            .map_err(|_| FetchError::NoResponse(self.policy.stall_timeout))?
            .map_err(|e| {
                // A refused certificate, then what is final (a name the URL policy refused
                // fails at connect), before the connect test.
                if let Some(why) = certificate_error(&e) {
                    FetchError::Certificate(certificate_message(&why))
                } else if is_final(&e) {
                    FetchError::Unsendable(error_chain_without_url(&e))
                } else if e.is_connect() {
                    FetchError::Connect(without_url(&e))
                } else {
                    FetchError::Network(without_url(&e))
                }
            })?;
        let ttfb = started.elapsed();
        let status = resp.status().as_u16();
        match status {
            200 | 206 => {}
            401 | 403 => return Err(FetchError::Forbidden(status)),
            404 | 410 => return Err(FetchError::NotFound(status)),
            s => {
                let throttled = RetryOn::TimeoutThrottleAndFrom500.retries(s);
                return Err(match retry_after_secs(resp.headers()) {
                    Some(secs) if throttled => FetchError::Throttled {
                        status: s,
                        retry_after: Duration::from_secs(secs),
                    },
                    _ => FetchError::Status(s),
                });
            }
        }
        // A server ignoring Range answers 200 with the whole resource: cut ours out of it.
        let skip = if status == 200 { first } else { 0 };
        let want = want_range.or_else(|| {
            resp.content_length()
                .map(|n| n.saturating_sub(if status == 200 { first } else { 0 }))
        });
        if want.is_some_and(|w| w > max_bytes) {
            return Err(FetchError::TooLarge(max_bytes));
        }
        Ok(Body {
            stream: Some(resp.bytes_stream().boxed()),
            file: None,
            ttfb,
            stall: self.policy.stall_timeout,
            skip,
            seen: 0,
            want,
            max_bytes,
            got: 0,
            done: false,
        })
    }
}

/// reqwest errors print the URL, which holds the signature of signed URLs: describe the error
/// by its kind and its causes only.
fn without_url(e: &reqwest::Error) -> String {
    error_kind_and_causes(e)
}

/// Bytes `first..=last` (or to the end) of a `file://` URL.
async fn fetch_file(
    url: &Url,
    first: u64,
    last: Option<u64>,
    max_bytes: u64,
) -> Result<Bytes, FetchError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let path = url
        .to_file_path()
        .map_err(|_| FetchError::File(format!("bad file URL {url}")))?;
    let mut f = tokio::fs::File::open(&path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FetchError::NotFound(404),
            _ => FetchError::File(format!("{}: {e}", path.display())),
        })?;
    let len = f
        .metadata()
        .await
        .map_err(|e| FetchError::File(e.to_string()))?
        .len();
    let n = match last {
        Some(l) => (l + 1).saturating_sub(first),
        None => len.saturating_sub(first),
    };
    if n > max_bytes {
        return Err(FetchError::TooLarge(max_bytes));
    }
    f.seek(std::io::SeekFrom::Start(first))
        .await
        .map_err(|e| FetchError::File(e.to_string()))?;
    let mut buf = vec![0u8; n.min(len.saturating_sub(first)) as usize];
    f.read_exact(&mut buf)
        .await
        .map_err(|e| FetchError::File(e.to_string()))?;
    if (buf.len() as u64) < n {
        return Err(FetchError::Short {
            got: buf.len() as u64,
            want: n,
        });
    }
    Ok(buf.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn a_header_that_cannot_be_sent_is_final_and_said() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let f = Fetcher::new(RetryPolicy::default(), "t", &Transport::default()).unwrap();
        let req = Request {
            url: Url::parse("http://127.0.0.1:9/seg?sig=SECRET").unwrap(),
            range: None,
            headers: vec![("x-amz-music-segment-token".into(), "a\nb".into())],
        };
        let Err(e) = rt.block_on(f.open(&req, 0, 1024)) else {
            panic!("sent")
        };
        assert!(matches!(e, FetchError::Unsendable(_)), "{e:?}");
        assert!(!e.is_transient());
        let msg = e.to_string();
        assert!(
            msg.contains("builder error") && !msg.contains("SECRET"),
            "{msg}"
        );
    }

    /// A loopback listener that counts the connections it gets and answers each with `answer`.
    fn counting_server(rt: &tokio::runtime::Runtime, answer: String) -> (u16, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        rt.spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(answer.as_bytes()).await;
            }
        });
        (port, count)
    }

    /// The URL policy holds where the request is made (issue 20): a host name that resolves
    /// to loopback is refused for a manifest on a public address, before any connection and
    /// without a retry; a redirect that changes the scheme is refused after one request.
    #[test]
    fn names_resolving_below_the_origin_and_scheme_changing_redirects_are_final() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (port, count) =
            counting_server(&rt, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".into());
        let f = Fetcher::new(RetryPolicy::default(), "t", &Transport::default()).unwrap();
        rt.block_on(f.set_origin(&Url::parse("https://203.0.113.9/m.mpd").unwrap()));
        let req = |url: String| Request {
            url: Url::parse(&url).unwrap(),
            range: None,
            headers: vec![],
        };
        let Err(e) =
            rt.block_on(f.fetch_once(&req(format!("http://localhost:{port}/seg?sig=S")), 1024))
        else {
            panic!("fetched")
        };
        assert!(matches!(e, FetchError::Unsendable(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("localhost resolves only to loopback addresses") && !msg.contains("sig=S"),
            "{msg}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 0, "no connection");
        // Allowed by name, the same request is made.
        let f = Fetcher::with_allow_list(
            RetryPolicy::default(),
            "t",
            &Transport::default(),
            AllowList::parse("localhost").unwrap(),
        )
        .unwrap();
        rt.block_on(f.set_origin(&Url::parse("https://203.0.113.9/m.mpd").unwrap()));
        let got = rt
            .block_on(f.fetch_once(&req(format!("http://localhost:{port}/seg")), 1024))
            .unwrap();
        assert_eq!(&got.data[..], b"ok");

        let (to, _) = counting_server(&rt, String::new());
        let (port, count) = counting_server(
            &rt,
            format!("HTTP/1.1 302 Found\r\nLocation: https://127.0.0.1:{to}/seg\r\nContent-Length: 0\r\n\r\n"),
        );
        let f = Fetcher::new(RetryPolicy::default(), "t", &Transport::default()).unwrap();
        let Err(e) = rt.block_on(f.fetch_once(&req(format!("http://127.0.0.1:{port}/seg")), 1024))
        else {
            panic!("followed")
        };
        assert!(matches!(e, FetchError::Unsendable(_)), "{e:?}");
        assert!(e.to_string().contains("changes the scheme"), "{e}");
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        for n in 1..20 {
            let d = p.delay(n, &FetchError::Status(503));
            let exp = p
                .base_delay
                .saturating_mul(1 << (n - 1).min(16))
                .min(p.max_delay);
            assert!(d >= exp && d <= exp.mul_f64(1.5), "{n}: {d:?}");
        }
        // The server's Retry-After is the least wait, up to MAX_RETRY_AFTER.
        let throttled = |s| FetchError::Throttled {
            status: 503,
            retry_after: Duration::from_secs(s),
        };
        assert!(p.delay(1, &throttled(2)) >= Duration::from_secs(2));
        assert!(throttled(2).is_transient());
        assert!(p.delay(20, &throttled(30)) <= MAX_RETRY_AFTER.mul_f64(1.5));
    }

    #[test]
    fn redaction_hides_signed_queries() {
        let u = Url::parse("https://cdn/x/a.mp4?ao=1&sig=SECRET").unwrap();
        let r = Request {
            url: u.clone(),
            range: Some(ByteRange { start: 0, end: 9 }),
            headers: vec![("x-token".into(), "SECRET".into())],
        };
        let s = format!("{r:?}");
        assert!(!s.contains("SECRET"), "{s}");
        assert!(s.contains("/x/a.mp4") && s.contains("0-9"));
    }

    #[test]
    fn transient_errors() {
        assert!(FetchError::Status(503).is_transient());
        assert!(FetchError::Status(429).is_transient());
        assert!(!FetchError::Forbidden(403).is_transient());
        assert!(!FetchError::NotFound(404).is_transient());
        assert!(FetchError::Short { got: 1, want: 2 }.is_transient());
    }
}
