//! Common Encryption of samples as the packager side does it: `cenc` (AES-128-CTR, 8-byte
//! per-sample IVs) and `cbcs` (AES-128-CBC, 1:9 pattern, constant IV), with subsamples.

use aes::cipher::{BlockEncryptMut, KeyInit, KeyIvInit, StreamCipher};

use super::catalog::{Codec, Scheme};
use super::fmp4::SampleAux;

type Aes128Ctr = ctr::Ctr64BE<aes::Aes128>;
type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;

/// Bytes left clear at the start of an E-AC-3 sample (the sync frame header stays readable, as
/// CENC asks for codecs whose headers a player may parse). FLAC and Opus encrypt whole samples.
const EAC3_CLEAR_HEADER: usize = 16;

pub struct SampleEncryptor {
    scheme: Scheme,
    key: [u8; 16],
    iv_seed: [u8; 16],
    pattern: (usize, usize),
    codec: Codec,
}

impl SampleEncryptor {
    pub fn new(scheme: Scheme, codec: Codec, key: [u8; 16], iv_seed: [u8; 16]) -> Self {
        SampleEncryptor {
            scheme,
            key,
            iv_seed,
            pattern: (1, 9),
            codec,
        }
    }

    pub fn pattern(&self) -> (u8, u8) {
        (self.pattern.0 as u8, self.pattern.1 as u8)
    }

    /// cbcs: the constant IV written to `tenc`.
    pub fn constant_iv(&self) -> Option<[u8; 16]> {
        (self.scheme == Scheme::Cbcs).then_some(self.iv_seed)
    }

    /// Encrypts sample number `index` (counted from the track start) in place.
    pub fn encrypt(&self, index: u64, sample: &mut [u8]) -> SampleAux {
        match self.scheme {
            Scheme::Cenc => {
                let base = u64::from_be_bytes(self.iv_seed[..8].try_into().expect("8 bytes"));
                let iv8 = base.wrapping_add(index).to_be_bytes();
                let mut iv = [0u8; 16];
                iv[..8].copy_from_slice(&iv8);
                let mut cipher = Aes128Ctr::new(&self.key.into(), &iv.into());
                if self.codec == Codec::Eac3 && sample.len() > EAC3_CLEAR_HEADER {
                    cipher.apply_keystream(&mut sample[EAC3_CLEAR_HEADER..]);
                    SampleAux {
                        iv: iv8.to_vec(),
                        subsamples: vec![(
                            EAC3_CLEAR_HEADER as u16,
                            (sample.len() - EAC3_CLEAR_HEADER) as u32,
                        )],
                    }
                } else {
                    cipher.apply_keystream(sample);
                    SampleAux {
                        iv: iv8.to_vec(),
                        subsamples: vec![],
                    }
                }
            }
            Scheme::Cbcs => {
                let clear = if self.codec == Codec::Eac3 {
                    EAC3_CLEAR_HEADER.min(sample.len())
                } else {
                    0
                };
                cbcs_pattern_encrypt(&self.key, &self.iv_seed, self.pattern, &mut sample[clear..]);
                // Always one subsample: with a single protected range, "restart the IV per
                // subsample" and "chain across subsamples" mean the same, so every reader
                // (ffmpeg applies the pattern only to subsample-described samples) agrees.
                SampleAux {
                    iv: vec![],
                    subsamples: vec![(clear as u16, (sample.len() - clear) as u32)],
                }
            }
        }
    }
}

/// CBC over the pattern's crypt blocks of one protected range, IV set at the range start,
/// trailing partial block left clear.
pub fn cbcs_pattern_encrypt(
    key: &[u8; 16],
    iv: &[u8; 16],
    (crypt, skip): (usize, usize),
    data: &mut [u8],
) {
    let mut enc = Aes128CbcEnc::new(key.into(), iv.into());
    let blocks = data.len() / 16;
    let mut b = 0;
    while b < blocks {
        let n = crypt.min(blocks - b).max(1);
        for i in b..b + n {
            let block = aes::cipher::generic_array::GenericArray::from_mut_slice(
                &mut data[i * 16..(i + 1) * 16],
            );
            enc.encrypt_block_mut(block);
        }
        b += n + skip;
    }
}

/// A plain AES-128 block encryption, for tests against published vectors.
pub fn aes128_encrypt_block(key: &[u8; 16], block: &mut [u8; 16]) {
    let mut c = aes::Aes128::new(key.into());
    c.encrypt_block_mut(block.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // NIST SP 800-38A F.5.1 (CTR-AES128.Encrypt), first two blocks.
    #[test]
    fn ctr_matches_nist_vector() {
        let key: [u8; 16] = h("2b7e151628aed2a6abf7158809cf4f3c").try_into().unwrap();
        let iv: [u8; 16] = h("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff").try_into().unwrap();
        let mut data = h("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        Aes128Ctr::new(&key.into(), &iv.into()).apply_keystream(&mut data);
        assert_eq!(
            hex::encode(data),
            "874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff"
        );
    }

    // NIST SP 800-38A F.2.1 (CBC-AES128.Encrypt): a 1:0 pattern is plain CBC.
    #[test]
    fn cbc_matches_nist_vector() {
        let key: [u8; 16] = h("2b7e151628aed2a6abf7158809cf4f3c").try_into().unwrap();
        let iv: [u8; 16] = h("000102030405060708090a0b0c0d0e0f").try_into().unwrap();
        let mut data = h("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        cbcs_pattern_encrypt(&key, &iv, (1, 0), &mut data);
        assert_eq!(
            hex::encode(data),
            "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2"
        );
    }

    #[test]
    fn pattern_leaves_skipped_and_partial_blocks_clear() {
        let key = [1u8; 16];
        let iv = [2u8; 16];
        let orig: Vec<u8> = (0..(16 * 12 + 5)).map(|i| i as u8).collect();
        let mut data = orig.clone();
        cbcs_pattern_encrypt(&key, &iv, (1, 9), &mut data);
        assert_ne!(data[..16], orig[..16]);
        assert_eq!(data[16..160], orig[16..160]);
        assert_ne!(data[160..176], orig[160..176]);
        assert_eq!(data[176..], orig[176..]);
        // The second crypt block chains from the first ciphertext block.
        let mut second: [u8; 16] = orig[160..176].try_into().unwrap();
        for (b, c) in second.iter_mut().zip(&data[..16]) {
            *b ^= c;
        }
        aes128_encrypt_block(&key, &mut second);
        assert_eq!(&data[160..176], &second);
    }

    #[test]
    fn cenc_ivs_differ_per_sample_and_eac3_keeps_its_header() {
        let e = SampleEncryptor::new(Scheme::Cenc, Codec::Eac3, [3; 16], [4; 16]);
        let mut a = vec![0u8; 64];
        let aux_a = e.encrypt(0, &mut a);
        let mut b = vec![0u8; 64];
        let aux_b = e.encrypt(1, &mut b);
        assert_ne!(aux_a.iv, aux_b.iv);
        assert_eq!(&a[..16], &[0u8; 16]);
        assert_eq!(aux_a.subsamples, vec![(16, 48)]);
    }
}
