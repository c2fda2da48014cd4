//! License HTTP exchange: POST a challenge with the documented headers, retry timeouts, 429 and
//! 5xx with bounded exponential backoff and jitter, map other answers to the error table.

use std::time::{Duration, Instant};

use amzmusic_common::http::{
    body_limit, error_chain_without_url, error_text_without_url, is_final, read_body,
    retry_after_secs, BodyError,
};

use crate::protocol::{
    decode_license_response_body, encode_license_request_body, ClientAction, LicenseError,
};

/// Header carrying the `license-expiration-secs` property.
pub const LICENSE_EXPIRATION_HEADER: &str = "x-amz-music-license-expiration-secs";

/// Everything a request carries besides the challenge. Values are secret: never log them.
#[derive(Clone, Default)]
pub struct RequestHeaders {
    /// Full `Authorization` value (`Bearer …`).
    pub authorization: Option<String>,
    pub user_agent: String,
    /// The audio object's `key` list.
    pub extra: Vec<(String, String)>,
    pub license_expiration_secs: Option<u32>,
    /// How the challenge and the license travel.
    pub body: BodyFormat,
}

/// How a license exchange carries the CDM's challenge and the server's license.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFormat {
    /// Amazon's JSON wrapping (`encode_license_request_body`/`decode_license_response_body`).
    #[default]
    Amazon,
    /// The challenge is the body and the answer's body the license, as EME players send them
    /// to Clear Key and generic license servers.
    Raw,
}

/// `Authorization` value for a token that may or may not carry its scheme already.
pub fn bearer(token: &str) -> String {
    if token.starts_with("Bearer ") {
        token.to_owned()
    } else {
        format!("Bearer {token}")
    }
}

/// The policy type every stack shares.
pub use amzmusic_common::http::RetryPolicy;

/// The numbers of docs/license-protocol.md: 5 attempts, from 500 ms doubling to at most 8 s
/// (plus jitter, never under `Retry-After`), 10 s per request.
pub const LICENSE_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 5,
    base_delay: Duration::from_millis(500),
    max_delay: Duration::from_secs(8),
    request_timeout: Duration::from_secs(10),
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The server's answer, final (not retryable, or retries used up).
    #[error("HTTP {} {} ({}) after {attempts} attempt(s)", .error.status(), .error.code(), .error.meaning())]
    Server { error: LicenseError, attempts: u32 },
    /// No answer (connection, timeout) after every attempt.
    #[error("no answer from the license server after {attempts} attempt(s): {message}")]
    Transport { message: String, attempts: u32 },
    /// A 200 whose body is not a license envelope.
    #[error("license response is not understood: {0}")]
    BadBody(String),
    /// The request cannot be made or answered as it is ([`is_final`]), not retried.
    #[error("the license request cannot be made: {0}")]
    Unanswerable(String),
}

/// A successful exchange.
pub struct Fetched {
    /// The license bytes for `Cdm::update`. Secret: never log.
    pub license: Vec<u8>,
    /// From the first POST to the answer.
    pub latency: Duration,
    /// Failed attempts before the success.
    pub failures: u32,
}

/// What one POST got back.
enum Posted {
    Ok(Vec<u8>),
    Server(LicenseError),
    Transport(String),
    /// A 200 over [`body_limit::LICENSE`]: final.
    TooLarge(String),
    /// No retry can change it ([`is_final`]).
    Unanswerable(String),
}

async fn post_once(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    headers: &RequestHeaders,
    timeout: Duration,
) -> Posted {
    let content_type = match headers.body {
        BodyFormat::Amazon => "application/json",
        BodyFormat::Raw => "application/octet-stream",
    };
    let mut req = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header(reqwest::header::ACCEPT, "application/json, */*")
        .header(reqwest::header::USER_AGENT, &headers.user_agent)
        .body(body.to_vec());
    if let Some(auth) = &headers.authorization {
        req = req.header(reqwest::header::AUTHORIZATION, auth);
    }
    for (name, value) in &headers.extra {
        req = req.header(name.as_str(), value.as_str());
    }
    if let Some(secs) = headers.license_expiration_secs {
        req = req.header(LICENSE_EXPIRATION_HEADER, secs.to_string());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        // No retry can change it: a request that cannot be made, a redirect loop, a response
        // head over the limit.
        Err(e) if is_final(&e) => return Posted::Unanswerable(error_chain_without_url(&e)),
        // reqwest's error text without the URL, never headers or bodies.
        Err(e) => return Posted::Transport(error_text_without_url(e)),
    };
    let status = resp.status().as_u16();
    let retry_after = retry_after_secs(resp.headers());
    match read_body(resp, body_limit::LICENSE).await {
        Ok(bytes) if status == 200 => Posted::Ok(bytes),
        Ok(bytes) => Posted::Server(LicenseError::from_response(status, retry_after, &bytes)),
        // An error answer's status says enough; its oversized body is not read.
        Err(BodyError::TooLarge(_)) if status != 200 => {
            Posted::Server(LicenseError::from_response(status, retry_after, &[]))
        }
        Err(e @ BodyError::TooLarge(_)) => Posted::TooLarge(e.to_string()),
        Err(BodyError::Transport(e)) => Posted::Transport(e),
    }
}

