// SPDX-License-Identifier: MPL-2.0
//! The license manager against a loopback license server speaking docs/license-protocol.md
//! with the crate's server half: sessions, key waits, first requests and renewals.

use std::io::{Read, Write};
use std::sync::Mutex;

use super::*;
use crate::cdm::StubCdm;
use crate::fetch::bearer;
use crate::protocol::{self, LicenseError, LicensePolicy, WidevinePsshData};

const KID: KeyId = KeyId([0x11; 16]);
const KEY: [u8; 16] = [0x22; 16];

/// One POST the server saw: the kind of request and its `Authorization` header.
type Posted = (String, Option<String>);

struct LicenseServer {
    url: String,
    log: Arc<Mutex<Vec<Posted>>>,
}

impl LicenseServer {
    /// `answer(n)` decides the n-th request's fate (0-based).
    fn start(
        answer: impl Fn(usize) -> Result<LicensePolicy, LicenseError> + Send + 'static,
    ) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/license", listener.local_addr().unwrap());
        let log: Arc<Mutex<Vec<Posted>>> = Arc::default();
        let seen = log.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let Some((head, body)) = read_request(&mut stream) else {
                    continue;
                };
                let auth = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("authorization")
                        .then(|| value.trim().to_owned())
                });
                let challenge = protocol::decode_license_request_body(&body);
                let kind = challenge
                    .as_ref()
                    .ok()
                    .and_then(|c| protocol::parse_challenge(c).ok())
                    .map_or("malformed".into(), |p| format!("{:?}", p.kind));
                seen.lock().unwrap().push((kind, auth));
                let result = answer(n).and_then(|policy| {
                    protocol::issue_license(&challenge?, |k| (*k == KID).then_some(KEY), &policy)
                });
                let (status, body) = match result {
                    Ok(l) => (200, protocol::encode_license_response_body(&l)),
                    Err(e) => (e.status(), e.to_json_body()),
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        LicenseServer { url, log }
    }

    fn kinds(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|(k, _)| k.clone())
            .collect()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let k = stream.read(&mut chunk).ok()?;
        buf.extend_from_slice(&chunk[..k]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some((text[..end].to_owned(), buf[end + 4..end + 4 + len].to_vec()));
            }
        }
        if k == 0 {
            return None;
        }
    }
}

/// The element's side: credentials from "upstream", failures recorded instead of posted.
#[derive(Default)]
struct TestHost {
    /// Tokens handed out, in order; the last one repeats.
    tokens: Vec<&'static str>,
    /// How long a lookup after the first blocks (an upstream token refresh over HTTP).
    refresh_takes: Duration,
    lookups: Mutex<usize>,
    asks: Mutex<Vec<CredentialsAsk>>,
    posted: Mutex<Vec<Failure>>,
}

impl Host for TestHost {
    fn credentials(&self, ask: CredentialsAsk) -> Credentials {
        self.asks.lock().unwrap().push(ask);
        let n = {
            let mut lookups = self.lookups.lock().unwrap();
            *lookups += 1;
            *lookups - 1
        };
        if n > 0 {
            std::thread::sleep(self.refresh_takes);
        }
        let headers = RequestHeaders {
            authorization: self
                .tokens
                .get(n.min(self.tokens.len().saturating_sub(1)))
                .map(|t| bearer(t)),
            user_agent: "license-test/1".into(),
            ..Default::default()
        };
        let serial = n.min(self.tokens.len().saturating_sub(1));
        Credentials {
            headers,
            generation: None,
            token_serial: Some(serial as u64),
        }
    }

    fn post(&self, failure: &Failure) {
        self.posted.lock().unwrap().push(failure.clone());
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        request_timeout: Duration::from_secs(2),
    }
}

fn unavailable() -> LicenseError {
    LicenseError::Unavailable {
        retry_after_secs: None,
    }
}

