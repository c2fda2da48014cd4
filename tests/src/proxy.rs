// SPDX-License-Identifier: MPL-2.0
//! A small forward HTTP proxy on loopback, for the proxy tests: `CONNECT host:port` tunnels
//! (what a client sends for https) and absolute-form requests (`GET http://host:port/path`, for
//! plain http) are passed to their upstream, and what passed is counted. The local port of
//! every upstream connection is kept, so a test can check against the emulator's request log
//! (each entry's `peer`) that every request came through here.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// The longest request head the proxy reads.
const MAX_HEAD: usize = 64 * 1024;

#[derive(Default)]
struct Seen {
    /// `host:port` of every CONNECT.
    tunnels: Vec<String>,
    /// The request line of every absolute-form request that opened a connection.
    forwarded: Vec<String>,
    /// Local ports of the proxy's upstream connections.
    upstream_ports: HashSet<u16>,
    /// Requests it could not pass on (and answered 400 or 502).
    refused: Vec<String>,
}

/// A running proxy, stopped on drop.
pub struct ForwardProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

impl ForwardProxy {
    pub fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(c) = conn {
                    let s = s.clone();
                    thread::spawn(move || handle(c, &s));
                }
            }
        });
        ForwardProxy {
            url: format!("http://{addr}"),
            seen,
            stop,
            addr,
        }
    }

    pub fn tunnels(&self) -> Vec<String> {
        self.seen.lock().unwrap().tunnels.clone()
    }
    pub fn forwarded(&self) -> Vec<String> {
        self.seen.lock().unwrap().forwarded.clone()
    }
    pub fn refused(&self) -> Vec<String> {
        self.seen.lock().unwrap().refused.clone()
    }
    /// Whether `peer` (`127.0.0.1:PORT`, as the emulator logs a client) is one of this
    /// proxy's upstream connections.
    pub fn carried(&self, peer: &str) -> bool {
        peer.rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| self.seen.lock().unwrap().upstream_ports.contains(&p))
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn handle(mut client: TcpStream, seen: &Mutex<Seen>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            return;
        }
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_string();
    let line = text.lines().next().unwrap_or("").to_string();
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let refuse = |mut client: TcpStream, status: &str| {
        seen.lock().unwrap().refused.push(line.clone());
        let _ = write!(
            client,
            "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    let (authority, connect) = if method == "CONNECT" {
        (target.to_string(), true)
    } else if let Some(rest) = target.strip_prefix("http://") {
        (rest.split('/').next().unwrap_or("").to_string(), false)
    } else {
        return refuse(client, "400 Bad Request");
    };
    let Ok(upstream) = TcpStream::connect(&authority) else {
        return refuse(client, "502 Bad Gateway");
    };
    {
        let mut s = seen.lock().unwrap();
        if let Ok(local) = upstream.local_addr() {
            s.upstream_ports.insert(local.port());
        }
        if connect {
            s.tunnels.push(authority.clone());
        } else {
            s.forwarded.push(line.clone());
        }
    }
    let mut upstream_w = upstream.try_clone().expect("clone upstream");
    if connect {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .is_err()
        {
            return;
        }
        // Whatever the client sent after the CONNECT head goes up the tunnel.
        if upstream_w.write_all(&head[end..]).is_err() {
            return;
        }
    } else if upstream_w.write_all(&head).is_err() {
        // An HTTP/1.1 server takes the absolute form as it is; later requests on this
        // connection go to the same upstream.
        return;
    }
    let _ = client.set_read_timeout(None);
    let mut client_r = client.try_clone().expect("clone client");
    let mut upstream_r = upstream;
    let up = thread::spawn(move || {
        let _ = std::io::copy(&mut client_r, &mut upstream_w);
        let _ = upstream_w.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream_r, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.join();
}