/// POSTs `challenge` and returns the license, retrying as the error table says. `refresh_token`
/// is asked once after a 401 for the current `Authorization` value; a different one earns one
/// immediate retry.
pub async fn fetch_license(
    client: &reqwest::Client,
    url: &str,
    challenge: &[u8],
    mut headers: RequestHeaders,
    policy: &RetryPolicy,
    refresh_token: impl Fn() -> Option<String>,
) -> Result<Fetched, FetchError> {
    let body = match headers.body {
        BodyFormat::Amazon => encode_license_request_body(challenge),
        BodyFormat::Raw => challenge.to_vec(),
    };
    let start = Instant::now();
    let mut refreshed = false;
    let mut retries = policy.retries();
    loop {
        let attempt = retries.begin();
        let failed = |error| FetchError::Server {
            error,
            attempts: attempt,
        };
        let (error, retry_after) =
            match post_once(client, url, &body, &headers, policy.request_timeout).await {
                Posted::Ok(bytes) => {
                    let license = match headers.body {
                        BodyFormat::Amazon => decode_license_response_body(&bytes)
                            .map_err(|e| FetchError::BadBody(e.to_string()))?,
                        BodyFormat::Raw => bytes,
                    };
                    return Ok(Fetched {
                        license,
                        latency: start.elapsed(),
                        failures: attempt - 1,
                    });
                }
                Posted::Server(error) => match error.client_action() {
                    ClientAction::Fail => return Err(failed(error)),
                    ClientAction::RefreshTokenThenRetryOnce => {
                        let fresh = if refreshed { None } else { refresh_token() };
                        refreshed = true;
                        match fresh {
                            Some(auth) if Some(&auth) != headers.authorization.as_ref() => {
                                // At once, and whatever attempts are left.
                                headers.authorization = Some(auth);
                                continue;
                            }
                            _ => return Err(failed(error)),
                        }
                    }
                    ClientAction::RetryWithBackoff => {
                        let retry_after = error.retry_after_secs().map(Duration::from_secs);
                        (failed(error), retry_after)
                    }
                },
                Posted::TooLarge(why) => return Err(FetchError::BadBody(why)),
                Posted::Unanswerable(why) => return Err(FetchError::Unanswerable(why)),
                Posted::Transport(message) => (
                    FetchError::Transport {
                        message,
                        attempts: attempt,
                    },
                    None,
                ),
            };
        retries.backoff_or(error, retry_after).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback HTTP server answering each connection with the next canned response and
    /// recording the request heads it saw.
    async fn serve(responses: Vec<String>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/license", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            for resp in responses {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and the body (Content-Length).
                loop {
                    let n = sock.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            seen2.lock().unwrap().push(text);
                            break;
                        }
                    }
                    if n == 0 {
                        break;
                    }
                }
                sock.write_all(resp.as_bytes()).await.unwrap();
                sock.shutdown().await.ok();
            }
        });
        (url, seen)
    }

    fn http(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
            request_timeout: Duration::from_secs(2),
        }
    }

    fn headers() -> RequestHeaders {
        RequestHeaders {
            authorization: Some(bearer("Atza|old")),
            user_agent: "test-agent/1".into(),
            extra: vec![("x-amz-key-header".into(), "v1".into())],
            license_expiration_secs: Some(120),
            body: BodyFormat::Amazon,
        }
    }

    #[tokio::test]
    async fn a_raw_body_is_the_challenge_and_the_answer_the_license() {
        let (url, seen) = serve(vec![http("200 OK", "", r#"{"keys":[]}"#)]).await;
        let h = RequestHeaders {
            body: BodyFormat::Raw,
            ..headers()
        };
        let got = fetch_license(
            &reqwest::Client::new(),
            &url,
            b"{\"kids\":[]}",
            h,
            &fast(),
            || None,
        )
        .await
        .unwrap();
        assert_eq!(got.license, br#"{"keys":[]}"#);
        let seen = seen.lock().unwrap();
        let head = seen[0].to_ascii_lowercase();
        assert!(
            head.contains("content-type: application/octet-stream"),
            "{head}"
        );
        assert!(head.ends_with("{\"kids\":[]}"), "{head}");
        assert!(head.contains("authorization: bearer atza|old"), "{head}");
    }

    #[tokio::test]
    async fn retries_5xx_and_429_then_succeeds_with_all_headers() {
        let ok = String::from_utf8(crate::protocol::encode_license_response_body(b"LIC")).unwrap();
        let (url, seen) = serve(vec![
            http(
                "503 Service Unavailable",
                "",
                r#"{"error":"service_unavailable","message":"x"}"#,
            ),
            http(
                "429 Too Many Requests",
                "Retry-After: 0\r\n",
                r#"{"error":"too_many_requests","message":"x"}"#,
            ),
            http("200 OK", "", &ok),
        ])
        .await;
        let client = reqwest::Client::new();
        let got = fetch_license(&client, &url, b"CH", headers(), &fast(), || None)
            .await
            .unwrap();
        assert_eq!(got.license, b"LIC");
        assert_eq!(got.failures, 2);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        let head = seen[2].to_ascii_lowercase();
        for h in [
            "post /license http/1.1",
            "authorization: bearer atza|old",
            "user-agent: test-agent/1",
            "x-amz-key-header: v1",
            "x-amz-music-license-expiration-secs: 120",
            "content-type: application/json",
            "\"licensechallenge\":\"q0g=\"",
        ] {
            assert!(head.contains(h), "missing {h:?} in {head}");
        }
    }

    #[tokio::test]
    async fn bounded_retries_then_the_last_error() {
        let e = http(
            "500 Internal Server Error",
            "",
            r#"{"error":"server_error","message":"x"}"#,
        );
        let (url, seen) = serve(vec![e.clone(), e.clone(), e]).await;
        let err = fetch_license(
            &reqwest::Client::new(),
            &url,
            b"CH",
            headers(),
            &fast(),
            || None,
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(err, FetchError::Server { attempts: 3, ref error } if error.status() == 500)
        );
        assert_eq!(seen.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn non_retryable_statuses_fail_at_once() {
        for (status, code) in [
            ("400 Bad Request", "malformed_challenge"),
            ("403 Forbidden", "not_entitled"),
            ("404 Not Found", "unknown_key_id"),
        ] {
            let body = format!(r#"{{"error":"{code}","message":"m"}}"#);
            let (url, seen) = serve(vec![http(status, "", &body)]).await;
            let err = fetch_license(
                &reqwest::Client::new(),
                &url,
                b"CH",
                headers(),
                &fast(),
                || None,
            )
            .await
            .err()
            .unwrap();
            match err {
                FetchError::Server { error, attempts } => {
                    assert_eq!(attempts, 1);
                    assert_eq!(error.code(), code);
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(seen.lock().unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn unauthorized_refreshes_the_token_once() {
        let ok = String::from_utf8(crate::protocol::encode_license_response_body(b"LIC")).unwrap();
        let e401 = http(
            "401 Unauthorized",
            "",
            r#"{"error":"invalid_token","message":"expired"}"#,
        );
        let (url, seen) = serve(vec![e401.clone(), http("200 OK", "", &ok)]).await;
        let got = fetch_license(
            &reqwest::Client::new(),
            &url,
            b"CH",
            headers(),
            &fast(),
            || Some(bearer("Atza|new")),
        )
        .await
        .unwrap();
        assert_eq!(got.license, b"LIC");
        assert!(seen.lock().unwrap()[1].contains("Bearer Atza|new"));

        // Same token again: no retry.
        let (url, seen) = serve(vec![e401]).await;
        let err = fetch_license(
            &reqwest::Client::new(),
            &url,
            b"CH",
            headers(),
            &fast(),
            || Some(bearer("Atza|old")),
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, FetchError::Server { ref error, .. } if error.status() == 401));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    /// A response head that never ends (1 MB of one header) is refused at hyper's head limit,
    /// once: no retry can change it.
    #[tokio::test]
    async fn a_huge_response_head_is_final() {
        let huge = format!("X-Filler: {}\r\n", "a".repeat(1 << 20));
        let (url, seen) = serve(vec![http("200 OK", &huge, "{}"); 3]).await;
        let err = fetch_license(
            &reqwest::Client::new(),
            &url,
            b"CH",
            headers(),
            &fast(),
            || None,
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, FetchError::Unanswerable(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("the response's head cannot be read")
                && text.contains("message head is too large"),
            "{text}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1, "one request");
    }

    #[tokio::test]
    async fn connection_refused_is_retried_then_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/l", listener.local_addr().unwrap());
        drop(listener);
        let err = fetch_license(
            &reqwest::Client::new(),
            &url,
            b"CH",
            headers(),
            &fast(),
            || None,
        )
        .await
        .err()
        .unwrap();
        assert!(
            matches!(err, FetchError::Transport { attempts: 3, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let p = LICENSE_RETRY;
        let d1 = p.delay(1, None);
        assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_millis(750));
        let d3 = p.delay(3, None);
        assert!(d3 >= Duration::from_secs(2) && d3 <= Duration::from_secs(3));
        let d9 = p.delay(9, None);
        assert!(d9 >= Duration::from_secs(8) && d9 <= Duration::from_secs(12));
        assert!(p.delay(1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
    }
}