fn pssh() -> Vec<u8> {
    WidevinePsshData {
        key_ids: vec![KID],
        ..Default::default()
    }
    .to_pssh_box()
}

/// A manager holding `pssh()` whose license comes from `url`.
fn manager_for(url: &str, host: &Arc<dyn Host>) -> LicenseManager {
    let manager = LicenseManager::with_retry_policy(Arc::new(StubCdm::new()), fast());
    manager.reset();
    manager.stream_start();
    assert!(manager.add_pssh(pssh(), Some(url.to_owned())));
    manager.request_missing_keys(
        KeySources {
            fixed: &|_| false,
            license_url: None,
        },
        None,
        host,
    );
    manager
}

#[test]
fn a_renewal_failure_counts_attempts_as_the_first_request_does() {
    // A first request that fails: every attempt of the retry policy, then a posted error.
    let server = LicenseServer::start(|_| Err(unavailable()));
    let host = Arc::new(TestHost::default());
    let as_host: Arc<dyn Host> = host.clone();
    let manager = manager_for(&server.url, &as_host);
    let waited = manager.wait_for_key(KID, Duration::from_secs(10), || {});
    assert!(matches!(waited, Err(WaitError::Fatal)), "{waited:?}");
    let first = manager.stats();
    let first_requests = server.kinds().len();
    let posted = host.posted.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0].domain(),
        Domain::Resource(gst::ResourceError::Read)
    );
    let first_text = posted[0].message();
    assert!(first_text.contains("after 3 attempt(s)"), "{first_text}");
    manager.stop();

    // A license valid 2 s with a renewal at 1 s, whose renewal fails the same way.
    let server = LicenseServer::start(|n| match n {
        0 => Ok(LicensePolicy {
            license_duration_secs: 2,
            renewal_delay_secs: 1,
            can_renew: true,
        }),
        _ => Err(unavailable()),
    });
    let host = Arc::new(TestHost::default());
    let as_host: Arc<dyn Host> = host.clone();
    let manager = manager_for(&server.url, &as_host);
    manager
        .wait_for_key(KID, Duration::from_secs(10), || {})
        .unwrap();
    std::thread::sleep(Duration::from_millis(2300));
    let why = match manager.wait_for_key(KID, Duration::from_secs(10), || {}) {
        Err(WaitError::Failed(f @ Failure::Expired { .. })) => f.message(),
        other => panic!("{other:?}"),
    };
    let renewal = manager.stats();
    let kinds = server.kinds();
    let renewal_requests = kinds.iter().filter(|k| *k == "Renewal").count();
    manager.stop();

    println!(
        "first request: {first_requests} requests, failures {}; renewal: {renewal_requests} \
         requests, failures {}",
        first.failures, renewal.failures
    );
    assert_eq!(kinds[0], "License");
    assert_eq!(renewal.renewals, 1);
    assert_eq!(first_requests, 3);
    assert_eq!(renewal_requests, first_requests);
    assert_eq!(first.failures, 3);
    assert_eq!(renewal.failures, first.failures);
    assert!(why.contains("after 3 attempt(s)"), "{why}");
    assert!(
        host.posted.lock().unwrap().is_empty(),
        "a renewal posts nothing itself"
    );
}

