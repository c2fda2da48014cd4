// SPDX-License-Identifier: MPL-2.0
//! W3C Clear Key (Encrypted Media Extensions, "Clear Key"): its system ids, the common `pssh`
//! that names key ids in its header, the JSON license request
//! (`{"kids":[base64url…],"type":"temporary"}`) and the JWK-set response. Both sides live here:
//! the built-in Clear Key CDM, the test CDM modules and the emulator's Clear Key license server.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::pssh::{parse_pssh_boxes, KeyId, PsshBox, PsshError};

/// The W3C common system id, `1077efec-c0b2-4d02-ace3-3c1e52e2fb4b`: the `pssh` box Clear Key
/// reads (version 1, key ids in the header).
pub const CLEARKEY_SYSTEM_ID: [u8; 16] = [
    0x10, 0x77, 0xef, 0xec, 0xc0, 0xb2, 0x4d, 0x02, 0xac, 0xe3, 0x3c, 0x1e, 0x52, 0xe2, 0xfb, 0x4b,
];
pub const CLEARKEY_SYSTEM_ID_STR: &str = "1077efec-c0b2-4d02-ace3-3c1e52e2fb4b";
/// DASH-IF's Clear Key id, `e2719d58-a985-b3c9-781a-b030af78d30e`, which packagers write in a
/// manifest's `ContentProtection` (the `pssh` inside it is the common one).
pub const CLEARKEY_DASH_SYSTEM_ID: [u8; 16] = [
    0xe2, 0x71, 0x9d, 0x58, 0xa9, 0x85, 0xb3, 0xc9, 0x78, 0x1a, 0xb0, 0x30, 0xaf, 0x78, 0xd3, 0x0e,
];
pub const CLEARKEY_DASH_SYSTEM_ID_STR: &str = "e2719d58-a985-b3c9-781a-b030af78d30e";
/// The EME key system name.
pub const KEY_SYSTEM: &str = "org.w3.clearkey";

/// Both Clear Key system ids.
pub const SYSTEM_IDS: [[u8; 16]; 2] = [CLEARKEY_SYSTEM_ID, CLEARKEY_DASH_SYSTEM_ID];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClearKeyError {
    #[error("not a Clear Key license request: {0}")]
    BadRequest(String),
    #[error("not a Clear Key license (JWK set): {0}")]
    BadLicense(String),
}

/// The common `pssh` (version 1) naming `kids`, with no system data.
pub fn pssh(kids: &[KeyId]) -> Vec<u8> {
    PsshBox {
        version: 1,
        system_id: CLEARKEY_SYSTEM_ID,
        key_ids: kids.to_vec(),
        data: Vec::new(),
    }
    .to_bytes()
}

/// The key ids of the Clear Key boxes (either system id) in `init_data`, deduplicated.
pub fn key_ids(init_data: &[u8]) -> Result<Vec<KeyId>, PsshError> {
    let mut out = Vec::new();
    for b in parse_pssh_boxes(init_data)?
        .into_iter()
        .filter(|b| SYSTEM_IDS.contains(&b.system_id))
    {
        for kid in b.key_ids {
            if !out.contains(&kid) {
                out.push(kid);
            }
        }
    }
    Ok(out)
}

#[derive(Serialize, Deserialize)]
struct Request {
    kids: Vec<String>,
    #[serde(rename = "type", default = "temporary")]
    kind: String,
}

fn temporary() -> String {
    "temporary".into()
}

/// base64url without padding; padding and standard-alphabet input are accepted when reading.
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let s: String = s
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    B64URL.decode(s).ok()
}

/// The EME license request for `kids`: `{"kids":["<base64url>",…],"type":"temporary"}`.
pub fn license_request(kids: &[KeyId]) -> Vec<u8> {
    serde_json::to_vec(&Request {
        kids: kids.iter().map(|k| B64URL.encode(k.0)).collect(),
        kind: temporary(),
    })
    .expect("plain data serialises")
}

