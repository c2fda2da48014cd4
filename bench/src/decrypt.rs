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

/// Decrypts the same 1 MiB of samples in place for about `budget`, one thread.
pub fn measure(scheme: Scheme, budget: Duration) -> Result<Throughput> {
    let key = Key::new([0x3c; 16]);
    let iv: &[u8] = match scheme {
        Scheme::Cenc => &[7u8; 8],
        Scheme::Cbcs => &[9u8; 16],
    };
    let whole = [Subsample {
        clear: 0,
        protected: SAMPLE_BYTES as u32,
    }];
    let protection = SampleProtection {
        scheme,
        iv,
        subsamples: if scheme == Scheme::Cbcs { &whole } else { &[] },
        pattern: Pattern { crypt: 1, skip: 9 },
    };
    let mut data = vec![0x5au8; SAMPLE_BYTES * SAMPLES];
    let started = Instant::now();
    let mut bytes = 0u64;
    while started.elapsed() < budget || bytes == 0 {
        for sample in data.chunks_exact_mut(SAMPLE_BYTES) {
            cenc::decrypt_in_place(&key, &protection, std::hint::black_box(sample))
                .context("decrypting")?;
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