#[test]
fn a_token_refresh_waits_off_the_runtime() {
    // Session A meets a 401; its refresh blocks 1.5 s "upstream". Session B, opened meanwhile
    // on the same one-worker runtime, must get its license without waiting for A's refresh.
    let a_server = LicenseServer::start(|n| match n {
        0 => Err(LicenseError::InvalidToken("expired".into())),
        _ => Ok(LicensePolicy::default()),
    });
    let a_host = Arc::new(TestHost {
        tokens: vec!["Atza|old", "Atza|new"],
        refresh_takes: Duration::from_millis(1500),
        ..Default::default()
    });
    let as_host: Arc<dyn Host> = a_host.clone();
    let a = manager_for(&a_server.url, &as_host);
    let deadline = Instant::now() + Duration::from_secs(5);
    while *a_host.lookups.lock().unwrap() < 2 {
        assert!(Instant::now() < deadline, "no refresh asked for");
        std::thread::sleep(Duration::from_millis(5));
    }

    let b_server = LicenseServer::start(|_| Ok(LicensePolicy::default()));
    let b_host: Arc<dyn Host> = Arc::new(TestHost::default());
    let started = Instant::now();
    let b = manager_for(&b_server.url, &b_host);
    b.wait_for_key(KID, Duration::from_secs(10), || {}).unwrap();
    let b_took = started.elapsed();
    assert!(
        b_took < Duration::from_millis(1000),
        "B waited {b_took:?}: A's refresh blocked the runtime"
    );

    a.wait_for_key(KID, Duration::from_secs(10), || {}).unwrap();
    let log = a_server.log.lock().unwrap().clone();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].1.as_deref(), Some("Bearer Atza|old"));
    assert_eq!(log[1].1.as_deref(), Some("Bearer Atza|new"));
    assert_eq!(
        a.stats().failures,
        1,
        "the 401 counts as one failed attempt"
    );
    assert_eq!(
        *a_host.asks.lock().unwrap(),
        [
            CredentialsAsk::Lookup,
            CredentialsAsk::Unauthorized {
                held: 0,
                token_serial: Some(0)
            }
        ],
        "the 401 asks upstream to refresh the token it refused"
    );
    a.stop();
    b.stop();
}

#[test]
fn the_same_token_after_a_401_fails_with_the_attempts_made() {
    let server = LicenseServer::start(|_| Err(LicenseError::InvalidToken("expired".into())));
    let host = Arc::new(TestHost {
        tokens: vec!["Atza|same"],
        ..Default::default()
    });
    let as_host: Arc<dyn Host> = host.clone();
    let manager = manager_for(&server.url, &as_host);
    let waited = manager.wait_for_key(KID, Duration::from_secs(10), || {});
    assert!(matches!(waited, Err(WaitError::Fatal)), "{waited:?}");
    assert_eq!(server.kinds().len(), 1, "no retry with the same token");
    let posted = host.posted.lock().unwrap().clone();
    assert_eq!(
        posted[0].domain(),
        Domain::Resource(gst::ResourceError::NotAuthorized)
    );
    assert!(posted[0].message().contains("after 1 attempt(s)"));
    assert_eq!(manager.stats().failures, 1);
    manager.stop();
}

/// Upstream with audio object generations: `lookup` answers the current one, `forbidden` a
/// refreshed one when `refreshes` (else the same one again). Its token names the generation.
struct GenerationHost {
    refreshes: bool,
    generation: Mutex<u32>,
    asks: Mutex<Vec<CredentialsAsk>>,
    posted: Mutex<Vec<Failure>>,
}

impl GenerationHost {
    fn new(refreshes: bool) -> Arc<Self> {
        Arc::new(GenerationHost {
            refreshes,
            generation: Mutex::new(1),
            asks: Mutex::default(),
            posted: Mutex::default(),
        })
    }
}

impl Host for GenerationHost {
    fn credentials(&self, ask: CredentialsAsk) -> Credentials {
        self.asks.lock().unwrap().push(ask);
        let mut g = self.generation.lock().unwrap();
        if matches!(ask, CredentialsAsk::Forbidden { .. }) && self.refreshes {
            *g += 1;
        }
        Credentials {
            headers: RequestHeaders {
                authorization: Some(bearer(&format!("gen-{g}"))),
                ..Default::default()
            },
            generation: Some(*g),
            token_serial: None,
        }
    }

    fn post(&self, failure: &Failure) {
        self.posted.lock().unwrap().push(failure.clone());
    }
}

