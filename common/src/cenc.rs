//! CENC sample decryption (ISO/IEC 23001-7): `cenc` (AES-128-CTR) and `cbcs` (AES-128-CBC with
//! a crypt/skip pattern), in place over subsamples. Plain Rust, no GStreamer.

use aes::cipher::{BlockDecryptMut, InnerIvInit, KeyInit, KeyIvInit, StreamCipher};
use aes::Aes128;
use zeroize::Zeroizing;

const BLOCK: usize = 16;

/// The protection scheme of a track (`schm` box, `cipher-mode` of GStreamer's protection meta).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// AES-128-CTR over the protected bytes of the whole sample, one continuous key stream.
    Cenc,
    /// AES-128-CBC, pattern encryption, IV reset at every subsample.
    Cbcs,
}

/// One `(clear, protected)` byte-range pair of a sample (`senc`/`subsamples` entries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subsample {
    pub clear: u32,
    pub protected: u32,
}

/// `crypt_byte_block:skip_byte_block` in 16-byte blocks; (0, 0) means every block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pattern {
    pub crypt: u8,
    pub skip: u8,
}

/// How one sample is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleProtection<'a> {
    pub scheme: Scheme,
    /// 8 or 16 bytes (cenc: an 8-byte IV is the counter's high half; cbcs: 16-byte constant IV).
    pub iv: &'a [u8],
    /// Empty: the whole sample is protected.
    pub subsamples: &'a [Subsample],
    /// cbcs only; ignored for cenc.
    pub pattern: Pattern,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    #[error("IV of {0} bytes (want 8 or 16)")]
    BadIvSize(usize),
    #[error("subsamples cover {covered} bytes but the sample has {size}")]
    SubsampleOverflow { covered: u64, size: usize },
}

/// A content key; zeroized when dropped, never printed.
#[derive(Clone)]
pub struct Key(Zeroizing<[u8; 16]>);

impl Key {
    pub fn new(bytes: [u8; 16]) -> Key {
        Key(Zeroizing::new(bytes))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

fn full_iv(iv: &[u8]) -> Result<[u8; 16], DecryptError> {
    let mut out = [0u8; 16];
    match iv.len() {
        8 | 16 => out[..iv.len()].copy_from_slice(iv),
        n => return Err(DecryptError::BadIvSize(n)),
    }
    Ok(out)
}

/// The protected byte ranges of a sample, checked against its size.
fn protected_ranges<'s>(
    subsamples: &'s [Subsample],
    size: usize,
) -> Result<Box<dyn Iterator<Item = std::ops::Range<usize>> + 's>, DecryptError> {
    if subsamples.is_empty() {
        return Ok(Box::new(std::iter::once(0..size)));
    }
    let covered: u64 = subsamples
        .iter()
        .map(|s| u64::from(s.clear) + u64::from(s.protected))
        .sum();
    // Fewer bytes covered than the sample holds is tolerated (the rest is clear); more is not.
    if covered > size as u64 {
        return Err(DecryptError::SubsampleOverflow { covered, size });
    }
    let mut offset = 0usize;
    Ok(Box::new(subsamples.iter().map(move |s| {
        let start = offset + s.clear as usize;
        offset = start + s.protected as usize;
        start..offset
    })))
}

/// Decrypts `data` in place.
pub fn decrypt_in_place(
    key: &Key,
    protection: &SampleProtection<'_>,
    data: &mut [u8],
) -> Result<(), DecryptError> {
    let iv = full_iv(protection.iv)?;
    let ranges = protected_ranges(protection.subsamples, data.len())?;
    match protection.scheme {
        Scheme::Cenc => {
            // One key stream runs across all protected ranges, byte-exact (partial blocks
            // continue in the next range).
            let mut ctr = ctr::Ctr128BE::<Aes128>::new(key.0.as_ref().into(), &iv.into());
            for range in ranges {
                ctr.apply_keystream(&mut data[range]);
            }
        }
        Scheme::Cbcs => {
            let cipher = Aes128::new(key.0.as_ref().into());
            for range in ranges {
                decrypt_cbcs_range(&cipher, &iv, protection.pattern, &mut data[range]);
            }
        }
    }
    Ok(())
}

/// The protected 16-byte blocks of one subsample's range under `pattern`, as byte ranges in
/// order: `crypt` blocks, then `skip` clear ones, repeated; a last period with fewer than
/// `crypt` whole blocks has them all protected; a final partial block is clear.
fn pattern_runs(len: usize, pattern: Pattern) -> impl Iterator<Item = std::ops::Range<usize>> {
    let whole_blocks = len / BLOCK;
    let (crypt, skip) = match (pattern.crypt as usize, pattern.skip as usize) {
        (0, _) | (_, 0) => (whole_blocks.max(1), 0),
        p => p,
    };
    (0..whole_blocks).step_by(crypt + skip).map(move |block| {
        let n = crypt.min(whole_blocks - block);
        block * BLOCK..(block + n) * BLOCK
    })
}

