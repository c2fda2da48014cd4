//! FLAC frame-header recognition, used to tell clear-lead samples from encrypted ones where
//! GStreamer 1.22's qtdemux marks every cbcs sample as encrypted (see README "cbcs clear lead").

/// CRC-8, polynomial x^8 + x^2 + x + 1 (0x07), initial 0: the FLAC frame-header checksum.
fn crc8(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |mut crc, &b| {
        crc ^= b;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
        crc
    })
}

/// Whether `data` starts with a complete, valid FLAC frame header (sync code, no reserved
/// values, matching CRC-8). Random bytes pass with a probability of about 2^-22.
pub fn starts_with_frame_header(data: &[u8]) -> bool {
    frame_header_fault(data).is_none()
}

/// What is wrong with the FLAC frame header `data` starts with, or `None` for a valid one.
/// Reads the header only (at most 16 bytes), so it is cheap enough to run on every sample.
pub fn frame_header_fault(data: &[u8]) -> Option<&'static str> {
    if data.len() < 6 {
        return Some("too short for a frame header");
    }
    if data[0] != 0xff || data[1] & 0xfe != 0xf8 {
        return Some("no frame sync code");
    }
    let block_size = data[2] >> 4;
    let rate = data[2] & 0x0f;
    let channels = data[3] >> 4;
    let sample_size = (data[3] >> 1) & 0x07;
    if block_size == 0 || rate == 0x0f || channels >= 11 || sample_size == 3 || data[3] & 1 != 0 {
        return Some("a reserved value in the frame header");
    }
    // Frame or sample number, UTF-8-like coded: 1 to 7 bytes.
    let extra = match data[4].leading_ones() {
        0 => 0,
        n @ 2..=7 => n as usize - 1,
        _ => return Some("a malformed frame number"),
    };
    let mut len = 5 + extra;
    if data.len() < len || data[5..len].iter().any(|b| b & 0xc0 != 0x80) {
        return Some("a malformed frame number");
    }
    len += match block_size {
        6 => 1,
        7 => 2,
        _ => 0,
    };
    len += match rate {
        12 => 1,
        13 | 14 => 2,
        _ => 0,
    };
    if data.len() <= len {
        return Some("too short for a frame header");
    }
    (crc8(&data[..len]) != data[len]).then_some("a frame header CRC-8 mismatch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_real_headers_and_rejects_noise() {
        // Fixed blocksize 4608 (code 5), 44.1 kHz (9), stereo (1), 16-bit (4), frame 0.
        let mut h = vec![0xff, 0xf8, 0x59, 0x18, 0x00];
        h.push(crc8(&h));
        h.extend_from_slice(&[0x01, 0x02]);
        assert!(starts_with_frame_header(&h));
        // Two-byte frame number and 16-bit blocksize-minus-one (code 7).
        let mut h2 = vec![0xff, 0xf8, 0x79, 0x18, 0xc2, 0x80, 0x01, 0x00];
        h2.push(crc8(&h2));
        assert!(starts_with_frame_header(&h2));
        // From a Shaka Packager FLAC track: left/side stereo (channel code 8).
        assert!(starts_with_frame_header(&[
            0xff, 0xf8, 0x59, 0x88, 0x00, 0x8a, 0x4e
        ]));
        let mut bad = h.clone();
        bad[5] ^= 1;
        assert!(!starts_with_frame_header(&bad));
        assert!(!starts_with_frame_header(&h[..5]));
        // Pseudo-random blocks essentially never pass.
        let mut x: u32 = 1;
        let mut hits = 0;
        for _ in 0..100_000 {
            let block: Vec<u8> = (0..16)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            hits += starts_with_frame_header(&block) as u32;
        }
        assert_eq!(hits, 0);
    }

    #[test]
    fn a_frame_decrypted_with_the_wrong_key_fails_its_header_check() {
        use crate::cenc::{decrypt_in_place, Key, Pattern, SampleProtection, Scheme};
        // A frame header (the Shaka Packager one above) and some frame data, "encrypted" with
        // CTR under one key, then decrypted with the right key and with a wrong one.
        let clear: Vec<u8> = [0xff, 0xf8, 0x59, 0x88, 0x00, 0x8a]
            .into_iter()
            .chain((0..58u8).map(|i| i.wrapping_mul(37)))
            .collect();
        assert_eq!(frame_header_fault(&clear), None);
        let iv = [7u8; 8];
        let protection = SampleProtection {
            scheme: Scheme::Cenc,
            iv: &iv,
            subsamples: &[],
            pattern: Pattern::default(),
        };
        let right = Key::new([0x11; 16]);
        let mut sample = clear.clone();
        decrypt_in_place(&right, &protection, &mut sample).unwrap(); // CTR: encrypts too
        let mut good = sample.clone();
        decrypt_in_place(&right, &protection, &mut good).unwrap();
        assert_eq!(frame_header_fault(&good), None);
        let mut wrong = sample;
        decrypt_in_place(&Key::new([0x12; 16]), &protection, &mut wrong).unwrap();
        assert!(frame_header_fault(&wrong).is_some());
        // Each check on its own.
        let mut no_sync = clear.clone();
        no_sync[1] = 0xf0;
        assert_eq!(frame_header_fault(&no_sync), Some("no frame sync code"));
        let mut reserved = clear.clone();
        reserved[3] |= 1;
        assert_eq!(
            frame_header_fault(&reserved),
            Some("a reserved value in the frame header")
        );
        let mut crc = clear.clone();
        crc[5] ^= 0x40;
        assert_eq!(
            frame_header_fault(&crc),
            Some("a frame header CRC-8 mismatch")
        );
        assert_eq!(
            frame_header_fault(&clear[..5]),
            Some("too short for a frame header")
        );
    }
}
