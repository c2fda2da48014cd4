// SPDX-License-Identifier: MPL-2.0
//! Which URLs a manifest may send the demuxer to. A manifest is input from the network, so the
//! URLs it names (BaseURL, Initialization, SegmentURL, SegmentTemplate) are held to rules like a
//! browser's:
//! - an `http(s)` manifest names only `http(s)` URLs, and a `file://` manifest only `file://`
//!   ones (a remote manifest never reads a local file);
//! - a manifest on a public address never reaches a private, link-local or loopback one, and a
//!   manifest on a private address never reaches loopback (the order of the Private Network
//!   Access rules browsers apply); a manifest on loopback, such as the emulator's, reaches all.
//!
//! Hosts are classed by their literal address (and `localhost`); a name that resolves to a
//! private address is not caught here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// How private an address is, most private first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddressSpace {
    Loopback,
    /// RFC 1918, unique-local, carrier-grade NAT and link-local addresses.
    Private,
    Public,
}

impl std::fmt::Display for AddressSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AddressSpace::Loopback => "loopback",
            AddressSpace::Private => "private",
            AddressSpace::Public => "public",
        })
    }
}

fn v4_space(a: Ipv4Addr) -> AddressSpace {
    let o = a.octets();
    if a.is_loopback() || a.is_unspecified() {
        AddressSpace::Loopback
    } else if a.is_private() || a.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        AddressSpace::Private
    } else {
        AddressSpace::Public
    }
}

fn v6_space(a: Ipv6Addr) -> AddressSpace {
    if let Some(v4) = a.to_ipv4_mapped() {
        return v4_space(v4);
    }
    let first = a.segments()[0];
    if a.is_loopback() || a.is_unspecified() {
        AddressSpace::Loopback
    } else if (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 {
        AddressSpace::Private
    } else {
        AddressSpace::Public
    }
}

/// The address space of `url`'s host (`file://` URLs are local: loopback).
pub fn address_space(url: &Url) -> AddressSpace {
    match url.host() {
        None => AddressSpace::Loopback,
        Some(Host::Ipv4(a)) => v4_space(a),
        Some(Host::Ipv6(a)) => v6_space(a),
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                AddressSpace::Loopback
            } else {
                match d.parse::<IpAddr>() {
                    Ok(IpAddr::V4(a)) => v4_space(a),
                    Ok(IpAddr::V6(a)) => v6_space(a),
                    Err(_) => AddressSpace::Public,
                }
            }
        }
    }
}

fn is_http(u: &Url) -> bool {
    matches!(u.scheme(), "http" | "https")
}

/// Whether a manifest at `manifest` may send the demuxer to `target`; the error says why not,
/// naming the URL without its query (which may be signed).
pub fn check(manifest: &Url, target: &Url) -> Result<(), String> {
    let shown = || {
        let mut u = target.clone();
        u.set_query(None);
        u.set_fragment(None);
        u.to_string()
    };
    let scheme_ok = match manifest.scheme() {
        "file" => target.scheme() == "file",
        _ if is_http(manifest) => is_http(target),
        _ => false,
    };
    if !scheme_ok {
        return Err(format!(
            "a {} manifest may not send the demuxer to {} (only {} URLs)",
            manifest.scheme(),
            shown(),
            if manifest.scheme() == "file" {
                "file://"
            } else {
                "http(s)"
            }
        ));
    }
    let from = address_space(manifest);
    let to = address_space(target);
    if to < from {
        return Err(format!(
            "a manifest on a {from} address may not send the demuxer to {} on a {to} address",
            shown()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(m: &str, t: &str) -> bool {
        check(&Url::parse(m).unwrap(), &Url::parse(t).unwrap()).is_ok()
    }

    #[test]
    fn schemes_follow_the_manifest() {
        assert!(ok("http://127.0.0.1:9/m.mpd", "https://cdn.example/a.mp4"));
        assert!(ok("file:///tmp/m.mpd", "file:///tmp/a.mp4"));
        let e = check(
            &Url::parse("https://cdn.example/m.mpd").unwrap(),
            &Url::parse("file:///etc/passwd").unwrap(),
        )
        .unwrap_err();
        assert!(
            e.contains("file:///etc/passwd") && e.contains("http(s)"),
            "{e}"
        );
        assert!(!ok("file:///tmp/m.mpd", "http://127.0.0.1/a.mp4"));
        assert!(!ok("https://cdn.example/m.mpd", "data:audio/mp4,xx"));
        assert!(!ok("https://cdn.example/m.mpd", "ftp://cdn.example/a.mp4"));
    }

    #[test]
    fn public_manifests_stay_public() {
        for t in [
            "http://127.0.0.1:8080/a.mp4",
            "http://localhost/a.mp4",
            "http://app.localhost/a.mp4",
            "http://10.1.2.3/a.mp4",
            "http://172.20.0.1/a.mp4",
            "http://192.168.1.1/a.mp4",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/a.mp4",
            "http://[::1]/a.mp4",
            "http://[fd00::1]/a.mp4",
            "http://[fe80::1]/a.mp4",
            "http://[::ffff:10.0.0.1]/a.mp4",
            "http://0.0.0.0/a.mp4",
        ] {
            assert!(!ok("https://cdn.example/m.mpd", t), "{t}");
        }
        assert!(ok("https://cdn.example/m.mpd", "https://8.8.8.8/a.mp4"));
        assert!(ok(
            "https://cdn.example/m.mpd",
            "https://other-cdn.example/a.mp4"
        ));
        // A private manifest reaches private and public, not loopback.
        assert!(ok("http://192.168.1.2/m.mpd", "http://10.0.0.1/a.mp4"));
        assert!(ok("http://192.168.1.2/m.mpd", "https://cdn.example/a.mp4"));
        assert!(!ok("http://192.168.1.2/m.mpd", "http://127.0.0.1/a.mp4"));
        // Loopback (the emulator) reaches everything.
        assert!(ok("http://127.0.0.1:9/m.mpd", "http://127.0.0.1:10/a.mp4"));
        assert!(ok("http://127.0.0.1:9/m.mpd", "http://10.0.0.1/a.mp4"));
    }

    #[test]
    fn the_error_hides_the_signed_query() {
        let e = check(
            &Url::parse("https://cdn.example/m.mpd").unwrap(),
            &Url::parse("http://10.0.0.1/a.mp4?sig=SECRET").unwrap(),
        )
        .unwrap_err();
        assert!(!e.contains("SECRET") && e.contains("10.0.0.1"), "{e}");
    }
}
