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
//! Hosts are classed by their literal address (and `localhost`) in [`check`]. A name that
//! resolves to a more private address is caught when it is resolved, by [`GuardedResolver`]
//! (the demuxer's segment client), and a redirect by [`redirect_policy`] (every client). An
//! [`AllowList`] (amzdashdemux's `allowed-hosts`) lets named hosts and networks be reached
//! whatever their class; the scheme rule has no exception.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
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

/// The address space of an IP address.
pub fn ip_space(ip: IpAddr) -> AddressSpace {
    match ip {
        IpAddr::V4(a) => v4_space(a),
        IpAddr::V6(a) => v6_space(a),
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

/// `u` without its query and fragment (which may be signed), for messages.
fn shown(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Hosts and networks a manifest may reach whatever their address class: host names (exact,
/// case-insensitive, or `*.suffix`), IP addresses and CIDR networks, separated by commas or
/// spaces (`cdn.lan, *.corp.example, 10.0.0.0/8, fd00::/8`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    names: Vec<String>,
    nets: Vec<(IpAddr, u8)>,
}

impl AllowList {
    pub fn parse(s: &str) -> Result<AllowList, String> {
        let mut list = AllowList::default();
        for item in s.split([',', ' ']).map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            match (addr.parse::<IpAddr>(), bits) {
                (Ok(ip), bits) => {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    let bits = match bits {
                        None => max,
                        Some(b) => b.parse::<u8>().ok().filter(|b| *b <= max).ok_or_else(|| {
                            format!("{item:?}: the prefix length must be 0 to {max}")
                        })?,
                    };
                    list.nets.push((ip, bits));
                }
                (Err(_), Some(_)) => return Err(format!("{item:?} is not an IP network")),
                (Err(_), None) => {
                    let name = item.trim_end_matches('.').to_ascii_lowercase();
                    let bare = name.strip_prefix("*.").unwrap_or(&name);
                    if bare.is_empty()
                        || !bare
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                    {
                        return Err(format!("{item:?} is not a host name, address or network"));
                    }
                    list.names.push(name);
                }
            }
        }
        Ok(list)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.nets.is_empty()
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets.iter().any(|&(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }

    pub fn allows_name(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => name.len() > suffix.len() && name.ends_with(&format!(".{suffix}")),
            None => *n == name,
        })
    }

    pub fn allows_url(&self, u: &Url) -> bool {
        match u.host() {
            Some(Host::Ipv4(a)) => self.allows_ip(IpAddr::V4(a)),
            Some(Host::Ipv6(a)) => self.allows_ip(IpAddr::V6(a)),
            Some(Host::Domain(d)) => match d.parse::<IpAddr>() {
                Ok(ip) => self.allows_ip(ip),
                Err(_) => self.allows_name(d),
            },
            None => false,
        }
    }
}

/// Whether a manifest at `manifest` may send the demuxer to `target`; the error says why not,
/// naming the URL without its query (which may be signed).
pub fn check(manifest: &Url, target: &Url) -> Result<(), String> {
    check_with(&AllowList::default(), manifest, target)
}

/// [`check`], with the hosts and networks of `allow` reachable whatever their address class.
pub fn check_with(allow: &AllowList, manifest: &Url, target: &Url) -> Result<(), String> {
    let shown = || shown(target);
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
    if to < from && !allow.allows_url(target) {
        return Err(format!(
            "a manifest on a {from} address may not send the demuxer to {} on a {to} address",
            shown()
        ));
    }
    Ok(())
}

/// The redirect rule of every client a manifest or an audio object sends somewhere: at most 10
/// redirects, no loop, no change of scheme (no `https` → `http` downgrade, no `http` →
/// `https` either), and no redirect into a more private address class than the first URL's
/// (unless `allow` names the target). A refused redirect is a final error saying why.
pub fn redirect_policy(allow: AllowList) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        match redirect_verdict(&allow, attempt.previous(), attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(refused) => attempt.error(refused),
        }
    })
}

