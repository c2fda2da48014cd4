// SPDX-License-Identifier: MPL-2.0
//! What a buffer's protection meta (qtdemux's `application/x-cenc` structure) says about its
//! sample, and the `keys` property's KID:KEY list.

use std::collections::HashMap;

use crate::cenc::{self, Pattern, Scheme, Subsample};
use crate::protocol::KeyId;

/// What the protection meta of one buffer says (copied out: the meta is removed afterwards).
pub struct SampleInfo {
    pub kid: KeyId,
    pub scheme: Scheme,
    pub iv: Vec<u8>,
    pub subsamples: Vec<Subsample>,
    pub pattern: Pattern,
}

pub fn parse_keys(value: &str) -> Result<HashMap<KeyId, cenc::Key>, String> {
    let mut keys = HashMap::new();
    for pair in value
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|p| !p.is_empty())
    {
        let (kid, key) = pair
            .split_once(':')
            .ok_or_else(|| "each entry must be KID:KEY".to_owned())?;
        let kid: KeyId = kid.parse().map_err(|_| format!("bad key id {kid:?}"))?;
        // The key itself is never echoed in the message.
        let key: [u8; 16] = hex::decode(key)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| format!("key for {kid} is not 32 hex digits"))?;
        keys.insert(kid, cenc::Key::new(key));
    }
    Ok(keys)
}

fn buffer_bytes(s: &gst::StructureRef, field: &str) -> Option<Vec<u8>> {
    let buf = s.get::<gst::Buffer>(field).ok()?;
    let map = buf.map_readable().ok()?;
    Some(map.as_slice().to_vec())
}

fn uint(s: &gst::StructureRef, field: &str) -> Option<u32> {
    s.get::<u32>(field)
        .ok()
        .or_else(|| s.get::<i32>(field).ok().map(|v| v as u32))
}

/// Reads qtdemux's protection meta; `Ok(None)` for a clear sample.
pub fn sample_info(s: &gst::StructureRef) -> Result<Option<SampleInfo>, String> {
    if !s.get::<bool>("encrypted").unwrap_or(true) {
        return Ok(None);
    }
    let kid = buffer_bytes(s, "kid")
        .and_then(|k| KeyId::from_slice(&k))
        .ok_or("protection meta has no 16-byte kid")?;
    let scheme = match s.get::<&str>("cipher-mode").unwrap_or("cenc") {
        "cenc" => Scheme::Cenc,
        "cbcs" => Scheme::Cbcs,
        other => return Err(format!("unsupported cipher mode {other:?}")),
    };
    // cbcs with a constant IV (tenc) has iv_size 0; qtdemux 1.22 then puts the constant IV in
    // `iv` (with constant_iv_size), other versions in `constant_iv`.
    let iv = match uint(s, "iv_size").unwrap_or(0) {
        0 => buffer_bytes(s, "constant_iv").or_else(|| buffer_bytes(s, "iv")),
        _ => buffer_bytes(s, "iv"),
    }
    .ok_or("protection meta has no iv")?;
    let count = uint(s, "subsample_count").unwrap_or(0) as usize;
    let mut subsamples = Vec::with_capacity(count);
    if count > 0 {
        let raw = buffer_bytes(s, "subsamples").ok_or("protection meta has no subsamples")?;
        if raw.len() < count * 6 {
            return Err(format!(
                "{count} subsamples announced, {} bytes given",
                raw.len()
            ));
        }
        for e in raw.chunks_exact(6).take(count) {
            subsamples.push(Subsample {
                clear: u16::from_be_bytes([e[0], e[1]]).into(),
                protected: u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
            });
        }
    }
    if count > 0 && subsamples.iter().all(|s| s.protected == 0) {
        // Every byte in the clear: a clear-lead sample described explicitly (amzdashdemux
        // marks constant-IV clear lead this way, see its clear_lead.rs). No key needed.
        return Ok(None);
    }
    let pattern = Pattern {
        crypt: uint(s, "crypt_byte_block").unwrap_or(0).min(255) as u8,
        skip: uint(s, "skip_byte_block").unwrap_or(0).min(255) as u8,
    };
    Ok(Some(SampleInfo {
        kid,
        scheme,
        iv,
        subsamples,
        pattern,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(subsamples: &[(u16, u32)]) -> gst::Structure {
        gst::init().unwrap();
        let raw: Vec<u8> = subsamples
            .iter()
            .flat_map(|(c, p)| [c.to_be_bytes().to_vec(), p.to_be_bytes().to_vec()].concat())
            .collect();
        gst::Structure::builder("application/x-cenc")
            .field("iv_size", 16u32)
            .field("encrypted", true)
            .field("kid", gst::Buffer::from_slice([7u8; 16]))
            .field("iv", gst::Buffer::from_slice([1u8; 16]))
            .field("cipher-mode", "cbcs")
            .field("subsample_count", subsamples.len() as u32)
            .field("subsamples", gst::Buffer::from_slice(raw))
            .build()
    }

    #[test]
    fn a_sample_with_no_protected_byte_is_clear() {
        assert!(sample_info(&meta(&[(800, 0)])).unwrap().is_none());
        assert!(sample_info(&meta(&[(65535, 0), (4465, 0)]))
            .unwrap()
            .is_none());
        let info = sample_info(&meta(&[(0, 800)])).unwrap().unwrap();
        assert_eq!(info.subsamples.len(), 1);
        assert_eq!(info.scheme, Scheme::Cbcs);
    }

    #[test]
    fn keys_parse_and_never_echo_the_key() {
        let kid = "0123456789abcdef0123456789abcdef";
        let keys = parse_keys(&format!("{kid}:00112233445566778899aabbccddeeff ;")).unwrap();
        assert!(keys.contains_key(&kid.parse().unwrap()));
        let err = parse_keys(&format!("{kid}:0011secret")).err().unwrap();
        assert!(err.contains(kid) && !err.contains("secret"), "{err}");
        assert!(parse_keys("no-colon").is_err());
    }
}
