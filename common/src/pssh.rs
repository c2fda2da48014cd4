// SPDX-License-Identifier: MPL-2.0
//! `pssh` boxes (ISO/IEC 23001-7, versions 0 and 1) and the Widevine `WidevinePsshData` protobuf.
//! Pure parsing and building, so the stub CDM, the element and the emulator's packager agree.

use std::fmt;
use std::str::FromStr;

/// The Widevine DRM system id, `edef8ba9-79d6-4ace-a3c8-27dcd51d21ed`.
pub const WIDEVINE_SYSTEM_ID: [u8; 16] = [
    0xed, 0xef, 0x8b, 0xa9, 0x79, 0xd6, 0x4a, 0xce, 0xa3, 0xc8, 0x27, 0xdc, 0xd5, 0x1d, 0x21, 0xed,
];
/// The same id in the lower-case UUID form GStreamer uses in caps and protection events.
pub const WIDEVINE_SYSTEM_ID_STR: &str = "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed";

/// A 16-byte CENC key id. Displays as 32 lower-case hex digits (key ids are not secret).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    pub fn from_slice(bytes: &[u8]) -> Option<KeyId> {
        <[u8; 16]>::try_from(bytes).ok().map(KeyId)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = PsshError;

    /// Accepts 32 hex digits, with or without the dashes of the UUID form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let compact: String = s.trim().chars().filter(|c| *c != '-').collect();
        let bytes = hex::decode(&compact).map_err(|_| PsshError::BadKeyId(s.to_owned()))?;
        KeyId::from_slice(&bytes).ok_or_else(|| PsshError::BadKeyId(s.to_owned()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PsshError {
    #[error("pssh box truncated")]
    Truncated,
    #[error("not a pssh box (type {0:?})")]
    NotPssh(String),
    #[error("unsupported pssh box version {0}")]
    UnsupportedVersion(u8),
    #[error("malformed Widevine pssh data: {0}")]
    BadProtobuf(&'static str),
    #[error("not a key id (want 32 hex digits): {0:?}")]
    BadKeyId(String),
}

/// One `pssh` box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsshBox {
    pub version: u8,
    pub system_id: [u8; 16],
    /// Key ids listed in the box header (version 1 only).
    pub key_ids: Vec<KeyId>,
    /// The DRM-system specific payload (for Widevine, a `WidevinePsshData` protobuf).
    pub data: Vec<u8>,
}

impl PsshBox {
    pub fn is_widevine(&self) -> bool {
        self.system_id == WIDEVINE_SYSTEM_ID
    }

    /// Serialises the box (version 0 if it has no header key ids, else version 1).
    pub fn to_bytes(&self) -> Vec<u8> {
        let version = if self.key_ids.is_empty() { 0 } else { 1 };
        let mut out = Vec::with_capacity(32 + 16 * self.key_ids.len() + self.data.len());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(b"pssh");
        out.extend_from_slice(&[version, 0, 0, 0]);
        out.extend_from_slice(&self.system_id);
        if version == 1 {
            out.extend_from_slice(&(self.key_ids.len() as u32).to_be_bytes());
            for kid in &self.key_ids {
                out.extend_from_slice(&kid.0);
            }
        }
        out.extend_from_slice(&(self.data.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.data);
        let size = out.len() as u32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        out
    }
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], PsshError> {
    if buf.len() < n {
        return Err(PsshError::Truncated);
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn take_u32(buf: &mut &[u8]) -> Result<u32, PsshError> {
    Ok(u32::from_be_bytes(take(buf, 4)?.try_into().unwrap()))
}

/// Parses every `pssh` box in `data` (init data may concatenate several, one per system).
pub fn parse_pssh_boxes(mut data: &[u8]) -> Result<Vec<PsshBox>, PsshError> {
    let mut boxes = Vec::new();
    while !data.is_empty() {
        let mut cur = data;
        let size = take_u32(&mut cur)? as usize;
        let kind = take(&mut cur, 4)?;
        if kind != b"pssh" {
            return Err(PsshError::NotPssh(
                String::from_utf8_lossy(kind).into_owned(),
            ));
        }
        // Large (64-bit) sizes are legal in ISO BMFF but never used for pssh boxes.
        if size < 8 || size > data.len() {
            return Err(PsshError::Truncated);
        }
        let mut body = &data[8..size];
        let version_flags = take_u32(&mut body)?;
        let version = (version_flags >> 24) as u8;
        if version > 1 {
            return Err(PsshError::UnsupportedVersion(version));
        }
        let system_id: [u8; 16] = take(&mut body, 16)?.try_into().unwrap();
        let mut key_ids = Vec::new();
        if version == 1 {
            let count = take_u32(&mut body)? as usize;
            if count > body.len() / 16 {
                return Err(PsshError::Truncated);
            }
            for _ in 0..count {
                key_ids.push(KeyId::from_slice(take(&mut body, 16)?).unwrap());
            }
        }
        let data_size = take_u32(&mut body)? as usize;
        let payload = take(&mut body, data_size)?.to_vec();
        boxes.push(PsshBox {
            version,
            system_id,
            key_ids,
            data: payload,
        });
        data = &data[size..];
    }
    Ok(boxes)
}

/// The fields of `WidevinePsshData` this project uses (others are skipped when parsing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WidevinePsshData {
    /// Field 2, `repeated bytes key_id`.
    pub key_ids: Vec<KeyId>,
    /// Field 4, `bytes content_id`.
    pub content_id: Vec<u8>,
    /// Field 3, `string provider`.
    pub provider: Option<String>,
}

// Hand-rolled protobuf: two fields of one message do not justify prost's build-time codegen;
// the reader below skips every wire type it does not need.
fn read_varint(buf: &mut &[u8]) -> Result<u64, PsshError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *take(buf, 1)
            .map_err(|_| PsshError::BadProtobuf("truncated varint"))?
            .first()
            .unwrap();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(PsshError::BadProtobuf("varint too long"))
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

impl WidevinePsshData {
    pub fn parse(mut buf: &[u8]) -> Result<WidevinePsshData, PsshError> {
        let mut out = WidevinePsshData::default();
        while !buf.is_empty() {
            let tag = read_varint(&mut buf)?;
            let (field, wire_type) = (tag >> 3, tag & 7);
            match wire_type {
                0 => {
                    read_varint(&mut buf)?;
                }
                1 => {
                    take(&mut buf, 8).map_err(|_| PsshError::BadProtobuf("truncated fixed64"))?;
                }
                5 => {
                    take(&mut buf, 4).map_err(|_| PsshError::BadProtobuf("truncated fixed32"))?;
                }
                2 => {
                    let len = read_varint(&mut buf)?;
                    let len = usize::try_from(len)
                        .map_err(|_| PsshError::BadProtobuf("length overflow"))?;
                    let value = take(&mut buf, len)
                        .map_err(|_| PsshError::BadProtobuf("truncated length-delimited field"))?;
                    match field {
                        2 => out.key_ids.push(
                            KeyId::from_slice(value)
                                .ok_or(PsshError::BadProtobuf("key_id is not 16 bytes"))?,
                        ),
                        3 => out.provider = Some(String::from_utf8_lossy(value).into_owned()),
                        4 => out.content_id = value.to_vec(),
                        _ => {}
                    }
                }
                _ => return Err(PsshError::BadProtobuf("unsupported wire type")),
            }
        }
        Ok(out)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let field = |out: &mut Vec<u8>, number: u64, value: &[u8]| {
            write_varint(out, number << 3 | 2);
            write_varint(out, value.len() as u64);
            out.extend_from_slice(value);
        };
        for kid in &self.key_ids {
            field(&mut out, 2, &kid.0);
        }
        if let Some(provider) = &self.provider {
            field(&mut out, 3, provider.as_bytes());
        }
        if !self.content_id.is_empty() {
            field(&mut out, 4, &self.content_id);
        }
        out
    }

    /// A complete version 0 Widevine `pssh` box carrying this data.
    pub fn to_pssh_box(&self) -> Vec<u8> {
        PsshBox {
            version: 0,
            system_id: WIDEVINE_SYSTEM_ID,
            key_ids: Vec::new(),
            data: self.to_bytes(),
        }
        .to_bytes()
    }
}

/// What a CDM needs from init data: every key id the Widevine boxes name (header and protobuf,
/// deduplicated, in order of appearance) and the first content id.
pub fn widevine_init_data(init_data: &[u8]) -> Result<WidevinePsshData, PsshError> {
    let mut merged = WidevinePsshData::default();
    // A set, not `key_ids.contains`: init data of a few MB names ~10^5 key ids.
    let mut seen = std::collections::HashSet::new();
    for pssh in parse_pssh_boxes(init_data)?
        .into_iter()
        .filter(PsshBox::is_widevine)
    {
        let parsed = WidevinePsshData::parse(&pssh.data)?;
        for kid in pssh.key_ids.iter().chain(parsed.key_ids.iter()) {
            if seen.insert(*kid) {
                merged.key_ids.push(*kid);
            }
        }
        if merged.content_id.is_empty() {
            merged.content_id = parsed.content_id;
        }
        if merged.provider.is_none() {
            merged.provider = parsed.provider;
        }
    }
    Ok(merged)
}

/// Every key id the boxes of `systems` in `init_data` name: header key ids, and for Widevine
/// boxes the protobuf's too (deduplicated, in order of appearance). A CDM-neutral reading:
/// which key ids a session over this init data will ask for.
pub fn key_ids_for_systems(
    init_data: &[u8],
    systems: &[[u8; 16]],
) -> Result<Vec<KeyId>, PsshError> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for pssh in parse_pssh_boxes(init_data)?
        .into_iter()
        .filter(|b| systems.contains(&b.system_id))
    {
        let mut kids = pssh.key_ids.clone();
        if pssh.is_widevine() {
            kids.extend(WidevinePsshData::parse(&pssh.data)?.key_ids);
        }
        for kid in kids {
            if seen.insert(kid) {
                out.push(kid);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A Widevine pssh as Shaka Packager writes it for key id 0123…ef with no content id:
    // v0 box, protobuf field 2 (key_id) then field 9 (protection_scheme, varint 'cenc').
    const SHAKA_PSSH: &str = "0000003870737368000000\
        00edef8ba979d64acea3c827dcd51d21ed000000181210\
        0123456789abcdef0123456789abcdef48e3dc959b06";

    #[test]
    fn parses_packager_style_v0_box() {
        let bytes = hex::decode(SHAKA_PSSH.replace(' ', "")).unwrap();
        let boxes = parse_pssh_boxes(&bytes).unwrap();
        assert_eq!(boxes.len(), 1);
        assert!(boxes[0].is_widevine());
        let data = WidevinePsshData::parse(&boxes[0].data).unwrap();
        assert_eq!(
            data.key_ids,
            vec!["0123456789abcdef0123456789abcdef".parse().unwrap()]
        );
        assert!(data.content_id.is_empty());
    }

    #[test]
    fn round_trips_v1_box_and_merges_key_ids() {
        let a: KeyId = "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap();
        let b = KeyId([7; 16]);
        let data = WidevinePsshData {
            key_ids: vec![a, b],
            content_id: b"track-42".to_vec(),
            provider: Some("amazon".into()),
        };
        let v1 = PsshBox {
            version: 1,
            system_id: WIDEVINE_SYSTEM_ID,
            key_ids: vec![b],
            data: data.to_bytes(),
        }
        .to_bytes();
        let other = PsshBox {
            version: 0,
            system_id: [1; 16],
            key_ids: vec![],
            data: vec![1, 2, 3],
        }
        .to_bytes();
        let init: Vec<u8> = [other, v1, data.to_pssh_box()].concat();
        let boxes = parse_pssh_boxes(&init).unwrap();
        assert_eq!(boxes.len(), 3);
        assert_eq!(boxes[1].key_ids, vec![b]);
        let merged = widevine_init_data(&init).unwrap();
        assert_eq!(merged.key_ids, vec![b, a]);
        assert_eq!(merged.content_id, b"track-42");
        assert_eq!(merged.provider.as_deref(), Some("amazon"));
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            &b""[..],
            b"\x00\x00\x00\x08moov",
            b"\x00\x00\x00\x20pssh\x00\x00\x00\x00",
            b"\x00\x00\x00\x04pssh",
            b"\xff\xff\xff\xffpssh\x01\x00\x00\x00",
        ] {
            let r = parse_pssh_boxes(bad);
            assert!(bad.is_empty() || r.is_err(), "{bad:?}");
        }
        assert!(WidevinePsshData::parse(&[0x12, 0x05, 1, 2]).is_err());
        assert!(WidevinePsshData::parse(&[0x12, 0x02, 1, 2]).is_err()); // key id not 16 bytes
        assert!(WidevinePsshData::parse(&[0x08, 0xff]).is_err());
        assert!("xyz".parse::<KeyId>().is_err());
    }

    #[test]
    fn many_key_ids_merge_in_linear_time() {
        // Seen while fuzzing the pssh target: merging deduplicated with `Vec::contains`, so
        // a 1 MB box of 60 000 key ids took 5 s and an 8 MB manifest's pssh minutes.
        let n = 200_000u32;
        let mut kids: Vec<KeyId> = (0..n)
            .map(|i| {
                let mut k = [0u8; 16];
                k[..4].copy_from_slice(&i.to_be_bytes());
                KeyId(k)
            })
            .collect();
        kids.push(kids[7]);
        let b = PsshBox {
            version: 1,
            system_id: WIDEVINE_SYSTEM_ID,
            key_ids: kids,
            data: Vec::new(),
        }
        .to_bytes();
        let start = std::time::Instant::now();
        let merged = widevine_init_data(&b).unwrap();
        assert_eq!(merged.key_ids.len(), n as usize);
        assert_eq!(merged.key_ids[7].0[..4], 7u32.to_be_bytes());
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }
}
