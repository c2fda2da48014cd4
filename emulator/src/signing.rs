//! Signed, expiring CDN URLs and the per-track header tokens of an audio object. Everything is
//! an HMAC over what it grants, so a token for one track or audio object is useless for another.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};

/// Header names the audio object lists. Modelled on the Device API's three header lists; the
/// real names are not public, so they are ours (and documented in emulator/README.md).
pub const MANIFEST_TOKEN_HEADER: &str = "x-amz-music-manifest-token";
pub const SEGMENT_TOKEN_HEADER: &str = "x-amz-music-segment-token";
pub const KEY_TOKEN_HEADER: &str = "x-amz-music-key-token";
pub const DEVICE_HEADER: &str = "x-amz-music-device-id";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Manifest,
    Segment,
    Key,
}

impl TokenKind {
    fn tag(self) -> &'static [u8] {
        match self {
            TokenKind::Manifest => b"manifest",
            TokenKind::Segment => b"segment",
            TokenKind::Key => b"key",
        }
    }
}

/// What a signed CDN query grants: one audio object of one track until `exp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub track_id: String,
    pub ao: String,
    /// The capability the manifest was filtered for, e.g. `HD`.
    pub cap: String,
    pub addressing: String,
    pub exp: u64,
}

#[derive(Clone)]
pub struct Signer {
    secret: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer { .. }")
    }
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Signer {
    /// A signer with a fresh random secret: URLs from one emulator run are not valid in another.
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        Signer { secret }
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        Signer { secret }
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        for p in parts {
            m.update(&(p.len() as u32).to_be_bytes());
            m.update(p);
        }
        hex::encode(&m.finalize().into_bytes()[..16])
    }

    /// The query string (`?ao=…&cap=…&addr=…&exp=…&sig=…`) appended to every URL of a grant.
    pub fn sign_query(&self, g: &Grant) -> String {
        let sig = self.grant_sig(g);
        format!(
            "?ao={}&cap={}&addr={}&exp={}&sig={}",
            g.ao, g.cap, g.addressing, g.exp, sig
        )
    }

    fn grant_sig(&self, g: &Grant) -> String {
        self.mac(&[
            b"url",
            g.track_id.as_bytes(),
            g.ao.as_bytes(),
            g.cap.as_bytes(),
            g.addressing.as_bytes(),
            g.exp.to_string().as_bytes(),
        ])
    }

    /// Checks a grant's signature (constant time) and expiry.
    pub fn verify_grant(&self, g: &Grant, sig: &str, now: u64) -> Result<(), DenyReason> {
        if !ct_eq(self.grant_sig(g).as_bytes(), sig.as_bytes()) {
            return Err(DenyReason::BadSignature);
        }
        if now >= g.exp {
            return Err(DenyReason::Expired);
        }
        Ok(())
    }

    /// The value of a per-track header token of one audio object.
    pub fn header_token(&self, kind: TokenKind, track_id: &str, ao: &str, exp: u64) -> String {
        format!(
            "{}.{}.{}",
            ao,
            exp,
            self.mac(&[
                kind.tag(),
                track_id.as_bytes(),
                ao.as_bytes(),
                exp.to_string().as_bytes()
            ])
        )
    }

    /// Checks a header token for `track_id`; returns the audio object id it belongs to.
    pub fn verify_header_token(
        &self,
        kind: TokenKind,
        track_id: &str,
        token: &str,
        now: u64,
    ) -> Result<String, DenyReason> {
        let mut it = token.splitn(3, '.');
        let (Some(ao), Some(exp), Some(_)) = (it.next(), it.next(), it.next()) else {
            return Err(DenyReason::BadToken);
        };
        let exp: u64 = exp.parse().map_err(|_| DenyReason::BadToken)?;
        let expected = self.header_token(kind, track_id, ao, exp);
        if !ct_eq(expected.as_bytes(), token.as_bytes()) {
            return Err(DenyReason::BadToken);
        }
        if now >= exp {
            return Err(DenyReason::Expired);
        }
        Ok(ao.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    BadSignature,
    BadToken,
    MissingToken,
    Expired,
}

impl DenyReason {
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::BadSignature => "bad_signature",
            DenyReason::BadToken => "bad_token",
            DenyReason::MissingToken => "missing_token",
            DenyReason::Expired => "expired",
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh random id (audio objects, sessions).
pub fn random_id(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(track: &str, exp: u64) -> Grant {
        Grant {
            track_id: track.into(),
            ao: "ao1".into(),
            cap: "HD".into(),
            addressing: "list".into(),
            exp,
        }
    }

    #[test]
    fn signed_query_verifies_and_is_bound_to_its_track() {
        let s = Signer::from_secret([1; 32]);
        let q = s.sign_query(&grant("T1", 100));
        let sig = q.rsplit("sig=").next().unwrap();
        assert_eq!(s.verify_grant(&grant("T1", 100), sig, 50), Ok(()));
        assert_eq!(
            s.verify_grant(&grant("T2", 100), sig, 50),
            Err(DenyReason::BadSignature)
        );
        assert_eq!(
            s.verify_grant(&grant("T1", 100), sig, 100),
            Err(DenyReason::Expired)
        );
        // Extending the expiry breaks the signature.
        assert_eq!(
            s.verify_grant(&grant("T1", 1000), sig, 50),
            Err(DenyReason::BadSignature)
        );
    }

    #[test]
    fn header_tokens_are_per_kind_and_track() {
        let s = Signer::from_secret([2; 32]);
        let t = s.header_token(TokenKind::Segment, "T1", "ao9", 100);
        assert_eq!(
            s.verify_header_token(TokenKind::Segment, "T1", &t, 10),
            Ok("ao9".into())
        );
        assert_eq!(
            s.verify_header_token(TokenKind::Manifest, "T1", &t, 10),
            Err(DenyReason::BadToken)
        );
        assert_eq!(
            s.verify_header_token(TokenKind::Segment, "T2", &t, 10),
            Err(DenyReason::BadToken)
        );
        assert_eq!(
            s.verify_header_token(TokenKind::Segment, "T1", &t, 100),
            Err(DenyReason::Expired)
        );
        assert_eq!(
            s.verify_header_token(TokenKind::Segment, "T1", "garbage", 1),
            Err(DenyReason::BadToken)
        );
    }
}
