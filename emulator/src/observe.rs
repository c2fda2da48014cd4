//! What tests see and steer: the request log (every call, secrets reduced to header names) and
//! fault injection (the next N requests matching a path fail in a chosen way).

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

/// Headers whose values are recorded; every other header is recorded by name only.
const PLAIN_HEADERS: [&str; 13] = [
    "range",
    "user-agent",
    "x-amzn-audio-device-capability",
    "x-amzn-audio-drmtype",
    "market",
    "music-territory",
    "x-amzn-market",
    "x-amzn-feature-flags",
    "cache-control",
    "content-type",
    "content-length",
    "device-type",
    "x-amz-music-license-expiration-secs",
];

/// Query parameters whose values are secrets.
const SECRET_QUERY: [&str; 6] = [
    "sig",
    "access_token",
    "refresh_token",
    "code",
    "device_code",
    "user_code",
];

#[derive(Debug, Clone, Serialize)]
pub struct LoggedRequest {
    pub seq: u64,
    /// Milliseconds since the emulator started, when the request arrived.
    pub at_ms: u64,
    pub method: String,
    /// The path with secret query values replaced by `REDACTED`.
    pub path: String,
    /// Which service answered: `cdn`, `open`, `lwa`, `api`, `graphql`, `license`,
    /// `images`, `admin`.
    pub service: String,
    pub status: u16,
    pub duration_ms: u64,
    pub headers: Vec<(String, Option<String>)>,
    pub fault: Option<String>,
    pub http_version: String,
    /// The request came over TLS (`serve --tls`).
    pub tls: bool,
    /// The client's address (a proxy's, for a request that came through one).
    pub peer: String,
}

pub struct RequestLog {
    started: Instant,
    entries: Mutex<(u64, VecDeque<LoggedRequest>)>,
}

/// The most entries kept (older ones are dropped).
const LOG_CAPACITY: usize = 100_000;

impl Default for RequestLog {
    fn default() -> Self {
        RequestLog {
            started: Instant::now(),
            entries: Mutex::new((0, VecDeque::new())),
        }
    }
}

pub fn service_of(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "cdn" => "cdn",
        "open" => "open",
        "auth" | "activate" => "lwa",
        "images" => "images",
        "v1" | "api" => "api",
        "graphql" => "graphql",
        "license" => "license",
        "_emulator" => "admin",
        _ => "other",
    }
}

/// The path and query with secret values redacted.
pub fn redact_uri(uri: &axum::http::Uri) -> String {
    let mut out = uri.path().to_string();
    if let Some(q) = uri.query() {
        let parts: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if SECRET_QUERY.contains(&k) => format!("{k}=REDACTED"),
                _ => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&parts.join("&"));
    }
    out
}

pub fn loggable_headers(h: &axum::http::HeaderMap) -> Vec<(String, Option<String>)> {
    h.iter()
        .map(|(k, v)| {
            let name = k.as_str().to_string();
            let value = PLAIN_HEADERS
                .contains(&name.as_str())
                .then(|| v.to_str().unwrap_or("").to_string());
            (name, value)
        })
        .collect()
}

impl RequestLog {
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn push(&self, mut e: LoggedRequest) {
        let mut g = self.entries.lock().unwrap();
        g.0 += 1;
        e.seq = g.0;
        g.1.push_back(e);
        if g.1.len() > LOG_CAPACITY {
            g.1.pop_front();
        }
    }