/// Whether a request that went through `previous` (the first URL first) may be redirected to
/// `to` ([`redirect_policy`]'s rule).
pub fn redirect_verdict(allow: &AllowList, previous: &[Url], to: &Url) -> Result<(), Refused> {
    let Some(origin) = previous.first() else {
        return Ok(());
    };
    if previous.len() > 10 {
        return Err(Refused("more than 10 redirects".into()));
    }
    if previous.contains(to) {
        return Err(Refused(format!("a redirect loop back to {}", shown(to))));
    }
    if to.scheme() != origin.scheme() {
        return Err(Refused(format!(
            "a redirect from {} to {} changes the scheme",
            shown(origin),
            shown(to)
        )));
    }
    let (from_space, to_space) = (address_space(origin), address_space(to));
    if to_space < from_space && !allow.allows_url(to) {
        return Err(Refused(format!(
            "a redirect from {} on a {from_space} address to {} on a {to_space} address",
            shown(origin),
            shown(to)
        )));
    }
    Ok(())
}

/// A request the URL policy refused (a redirect or a resolved address): final, never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the URL policy refused it: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// The DNS resolver of a client whose requests a manifest names (the demuxer's segments): it
/// drops the addresses more private than the manifest's own ([`GuardedResolver::set_origin`];
/// loopback, so nothing is dropped, until then), unless `allow` names the host or the address.
/// A name left with no address is a [`Refused`] error: a public CDN name that resolves to a
/// private or loopback address (DNS rebinding) never gets a connection.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    floor: Arc<Mutex<AddressSpace>>,
    allow: AllowList,
}

impl GuardedResolver {
    pub fn new(allow: AllowList) -> GuardedResolver {
        GuardedResolver {
            floor: Arc::new(Mutex::new(AddressSpace::Loopback)),
            allow,
        }
    }

    /// The manifest's address class becomes the floor: its literal class, or, for a host
    /// name, the most private class it resolves to (the emulator under a name that resolves
    /// to loopback stays a loopback origin, as a browser classes the address it fetched from).
    pub async fn set_origin(&self, manifest: &Url) {
        let mut space = address_space(manifest);
        if let Some(Host::Domain(d)) = manifest.host() {
            if space == AddressSpace::Public {
                let port = manifest.port_or_known_default().unwrap_or(0);
                if let Ok(addrs) = tokio::net::lookup_host((d, port)).await {
                    space = addrs.map(|a| ip_space(a.ip())).min().unwrap_or(space);
                }
            }
        }
        *self.floor.lock().unwrap() = space;
    }

    pub fn floor(&self) -> AddressSpace {
        *self.floor.lock().unwrap()
    }

