//! Decryption throughput of widevinedecrypt's sample functions (`cenc` CTR, `cbcs` 1:9 pattern)
//! on one core: measured in process, or read from the criterion bench's results.

use anyhow::{Context, Result};
use gstwidevinestub::cenc::{self, Key, Pattern, SampleProtection, Scheme, Subsample};
use std::path::Path;
use std::time::{Duration, Instant};

/// The layout the emulator packages and the criterion bench uses: 16 KiB samples (a FLAC
/// frame of 24-bit stereo), 64 of them per iteration.
pub const SAMPLE_BYTES: usize = 16 * 1024;
pub const SAMPLES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// 10^6 bytes of samples per second, one thread.
    pub mb_per_s: f64,
    pub bytes: u64,
    pub seconds: f64,
}

/// The one whole-sample subsample of a `cbcs` bench sample.
const WHOLE: [Subsample; 1] = [Subsample {
    clear: 0,
    protected: SAMPLE_BYTES as u32,
}];

/// How a bench sample is protected: whole-sample CTR for `cenc`, the 1:9 pattern over one
/// protected range for `cbcs`.
fn protection(scheme: Scheme) -> SampleProtection<'static> {
    SampleProtection {
        scheme,
        iv: match scheme {
            Scheme::Cenc => &[7u8; 8],
            Scheme::Cbcs => &[9u8; 16],
        },
        subsamples: if scheme == Scheme::Cbcs { &WHOLE } else { &[] },
        pattern: Pattern { crypt: 1, skip: 9 },
    }
}

/// Runs `decrypt` on each sample of the same 1 MiB, over and over for about `budget`.
fn timed(budget: Duration, mut decrypt: impl FnMut(&mut [u8]) -> Result<()>) -> Result<Throughput> {
    let mut data = vec![0x5au8; SAMPLE_BYTES * SAMPLES];
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < budget || bytes == 0 {
        for sample in data.chunks_exact_mut(SAMPLE_BYTES) {
            decrypt(std::hint::black_box(sample))?;
        }
        bytes += data.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Throughput {
        mb_per_s: bytes as f64 / seconds / 1e6,
        bytes,
        seconds,
    })
}

/// Decrypts the same 1 MiB of samples in place for about `budget`, one thread.
pub fn measure(scheme: Scheme, budget: Duration) -> Result<Throughput> {
    let key = Key::new([0x3c; 16]);
    let p = protection(scheme);
    timed(budget, |sample| {
        cenc::decrypt_in_place(&key, &p, sample).context("decrypting")
    })
}

/// Which CDM decrypts, through widevinedecrypt's `Cdm` trait: its own in-process Clear Key CDM,
/// or a module loaded at run time behind an FFI backend (`ocdm:`, `chromium:`).
#[derive(Debug, Clone)]
pub enum Backend {
    InProcess,
    Ocdm(std::path::PathBuf),
    Chromium(std::path::PathBuf),
}

impl Backend {
    pub fn label(&self) -> &'static str {
        match self {
            Backend::InProcess => "clearkey (in process)",
            Backend::Ocdm(_) => "ocdm: (test module, FFI)",
            Backend::Chromium(_) => "chromium: (test module, FFI)",
        }
    }
}

/// The bench's key id and key.
const KID: [u8; 16] = [0x42; 16];
const KEY: [u8; 16] = [0x3c; 16];

/// A CDM of `backend` with a Clear Key session licensed for the bench's key (the license built
/// here, as a Clear Key server would).
fn licensed(backend: &Backend) -> Result<(Box<dyn gstwidevinestub::cdm::Cdm>, String)> {
    use amzmusic_common::{clearkey, license::KeyId};
    use gstwidevinestub::cdm::{Cdm, ChromiumCdm, ClearKeyCdm, InitDataType, OcdmCdm};
    let ks = clearkey::KEY_SYSTEM;
    let ids = clearkey::SYSTEM_IDS.to_vec();
    let cdm: Box<dyn Cdm> = match backend {
        Backend::InProcess => Box::new(ClearKeyCdm::new()),
        Backend::Ocdm(lib) => Box::new(OcdmCdm::open(lib, ks, ids).map_err(anyhow::Error::msg)?),
        Backend::Chromium(lib) => {
            Box::new(ChromiumCdm::open(lib, ks, ids).map_err(anyhow::Error::msg)?)
        }
    };
    let (session, _request) = cdm
        .create_session(InitDataType::Cenc, &clearkey::pssh(&[KeyId(KID)]))
        .context("creating a session")?;
    cdm.update(&session, &clearkey::license(&[(KeyId(KID), KEY)], None))
        .context("licensing the session")?;
    Ok((cdm, session))
}