/// One subsample's protected range: the CBC chain starts at the constant IV and runs through
/// the protected blocks only (skipped blocks do not enter it).
fn decrypt_cbcs_range(cipher: &Aes128, iv: &[u8; 16], pattern: Pattern, range: &mut [u8]) {
    let mut cbc = cbc::Decryptor::<Aes128>::inner_iv_init(cipher.clone(), iv.into());
    for run in pattern_runs(range.len(), pattern) {
        for chunk in range[run].chunks_exact_mut(BLOCK) {
            cbc.decrypt_block_mut(chunk.into());
        }
    }
}

/// Test helper and reference for packagers: encrypts in place with the same layout rules.
pub fn encrypt_in_place(
    key: &Key,
    protection: &SampleProtection<'_>,
    data: &mut [u8],
) -> Result<(), DecryptError> {
    use aes::cipher::BlockEncryptMut;
    let iv = full_iv(protection.iv)?;
    let ranges = protected_ranges(protection.subsamples, data.len())?;
    match protection.scheme {
        Scheme::Cenc => decrypt_in_place(key, protection, data),
        Scheme::Cbcs => {
            for range in ranges {
                let range = &mut data[range];
                let mut cbc = cbc::Encryptor::<Aes128>::new(key.0.as_ref().into(), &iv.into());
                for run in pattern_runs(range.len(), protection.pattern) {
                    for chunk in range[run].chunks_exact_mut(BLOCK) {
                        cbc.encrypt_block_mut(chunk.into());
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace([' ', '\n'], "")).unwrap()
    }

    // NIST SP 800-38A, appendix F: key, plaintext and ciphertexts.
    const KEY: &str = "2b7e151628aed2a6abf7158809cf4f3c";
    const PLAIN: &str = "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
                         30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710";
    // F.5.1 CTR-AES128.Encrypt, initial counter f0f1…ff.
    const CTR_IV: &str = "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    const CTR_CIPHER: &str = "874d6191b620e3261bef6864990db6ce 9806f66b7970fdff8617187bb9fffdff
                              5ae4df3edbd5d35e5b4f09020db03eab 1e031dda2fbe03d1792170a0f3009cee";
    // F.2.1 CBC-AES128.Encrypt, IV 0001…0f.
    const CBC_IV: &str = "000102030405060708090a0b0c0d0e0f";
    const CBC_CIPHER: &str = "7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2
                              73bed6b8e3c1743b7116e69e22229516 3ff1caa1681fac09120eca307586e1a7";

    fn key() -> Key {
        Key::new(h(KEY).try_into().unwrap())
    }

    #[test]
    fn nist_ctr_aes128_whole_sample() {
        let mut data = h(CTR_CIPHER);
        let iv = h(CTR_IV);
        let p = SampleProtection {
            scheme: Scheme::Cenc,
            iv: &iv,
            subsamples: &[],
            pattern: Pattern::default(),
        };
        decrypt_in_place(&key(), &p, &mut data).unwrap();
        assert_eq!(data, h(PLAIN));
    }

    #[test]
    fn nist_cbc_aes128_whole_sample_with_clear_tail() {
        let mut data = h(CBC_CIPHER);
        data.extend_from_slice(b"tail!"); // a trailing partial block stays clear
        let iv = h(CBC_IV);
        let p = SampleProtection {
            scheme: Scheme::Cbcs,
            iv: &iv,
            subsamples: &[],
            pattern: Pattern::default(),
        };
        decrypt_in_place(&key(), &p, &mut data).unwrap();
        assert_eq!(&data[..64], &h(PLAIN)[..]);
        assert_eq!(&data[64..], b"tail!");
    }

    #[test]
    fn cenc_key_stream_continues_across_subsamples() {
        // The NIST ciphertext cut at odd offsets and interleaved with clear bytes.
        let c = h(CTR_CIPHER);
        let p = h(PLAIN);
        let sub = [
            Subsample {
                clear: 5,
                protected: 20,
            },
            Subsample {
                clear: 3,
                protected: 0,
            },
            Subsample {
                clear: 0,
                protected: 33,
            },
            Subsample {
                clear: 7,
                protected: 11,
            },
        ];
        let clear = |n: usize, tag: u8| vec![tag; n];
        let build = |src: &[u8]| -> Vec<u8> {
            [
                clear(5, 1),
                src[..20].to_vec(),
                clear(3, 2),
                src[20..53].to_vec(),
                clear(7, 3),
                src[53..].to_vec(),
            ]
            .concat()
        };
        let mut data = build(&c);
        let iv = h(CTR_IV);
        let prot = SampleProtection {
            scheme: Scheme::Cenc,
            iv: &iv,
            subsamples: &sub,
            pattern: Pattern::default(),
        };
        decrypt_in_place(&key(), &prot, &mut data).unwrap();
        assert_eq!(data, build(&p));
    }

    #[test]
    fn cenc_8_byte_iv_is_counter_high_half() {
        let iv8 = [9u8, 8, 7, 6, 5, 4, 3, 2];
        let iv16 = [&iv8[..], &[0u8; 8]].concat();
        let mut a = h(PLAIN);
        let mut b = a.clone();
        for (iv, data) in [(&iv8[..], &mut a), (&iv16[..], &mut b)] {
            let prot = SampleProtection {
                scheme: Scheme::Cenc,
                iv,
                subsamples: &[],
                pattern: Pattern::default(),
            };
            decrypt_in_place(&key(), &prot, data).unwrap();
        }
        assert_eq!(a, b);
        assert_ne!(a, h(PLAIN));
    }

    #[test]
    fn cbcs_pattern_skips_blocks_and_resets_iv_per_subsample() {
        // Pattern 1:1 over 8 whole blocks + 5 bytes: blocks 0,2,4,6 carry the NIST CBC chain,
        // blocks 1,3,5,7 and the 5-byte tail are clear. Two subsamples: the chain restarts.
        let c = h(CBC_CIPHER);
        let p = h(PLAIN);
        let build = |src: &[u8]| -> Vec<u8> {
            let mut range = Vec::new();
            for i in 0..4 {
                range.extend_from_slice(&src[i * 16..i * 16 + 16]);
                range.extend_from_slice(&[0x40 + i as u8; 16]);
            }
            range.extend_from_slice(b"12345");
            [vec![0xee; 3], range.clone(), vec![0xdd; 10], range].concat()
        };
        let sub = [
            Subsample {
                clear: 3,
                protected: 133,
            },
            Subsample {
                clear: 10,
                protected: 133,
            },
        ];
        let iv = h(CBC_IV);
        let prot = SampleProtection {
            scheme: Scheme::Cbcs,
            iv: &iv,
            subsamples: &sub,
            pattern: Pattern { crypt: 1, skip: 1 },
        };
        let mut data = build(&c);
        decrypt_in_place(&key(), &prot, &mut data).unwrap();
        assert_eq!(data, build(&p));
    }

    #[test]
    fn cbcs_1_9_round_trip_and_short_last_period() {
        let iv = [0x5au8; 16];
        let original: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        for (pattern, sub) in [
            (
                Pattern { crypt: 1, skip: 9 },
                vec![Subsample {
                    clear: 17,
                    protected: 983,
                }],
            ),
            // 3:2 over 12 whole blocks: periods [0..3],[5..8], then only 2 of 3 left: [10..12].
            (
                Pattern { crypt: 3, skip: 2 },
                vec![Subsample {
                    clear: 0,
                    protected: 200,
                }],
            ),
        ] {
            let prot = SampleProtection {
                scheme: Scheme::Cbcs,
                iv: &iv,
                subsamples: &sub,
                pattern,
            };
            let mut data = original.clone();
            encrypt_in_place(&key(), &prot, &mut data).unwrap();
            assert_ne!(data, original);
            decrypt_in_place(&key(), &prot, &mut data).unwrap();
            assert_eq!(data, original);
        }
        // Which blocks 3:2 touches: compare against single-block ECB of block 10 with chaining
        // from block 7 (the last protected block before it).
        let prot = SampleProtection {
            scheme: Scheme::Cbcs,
            iv: &iv,
            subsamples: &[],
            pattern: Pattern { crypt: 3, skip: 2 },
        };
        let mut data = original[..200].to_vec();
        encrypt_in_place(&key(), &prot, &mut data).unwrap();
        for clear_block in [3usize, 4, 8, 9] {
            assert_eq!(
                data[clear_block * 16..clear_block * 16 + 16],
                original[clear_block * 16..clear_block * 16 + 16]
            );
        }
        for enc_block in [0usize, 1, 2, 5, 6, 7, 10, 11] {
            assert_ne!(
                data[enc_block * 16..enc_block * 16 + 16],
                original[enc_block * 16..enc_block * 16 + 16]
            );
        }
        assert_eq!(data[192..], original[192..200]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut data = vec![0u8; 10];
        let iv = [0u8; 12];
        let mut prot = SampleProtection {
            scheme: Scheme::Cenc,
            iv: &iv,
            subsamples: &[],
            pattern: Pattern::default(),
        };
        assert_eq!(
            decrypt_in_place(&key(), &prot, &mut data),
            Err(DecryptError::BadIvSize(12))
        );
        let iv = [0u8; 16];
        prot.iv = &iv;
        let sub = [Subsample {
            clear: 4,
            protected: 7,
        }];
        prot.subsamples = &sub;
        assert!(matches!(
            decrypt_in_place(&key(), &prot, &mut data),
            Err(DecryptError::SubsampleOverflow {
                covered: 11,
                size: 10
            })
        ));
        assert_eq!(format!("{:?}", key()), "Key(<redacted>)");
    }
}
