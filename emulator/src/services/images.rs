//! Cover art at `/images/{album-id}.png`: a small PNG drawn from the album id, so artwork URLs
//! in metadata resolve to real images without shipping any.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::Arc;

use super::checks::ApiError;
use super::graphql::album_view;
use crate::state::AppState;

pub const COVER_SIZE: u32 = 64;

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/images/{file}", get(cover))
}

async fn cover(State(state): State<Arc<AppState>>, Path(file): Path<String>) -> Response {
    let album = file
        .strip_suffix(".png")
        .and_then(|id| album_view(&state.catalog, id));
    match album {
        Some(a) => ([(header::CONTENT_TYPE, "image/png")], cover_png(&a.id)).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "image_not_found",
            "no cover image: the URL is /images/<album-id>.png",
        )
        .into_response(),
    }
}

/// A diagonal two-colour gradient, colours taken from a hash of the album id.
pub fn cover_png(album_id: &str) -> Vec<u8> {
    let h = Sha256::digest(album_id.as_bytes());
    let (a, b) = ([h[0], h[1], h[2]], [h[3], h[4], h[5]]);
    let n = COVER_SIZE;
    let mut raw = Vec::with_capacity((n * (1 + 3 * n)) as usize);
    for y in 0..n {
        raw.push(0); // filter: none
        for x in 0..n {
            let t = x + y;
            for c in 0..3 {
                let v = (a[c] as u32 * (2 * n - 2 - t) + b[c] as u32 * t) / (2 * n - 2);
                raw.push(v as u8);
            }
        }
    }
    encode_rgb_png(n, n, &raw)
}

/// PNG with one stored (uncompressed) deflate block: small images need no compressor.
fn encode_rgb_png(width: u32, height: u32, filtered_rows: &[u8]) -> Vec<u8> {
    assert!(filtered_rows.len() <= u16::MAX as usize, "one stored block");
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    let len = filtered_rows.len() as u16;
    let mut z = vec![0x78, 0x01, 0x01];
    z.extend_from_slice(&len.to_le_bytes());
    z.extend_from_slice(&(!len).to_le_bytes());
    z.extend_from_slice(filtered_rows);
    z.extend_from_slice(&adler32(filtered_rows).to_be_bytes());
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11e6_0398);
    }

    #[test]
    fn cover_is_a_png_of_the_right_size_and_differs_per_album() {
        let p = cover_png("B0EMUALB01");
        assert_eq!(&p[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&p[12..16], b"IHDR");
        assert_eq!(
            u32::from_be_bytes(p[16..20].try_into().unwrap()),
            COVER_SIZE
        );
        assert_ne!(p, cover_png("B0EMUHDA01"));
    }
}