/// Decrypts the same 1 MiB of 16 KiB samples in place through `backend` for about `budget`,
/// one `Cdm::decrypt` per sample, as the element calls it.
pub fn measure_cdm(backend: &Backend, scheme: Scheme, budget: Duration) -> Result<Throughput> {
    let kid = amzmusic_common::license::KeyId(KID);
    let (cdm, session) = licensed(backend)?;
    let p = protection(scheme);
    let t = timed(budget, |sample| {
        cdm.decrypt(&kid, &p, sample).context("decrypting")
    });
    cdm.close_session(&session);
    t
}

/// MB/s of a criterion benchmark (`target/criterion/<id>/new/`): its bytes per iteration over
/// its mean time per iteration.
pub fn criterion_result(criterion_dir: &Path, id: &str) -> Result<f64> {
    let dir = criterion_dir.join(id).join("new");
    let est: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("estimates.json"))?)?;
    let bench: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("benchmark.json"))?)?;
    let mean_ns = est["mean"]["point_estimate"]
        .as_f64()
        .context("estimates.json without mean")?;
    let bytes = bench["throughput"]["Bytes"]
        .as_f64()
        .or_else(|| bench["throughput"]["BytesDecimal"].as_f64())
        .context("benchmark.json without a byte throughput")?;
    Ok(bytes / (mean_ns / 1e9) / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_schemes_measure_a_positive_rate() {
        for s in [Scheme::Cenc, Scheme::Cbcs] {
            let t = measure(s, Duration::from_millis(5)).unwrap();
            assert!(t.bytes >= (SAMPLE_BYTES * SAMPLES) as u64);
            assert!(t.mb_per_s > 0.0 && t.mb_per_s.is_finite());
        }
    }

    #[test]
    fn every_backend_decrypts_what_the_in_process_one_does() {
        let dir = amzmusic_tests::target_profile_dir();
        let backends = [
            Backend::InProcess,
            Backend::Ocdm(dir.join("libamzmusic_test_ocdm.so")),
            Backend::Chromium(dir.join("libamzmusic_test_chromium_cdm.so")),
        ];
        for b in &backends {
            if let Backend::Ocdm(p) | Backend::Chromium(p) = b {
                if !p.exists() {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "{} is not built",
                        p.display()
                    );
                    eprintln!("SKIP: {} is not built", p.display());
                    continue;
                }
            }
            let (cdm, _session) = licensed(b).unwrap();
            for s in [Scheme::Cenc, Scheme::Cbcs] {
                let t = measure_cdm(b, s, Duration::from_millis(5)).unwrap();
                assert!(t.mb_per_s > 0.0 && t.mb_per_s.is_finite(), "{b:?} {s:?}");
                // The same sample decrypts to the same bytes as the element's own AES code.
                let p = protection(s);
                let sample: Vec<u8> = (0..SAMPLE_BYTES).map(|i| i as u8).collect();
                let mut want = sample.clone();
                cenc::decrypt_in_place(&Key::new(KEY), &p, &mut want).unwrap();
                let mut got = sample.clone();
                cdm.decrypt(&amzmusic_common::license::KeyId(KID), &p, &mut got)
                    .unwrap();
                assert!(got == want && got != sample, "{b:?} {s:?}: other bytes");
            }
        }
    }

    #[test]
    fn criterion_results_read_back() {
        let d = tempfile::tempdir().unwrap();
        let new = d.path().join("decrypt/cenc/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":1000000.0}}"#,
        )
        .unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"throughput":{"Bytes":2000000}}"#,
        )
        .unwrap();
        let mbs = criterion_result(d.path(), "decrypt/cenc").unwrap();
        assert!((mbs - 2000.0).abs() < 1e-6);
        assert!(criterion_result(d.path(), "decrypt/cbcs").is_err());
    }
}