    /// The addresses of `host` this client may connect to, from `addrs` it resolved to.
    pub fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        let floor = self.floor();
        if self.allow.allows_name(host) {
            return Ok(addrs);
        }
        let kept: Vec<SocketAddr> = addrs
            .iter()
            .copied()
            .filter(|a| ip_space(a.ip()) >= floor || self.allow.allows_ip(a.ip()))
            .collect();
        if kept.is_empty() && !addrs.is_empty() {
            let space = addrs
                .iter()
                .map(|a| ip_space(a.ip()))
                .min()
                .expect("not empty");
            return Err(Refused(format!(
                "{host} resolves only to {space} addresses, which a manifest on a {floor} \
                 address may not reach (allowed-hosts can allow it)"
            )));
        }
        Ok(kept)
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let me = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = me.filter(&host, addrs)?;
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
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
    fn an_allow_list_opens_named_hosts_and_networks_only() {
        let allow =
            AllowList::parse("cdn.lan, *.corp.example 10.0.0.0/8,[fd00::]/8 192.168.1.7").unwrap();
        let public = Url::parse("https://cdn.example/m.mpd").unwrap();
        let t = |u: &str| check_with(&allow, &public, &Url::parse(u).unwrap());
        assert!(t("http://cdn.lan/a.mp4").is_ok() && t("http://CDN.LAN./a.mp4").is_ok());
        assert!(t("http://a.b.corp.example/a").is_ok() && t("http://corp.example/a").is_ok());
        assert!(t("http://10.200.0.1/a").is_ok() && t("http://[fd12::1]/a").is_ok());
        assert!(t("http://[::ffff:10.1.1.1]/a").is_ok());
        assert!(t("http://192.168.1.7/a").is_ok() && t("http://192.168.1.8/a").is_err());
        assert!(t("http://127.0.0.1/a").is_err() && t("http://[fe80::1]/a").is_err());
        // The scheme rule has no exception.
        assert!(t("file:///etc/passwd").is_err());
        for bad in ["10.0.0.0/33", "no/pe", "a_b", "*."] {
            assert!(AllowList::parse(bad).is_err(), "{bad}");
        }
        assert!(AllowList::parse(" , ").unwrap().is_empty());
        assert!(AllowList::parse("0.0.0.0/0")
            .unwrap()
            .allows_ip("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn redirects_keep_their_scheme_and_never_go_more_private() {
        let u = |s: &str| Url::parse(s).unwrap();
        let none = AllowList::default();
        let from = [u("https://cdn.example/a.mp4")];
        assert!(redirect_verdict(&none, &from, &u("https://cdn2.example/a.mp4")).is_ok());
        let e = redirect_verdict(&none, &from, &u("http://cdn2.example/a.mp4?sig=S")).unwrap_err();
        assert!(
            e.to_string().contains("changes the scheme") && !e.0.contains("sig"),
            "{e}"
        );
        let e = redirect_verdict(&none, &from, &u("https://10.0.0.1/a.mp4")).unwrap_err();
        assert!(
            e.0.contains("public address") && e.0.contains("private address"),
            "{e}"
        );
        let allow = AllowList::parse("10.0.0.1").unwrap();
        assert!(redirect_verdict(&allow, &from, &u("https://10.0.0.1/a.mp4")).is_ok());
        // A loopback origin (the emulator) may go anywhere with its scheme.
        let local = [u("http://127.0.0.1:9/a")];
        assert!(redirect_verdict(&none, &local, &u("http://10.0.0.1/a")).is_ok());
        let looped = [u("http://127.0.0.1:9/a"), u("http://127.0.0.1:9/b")];
        assert!(redirect_verdict(&none, &looped, &u("http://127.0.0.1:9/a"))
            .unwrap_err()
            .0
            .contains("loop"));
        let many: Vec<Url> = (0..11)
            .map(|i| u(&format!("http://127.0.0.1:9/{i}")))
            .collect();
        assert!(redirect_verdict(&none, &many, &u("http://127.0.0.1:9/x")).is_err());
    }

    #[tokio::test]
    async fn resolved_addresses_below_the_origin_are_dropped() {
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let r = GuardedResolver::new(AllowList::parse("intranet.example").unwrap());
        // Until an origin is set, and for a loopback origin, nothing is dropped.
        assert_eq!(r.floor(), AddressSpace::Loopback);
        assert_eq!(
            r.filter("x", vec![sa("127.0.0.1:80")]),
            Ok(vec![sa("127.0.0.1:80")])
        );
        r.set_origin(&Url::parse("https://203.0.113.9/m.mpd").unwrap())
            .await;
        assert_eq!(r.floor(), AddressSpace::Public);
        let e = r
            .filter("cdn.example", vec![sa("127.0.0.1:443"), sa("10.1.1.1:443")])
            .unwrap_err();
        assert!(
            e.0.contains("cdn.example resolves only to loopback addresses")
                && e.0.contains("public address"),
            "{e}"
        );
        // Mixed answers keep the public addresses only; allowed names keep all.
        assert_eq!(
            r.filter(
                "cdn.example",
                vec![sa("10.1.1.1:443"), sa("198.51.100.7:443")]
            ),
            Ok(vec![sa("198.51.100.7:443")])
        );
        assert_eq!(
            r.filter("intranet.example", vec![sa("10.1.1.1:443")]),
            Ok(vec![sa("10.1.1.1:443")])
        );
        // A host name origin is classed by what it resolves to: localhost is loopback.
        r.set_origin(&Url::parse("http://localhost:9/m.mpd").unwrap())
            .await;
        assert_eq!(r.floor(), AddressSpace::Loopback);
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
