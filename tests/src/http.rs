// SPDX-License-Identifier: MPL-2.0
//! A minimal HTTP/1.1 client for loopback servers (the emulator's admin API and its CDN), so
//! the tests need no HTTP client crate and no async runtime of their own.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::time::Duration;

/// `method url` with an optional JSON body. Returns the status and the body.
pub fn http(method: &str, url: &str, json_body: Option<&str>) -> Result<(u16, Vec<u8>)> {
    http_within(method, url, json_body, Duration::from_secs(10))
}

/// [`http`], waiting up to `timeout` for the answer.
pub fn http_within(
    method: &str,
    url: &str,
    json_body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    request(method, url, &[], json_body, timeout)
}

/// `GET url` with extra request headers (a signed CDN URL's per-track headers, say).
pub fn http_get_with(url: &str, headers: &[(String, String)]) -> Result<(u16, Vec<u8>)> {
    request("GET", url, headers, None, Duration::from_secs(60))
}

fn request(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    json_body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url}: only http:// is supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = std::net::TcpStream::connect(host).with_context(|| format!("connecting {host}"))?;
    s.set_read_timeout(Some(timeout))?;
    let body = json_body.unwrap_or("");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: amzmusic-tests\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if json_body.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{url}: no HTTP header end"))?;
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{url}: bad status line {head:?}"))?;
    let mut body = resp[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
