//! The body of the `cenc` fuzz target in `fuzz/` and of its corpus replay
//! (`tests/fuzz_corpus.rs`), in one place so the two cannot drift. It takes untrusted bytes
//! and only returns; any panic (overflow, index, unwrap) is a bug.

use crate::cenc::{self, Key, Pattern, SampleProtection, Scheme, Subsample};

const KEY: [u8; 16] = [0x3c; 16];

/// One sample's protection as the decryptor gets it from `qtdemux` (`senc` subsamples, IV,
/// `tenc` pattern), decrypted in place; encrypting it first must decrypt back. Input: flags
/// (bit 0: cbcs, bit 1: 16-byte IV, bit 2: an IV of the wrong size), crypt and skip blocks,
/// a subsample count, six bytes per subsample (u16 clear, u32 protected, big-endian), the
/// IV, then the sample.
pub fn cenc(data: &[u8]) {
    let [flags, crypt, skip, count, rest @ ..] = data else {
        return;
    };
    let n = usize::from(*count) * 6;
    if rest.len() < n {
        return;
    }
    let (table, rest) = rest.split_at(n);
    let subsamples: Vec<Subsample> = table
        .chunks_exact(6)
        .map(|c| Subsample {
            clear: u32::from(u16::from_be_bytes([c[0], c[1]])),
            protected: u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
        })
        .collect();
    let iv_len = match (flags & 2 != 0, flags & 4 != 0) {
        (_, true) => usize::from(flags >> 4),
        (true, false) => 16,
        (false, false) => 8,
    };
    if rest.len() < iv_len {
        return;
    }
    let (iv, sample) = rest.split_at(iv_len);
    let protection = SampleProtection {
        scheme: if flags & 1 != 0 {
            Scheme::Cbcs
        } else {
            Scheme::Cenc
        },
        iv,
        subsamples: &subsamples,
        pattern: Pattern {
            crypt: *crypt,
            skip: *skip,
        },
    };
    let key = Key::new(KEY);
    let mut buf = sample.to_vec();
    let decrypted = cenc::decrypt_in_place(&key, &protection, &mut buf);
    let mut round = sample.to_vec();
    match cenc::encrypt_in_place(&key, &protection, &mut round) {
        Ok(()) => {
            cenc::decrypt_in_place(&key, &protection, &mut round).expect("what encrypts decrypts");
            assert_eq!(round, sample, "decrypt(encrypt(sample)) is not the sample");
            assert!(decrypted.is_ok());
        }
        Err(e) => assert_eq!(decrypted, Err(e)),
    }
}