#[test]
fn a_403_asks_once_for_a_refreshed_audio_object_then_retries_or_fails() {
    let forbidden = || LicenseError::NotEntitled("key token expired".into());
    // Refreshed: the retry carries generation 2's credentials and gets the license.
    let server = LicenseServer::start(move |n| match n {
        0 => Err(forbidden()),
        _ => Ok(LicensePolicy::default()),
    });
    let host = GenerationHost::new(true);
    let as_host: Arc<dyn Host> = host.clone();
    let manager = manager_for(&server.url, &as_host);
    manager
        .wait_for_key(KID, Duration::from_secs(10), || {})
        .unwrap();
    let auths: Vec<_> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, a)| a.clone())
        .collect();
    assert_eq!(
        auths,
        [Some("Bearer gen-1".into()), Some("Bearer gen-2".into())]
    );
    assert_eq!(
        *host.asks.lock().unwrap(),
        [
            CredentialsAsk::Lookup,
            CredentialsAsk::Forbidden { held: 1 }
        ]
    );
    assert_eq!(manager.stats().failures, 1, "the 403 is one failed attempt");
    manager.stop();

    // Not refreshed (the same generation back): no second request, the 403 is the error.
    let server = LicenseServer::start(move |_| Err(forbidden()));
    let host = GenerationHost::new(false);
    let as_host: Arc<dyn Host> = host.clone();
    let manager = manager_for(&server.url, &as_host);
    let waited = manager.wait_for_key(KID, Duration::from_secs(10), || {});
    assert!(matches!(waited, Err(WaitError::Fatal)), "{waited:?}");
    assert_eq!(server.kinds().len(), 1);
    assert_eq!(host.asks.lock().unwrap().len(), 2, "asked once");
    let posted = host.posted.lock().unwrap().clone();
    assert_eq!(
        posted[0].domain(),
        Domain::Resource(gst::ResourceError::NotAuthorized)
    );
    assert!(posted[0].message().contains("after 1 attempt(s)"));
    manager.stop();
}

#[test]
fn key_waits_time_out_announce_once_and_wake_on_flush() {
    let manager = Arc::new(LicenseManager::new(Arc::new(StubCdm::new())));
    manager.reset();
    manager.stream_start();
    manager.add_pssh(pssh(), None);
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    manager.request_missing_keys(
        KeySources {
            fixed: &|_| false,
            license_url: None,
        },
        None,
        &host,
    );
    assert!(manager.is_requested(&KID));
    let mut announced = 0;
    let waited = manager.wait_for_key(KID, Duration::from_millis(200), || announced += 1);
    assert_eq!(announced, 1);
    match waited {
        Err(WaitError::Failed(Failure::NoKey { reason, waited, .. })) => {
            assert_eq!(reason, NoKeyReason::NoLicenseUrl);
            assert_eq!(waited, Duration::from_millis(200));
        }
        other => panic!("{other:?}"),
    }

    let waiter = {
        let manager = manager.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let r = manager.wait_for_key(KeyId([9; 16]), Duration::from_secs(20), || {});
            (r, start.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    manager.set_flushing(true);
    let (r, took) = waiter.join().unwrap();
    assert!(matches!(r, Err(WaitError::Flushing)), "{r:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn fixed_keys_are_never_requested() {
    let server = LicenseServer::start(|_| Ok(LicensePolicy::default()));
    let manager = LicenseManager::with_retry_policy(Arc::new(StubCdm::new()), fast());
    manager.stream_start();
    manager.add_pssh(pssh(), None);
    assert!(
        !manager.add_pssh(pssh(), None),
        "a PSSH seen twice is not new"
    );
    let host: Arc<dyn Host> = Arc::new(TestHost::default());
    manager.request_missing_keys(
        KeySources {
            fixed: &|k| *k == KID,
            license_url: Some(server.url.clone()),
        },
        None,
        &host,
    );
    assert!(!manager.request_pending());
    assert_eq!(manager.stats().sessions, 0);
    assert!(server.kinds().is_empty());
}