/// Server side: the key ids a license request asks for.
pub fn parse_license_request(body: &[u8]) -> Result<Vec<KeyId>, ClearKeyError> {
    let r: Request =
        serde_json::from_slice(body).map_err(|e| ClearKeyError::BadRequest(e.to_string()))?;
    if r.kind != "temporary" {
        return Err(ClearKeyError::BadRequest(format!(
            "session type {:?} (only \"temporary\")",
            r.kind
        )));
    }
    if r.kids.is_empty() {
        return Err(ClearKeyError::BadRequest("no key ids".into()));
    }
    r.kids
        .iter()
        .map(|k| {
            b64url_decode(k)
                .and_then(|b| KeyId::from_slice(&b))
                .ok_or_else(|| ClearKeyError::BadRequest(format!("kid {k:?} is not 16 bytes")))
        })
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Jwk {
    kty: String,
    kid: String,
    k: String,
}

#[derive(Serialize, Deserialize)]
struct JwkSet {
    keys: Vec<Jwk>,
    #[serde(rename = "type", default = "temporary")]
    kind: String,
    /// The emulator's extension (standard clients ignore it): the keys' lifetime in seconds,
    /// after which a CDM that honours it renews (`license-expiration-secs`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    expiration_secs: Option<u64>,
}

/// A Clear Key license: the keys (zeroized on drop) and the emulator's optional lifetime.
pub struct License {
    pub keys: Vec<(KeyId, Zeroizing<[u8; 16]>)>,
    pub expiration_secs: Option<u64>,
}

/// Server side: the JWK set answering a request (`kty` `oct`, `kid` and `k` base64url).
pub fn license(keys: &[(KeyId, [u8; 16])], expiration_secs: Option<u64>) -> Vec<u8> {
    serde_json::to_vec(&JwkSet {
        keys: keys
            .iter()
            .map(|(kid, key)| Jwk {
                kty: "oct".into(),
                kid: B64URL.encode(kid.0),
                k: B64URL.encode(key),
            })
            .collect(),
        kind: temporary(),
        expiration_secs,
    })
    .expect("plain data serialises")
}

/// Client side: the keys of a JWK set. Error texts never quote a key.
pub fn parse_license(body: &[u8]) -> Result<License, ClearKeyError> {
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| ClearKeyError::BadLicense(e.to_string()))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    for jwk in set.keys {
        if jwk.kty != "oct" {
            return Err(ClearKeyError::BadLicense(format!(
                "key type {:?} (want \"oct\")",
                jwk.kty
            )));
        }
        let kid = b64url_decode(&jwk.kid)
            .and_then(|b| KeyId::from_slice(&b))
            .ok_or_else(|| {
                ClearKeyError::BadLicense(format!("kid {:?} is not 16 bytes", jwk.kid))
            })?;
        let key: [u8; 16] = b64url_decode(&jwk.k)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ClearKeyError::BadLicense(format!("the key of kid {kid} is not 16 bytes"))
            })?;
        keys.push((kid, Zeroizing::new(key)));
    }
    Ok(License {
        keys,
        expiration_secs: set.expiration_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // EME's Clear Key example: key id and key of the W3C spec's JWK set sample.
    #[test]
    fn request_and_license_round_trip() {
        let kid = KeyId(*b"0123456789012345");
        let req = license_request(&[kid]);
        assert_eq!(
            std::str::from_utf8(&req).unwrap(),
            r#"{"kids":["MDEyMzQ1Njc4OTAxMjM0NQ"],"type":"temporary"}"#
        );
        assert_eq!(parse_license_request(&req).unwrap(), vec![kid]);
        let lic = license(&[(kid, [0xeb; 16])], None);
        let got = parse_license(&lic).unwrap();
        assert_eq!(got.keys.len(), 1);
        assert_eq!((got.keys[0].0, *got.keys[0].1), (kid, [0xeb; 16]));
        assert_eq!(got.expiration_secs, None);
    }

    #[test]
    fn padded_and_standard_alphabet_are_read() {
        let body = br#"{"keys":[{"kty":"oct","kid":"MDEyMzQ1Njc4OTAxMjM0NQ==","k":"6+vr6+vr6+vr6+vr6+vr6w=="}]}"#;
        let got = parse_license(body).unwrap();
        assert_eq!(*got.keys[0].1, [0xeb; 16]);
    }

    #[test]
    fn bad_input_is_an_error_that_never_quotes_a_key() {
        assert!(parse_license_request(br#"{"kids":[]}"#).is_err());
        assert!(parse_license_request(br#"{"kids":["AA"],"type":"temporary"}"#).is_err());
        assert!(parse_license_request(
            br#"{"kids":["MDEyMzQ1Njc4OTAxMjM0NQ"],"type":"persistent-license"}"#
        )
        .is_err());
        let e = parse_license(
            br#"{"keys":[{"kty":"oct","kid":"MDEyMzQ1Njc4OTAxMjM0NQ","k":"c2VjcmV0"}]}"#,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(!e.contains("c2VjcmV0"), "{e}");
        assert!(parse_license(b"junk").is_err());
    }

    #[test]
    fn pssh_names_key_ids_in_its_header() {
        let kids = [KeyId([1; 16]), KeyId([2; 16])];
        let b = pssh(&kids);
        assert_eq!(key_ids(&b).unwrap(), kids.to_vec());
        let wv = crate::pssh::WidevinePsshData {
            key_ids: vec![KeyId([3; 16])],
            ..Default::default()
        }
        .to_pssh_box();
        assert_eq!(key_ids(&[wv, b].concat()).unwrap(), kids.to_vec());
    }
}
