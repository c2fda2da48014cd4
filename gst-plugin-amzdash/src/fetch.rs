//! Segment downloads: one reqwest client (rustls, HTTP/2, keep-alive) per element, byte ranges,
//! connect and stall timeouts, retries with exponential backoff and jitter; `file://` for tests.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use rand::Rng;
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
    #[error("no data for {0:?} (stalled)")]
    Stalled(Duration),
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
}

impl FetchError {
    /// Whether a retry of the same request may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Status(s) => *s == 429 || *s >= 500 || *s == 408,
            FetchError::Stalled(_)
            | FetchError::Connect(_)
            | FetchError::Network(_)
            | FetchError::Short { .. } => true,
            _ => false,
        }
    }
}

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
    /// Wait before retry `n` (from 1): exponential, capped, with up to 50 % jitter so that
    /// clients hit by the same outage do not retry in step.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.max_delay);
        let jitter = rand::thread_rng().gen_range(0.0..0.5);
        exp + exp.mul_f64(jitter)
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
    let mut s = format!(
        "{}://{}{}",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.path()
    );
    if u.query().is_some() {
        s.push_str("?…");
    }
    s
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub data: Bytes,
    /// Time to the response headers.
    pub ttfb: Duration,
    pub total: Duration,
}

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    pub policy: RetryPolicy,
}

impl Fetcher {
    pub fn new(policy: RetryPolicy, user_agent: &str) -> Result<Fetcher, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(policy.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(user_agent)
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {e}"))?;
        Ok(Fetcher { client, policy })
    }

    /// One attempt; `max_bytes` bounds the body whatever the server says.
    pub async fn fetch_once(&self, req: &Request, max_bytes: u64) -> Result<Fetched, FetchError> {
        let started = Instant::now();
        if req.url.scheme() == "file" {
            return fetch_file(req, max_bytes, started).await;
        }
        let mut rb = self.client.get(req.url.clone());
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        if let Some(r) = req.range {
            rb = rb.header("Range", format!("bytes={}-{}", r.start, r.end));
        }
        let resp = tokio::time::timeout(self.policy.stall_timeout, rb.send())
            .await
            .map_err(|_| FetchError::Stalled(self.policy.stall_timeout))?
            .map_err(|e| {
                if e.is_connect() {
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
            s => return Err(FetchError::Status(s)),
        }
        let want = req.range.map(|r| r.len());
        // A server ignoring Range answers 200 with the whole file: cut our range out of it.
        let skip = if status == 200 {
            req.range.map(|r| r.start).unwrap_or(0)
        } else {
            0
        };
        let limit = want.unwrap_or(max_bytes).min(max_bytes);
        if want.is_some_and(|w| w > max_bytes) {
            return Err(FetchError::TooLarge(max_bytes));
        }
        let mut body = resp.bytes_stream();
        let mut buf = BytesMut::new();
        let mut seen = 0u64;
        loop {
            let chunk = tokio::time::timeout(self.policy.stall_timeout, body.next())
                .await
                .map_err(|_| FetchError::Stalled(self.policy.stall_timeout))?;
            let Some(chunk) = chunk else { break };
            let chunk = chunk.map_err(|e| FetchError::Network(without_url(&e)))?;
            let start = seen;
            seen += chunk.len() as u64;
            if seen <= skip {
                continue;
            }
            let from = skip.saturating_sub(start) as usize;
            buf.extend_from_slice(&chunk[from..]);
            if buf.len() as u64 >= limit {
                if want.is_none() && buf.len() as u64 > max_bytes {
                    return Err(FetchError::TooLarge(max_bytes));
                }
                buf.truncate(limit as usize);
                if want.is_some() {
                    break;
                }
            }
        }
        if let Some(w) = want {
            if (buf.len() as u64) < w {
                return Err(FetchError::Short {
                    got: buf.len() as u64,
                    want: w,
                });
            }
        }
        Ok(Fetched {
            data: buf.freeze(),
            ttfb,
            total: started.elapsed(),
        })
    }
}

/// reqwest errors print the URL, which holds the signature of signed URLs: describe the error
/// by its kind and its causes only.
fn without_url(e: &reqwest::Error) -> String {
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

async fn fetch_file(
    req: &Request,
    max_bytes: u64,
    started: Instant,
) -> Result<Fetched, FetchError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let path = req
        .url
        .to_file_path()
        .map_err(|_| FetchError::File(format!("bad file URL {}", req.url)))?;
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
    let (start, n) = match req.range {
        Some(r) => (r.start, r.len()),
        None => (0, len),
    };
    if n > max_bytes {
        return Err(FetchError::TooLarge(max_bytes));
    }
    f.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| FetchError::File(e.to_string()))?;
    let mut buf = vec![0u8; n.min(len.saturating_sub(start)) as usize];
    f.read_exact(&mut buf)
        .await
        .map_err(|e| FetchError::File(e.to_string()))?;
    if (buf.len() as u64) < n {
        return Err(FetchError::Short {
            got: buf.len() as u64,
            want: n,
        });
    }
    Ok(Fetched {
        data: buf.into(),
        ttfb: started.elapsed(),
        total: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy::default();
        for n in 1..20 {
            let d = p.delay(n);
            let exp = p
                .base_delay
                .saturating_mul(1 << (n - 1).min(16))
                .min(p.max_delay);
            assert!(d >= exp && d <= exp.mul_f64(1.5), "{n}: {d:?}");
        }
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