    pub fn since(&self, seq: u64) -> Vec<LoggedRequest> {
        self.entries
            .lock()
            .unwrap()
            .1
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        self.entries.lock().unwrap().1.clear();
    }
}

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this HTTP status and a JSON error body.
    Status(u16),
    /// Send the headers, then drop the connection before the body.
    Reset,
    /// Never answer (until the client gives up or `seconds` pass).
    Stall {
        #[serde(default = "default_stall")]
        seconds: u64,
    },
    /// Send only the first `bytes` of the body, then drop the connection.
    Truncate { bytes: u64 },
    /// Answer normally after a delay.
    Delay { ms: u64 },
    /// Answer 200 with `bytes` of filler and no Content-Length, streamed as the client reads
    /// (a broken or hostile server's endless body; the emulator holds none of it).
    Oversize { bytes: u64 },
    /// Answer `302 Found` back to the same URL (a redirect loop, while the rule's count lasts).
    RedirectLoop,
    /// Answer normally, with the body's bytes from offset `at` overwritten by `hex` (hex
    /// digits; the length is unchanged): a box header that lies, a flipped sample byte.
    Patch { at: u64, hex: String },
    /// Answer 200 with a response header of `bytes` bytes (`x-filler: aaa…`): a server that
    /// never ends its head.
    HugeHeader { bytes: u64 },
}

fn default_stall() -> u64 {
    3600
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(default)]
    pub id: u64,
    /// The request path must contain this (query excluded).
    pub path_contains: String,
    #[serde(default)]
    pub method: Option<String>,
    /// How many matching requests fail; then the rule is spent.
    #[serde(default = "one")]
    pub count: u32,
    pub action: FaultAction,
}

fn one() -> u32 {
    1
}

#[derive(Default)]
pub struct Faults {
    rules: Mutex<(u64, Vec<FaultRule>)>,
}

impl Faults {
    pub fn add(&self, mut rule: FaultRule) -> u64 {
        let mut g = self.rules.lock().unwrap();
        g.0 += 1;
        rule.id = g.0;
        g.1.push(rule);
        g.0
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().1.clear();
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.rules.lock().unwrap().1.clone()
    }

    /// Takes one use of the first rule matching this request, if any.
    pub fn take(&self, method: &str, path: &str) -> Option<FaultAction> {
        let mut g = self.rules.lock().unwrap();
        let idx = g.1.iter().position(|r| {
            r.count > 0
                && path.contains(&r.path_contains)
                && r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        let rule = &mut g.1[idx];
        rule.count -= 1;
        let action = rule.action.clone();
        if rule.count == 0 {
            g.1.remove(idx);
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_consumed_in_order() {
        let f = Faults::default();
        f.add(FaultRule {
            id: 0,
            path_contains: "/cdn/".into(),
            method: None,
            count: 2,
            action: FaultAction::Status(503),
        });
        assert_eq!(f.take("GET", "/api/x"), None);
        assert_eq!(f.take("GET", "/cdn/a"), Some(FaultAction::Status(503)));
        assert_eq!(f.take("GET", "/cdn/b"), Some(FaultAction::Status(503)));
        assert_eq!(f.take("GET", "/cdn/c"), None);
    }

    #[test]
    fn fault_json_forms() {
        let r: FaultRule =
            serde_json::from_str(r#"{"path_contains":"/cdn","action":{"truncate":{"bytes":10}}}"#)
                .unwrap();
        assert_eq!(r.count, 1);
        assert_eq!(r.action, FaultAction::Truncate { bytes: 10 });
        let r: FaultRule =
            serde_json::from_str(r#"{"path_contains":"/x","count":3,"action":"reset"}"#).unwrap();
        assert_eq!(r.action, FaultAction::Reset);
        let r: FaultRule =
            serde_json::from_str(r#"{"path_contains":"/x","action":{"status":500}}"#).unwrap();
        assert_eq!(r.action, FaultAction::Status(500));
    }

    #[test]
    fn secrets_are_redacted() {
        let u: axum::http::Uri = "/cdn/T/a.mp4?ao=1&exp=2&sig=deadbeef".parse().unwrap();
        assert_eq!(redact_uri(&u), "/cdn/T/a.mp4?ao=1&exp=2&sig=REDACTED");
        let mut h = axum::http::HeaderMap::new();
        h.insert("authorization", "Bearer Atza|secret".parse().unwrap());
        h.insert("range", "bytes=0-1".parse().unwrap());
        let l = loggable_headers(&h);
        assert!(l.contains(&("authorization".into(), None)));
        assert!(l.contains(&("range".into(), Some("bytes=0-1".into()))));
    }
}
