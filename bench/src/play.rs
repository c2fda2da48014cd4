//! One measured playback in a child process (`amzmusic-bench play --spec JSON`): what reached a
//! clocked `fakesink`, when, how late, and the process's CPU time and peak RSS.
//!
//! Every player is measured the same way, at its audio sink:
//! - first buffer: the sink pad's first buffer after the PLAYING request (time to first audio);
//! - playing: each buffer the sink renders, with its wall time and media time;
//! - a stall: a buffer rendered later after its due time than a sound card's buffer
//!   (`sink_buffer_ms`, audiobasesink's default `buffer-time`) would have covered: the pipeline
//!   ran dry and the listener hears a gap from `due + sink_buffer_ms` to the buffer's arrival.
//!   The sink's `ts-offset` then grows by that gap, as a sound card resuming would, so the rest
//!   plays in real time again.

use anyhow::{anyhow, bail, Context, Result};
use gst::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// amzdashdemux's context type for what a stream leaves the next (`HISTORY_CONTEXT_TYPE`).
const HISTORY_CONTEXT: &str = "amzdash.history";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaySpec {
    /// `playbin3 uri=…` when set; otherwise `launch`.
    pub uri: Option<String>,
    /// A pipeline description ending in (or holding) `fakesink name=sink`.
    pub launch: Option<String>,
    /// Clocked (real-time) playback, or as fast as the pipeline goes.
    pub sync: bool,
    /// Playbacks in this process: the first is cold, the next ones warm.
    pub runs: u32,
    /// Stop each playback at its first buffer at the sink.
    pub until_first_buffer: bool,
    /// Stop after this much audio was rendered.
    pub max_audio_s: Option<f64>,
    pub timeout_s: f64,
    /// Keep every rendered buffer's (wall, media) times.
    pub timeline: bool,
    /// Audio a sound card holds ahead (ms): lateness up to this much is not heard.
    pub sink_buffer_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub error: Option<String>,
    pub eos: bool,
    pub timed_out: bool,
    /// Seconds from the PLAYING request to the sink pad's first buffer.
    pub first_buffer_s: Option<f64>,
    /// Seconds from the PLAYING request to the first buffer rendered in PLAYING.
    pub first_render_s: Option<f64>,
    /// Seconds from the PLAYING request to the end of the run (EOS, stop or timeout).
    pub end_s: f64,
    /// Seconds of audio rendered.
    pub audio_s: f64,
    /// `[wall s, media s]` of each rendered buffer (when asked for).
    pub buffers: Vec<[f64; 2]>,
    /// `[due s, rendered s]` of each late buffer.
    pub stalls: Vec<[f64; 2]>,
    /// Buffering messages below 100 % after playback started (information only).
    pub buffering_dips: u32,
    /// Factories whose name says demux or decrypt, as the pipeline plugged them.
    pub elements: Vec<String>,
    /// User + system CPU seconds of the whole process during the run.
    pub cpu_s: f64,
    /// `(start s, representation)` of each segment as amzdashdemux sent it downstream (its
    /// `amzdashdemux-segment` messages; none from dashdemux2).
    #[serde(default)]
    pub segments: Vec<(f64, String)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChildOutput {
    pub runs: Vec<RunResult>,
    /// Peak resident set of the process (kB).
    pub peak_rss_kb: u64,
}

/// (user + system CPU seconds, peak RSS kB) of this process.
pub fn rusage_self() -> (f64, u64) {
    // SAFETY: getrusage only writes the struct it is given; a zeroed rusage is a valid value.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (tv(ru.ru_utime) + tv(ru.ru_stime), ru.ru_maxrss as u64)
}

#[derive(Default)]
struct Rec {
    /// Clock time (ns) the end of the last rendered buffer was due.
    last_due_end: Option<i64>,
    first_buffer: Option<f64>,
    first_render: Option<f64>,
    buffers: Vec<[f64; 2]>,
    stalls: Vec<[f64; 2]>,
    audio_s: f64,
}

fn secs(t: gst::ClockTime) -> f64 {
    t.nseconds() as f64 / 1e9
}

fn build(spec: &PlaySpec) -> Result<(gst::Element, gst::Element)> {
    let sink = gst::ElementFactory::make("fakesink")
        .name("sink")
        .build()
        .context("fakesink")?;
    if let Some(uri) = &spec.uri {
        let pb = gst::ElementFactory::make("playbin3")
            .property("uri", uri)
            .build()
            .context("playbin3")?;
        pb.set_property("audio-sink", &sink);
        return Ok((pb, sink));
    }
    let desc = spec
        .launch
        .as_deref()
        .context("a spec needs uri or launch")?;
    let p = gst::parse::launch(desc).with_context(|| format!("parsing {desc}"))?;
    let sink = p
        .downcast_ref::<gst::Bin>()
        .and_then(|b| b.by_name("sink"))
        .context("the pipeline has no element named sink")?;
    Ok((p, sink))
}

/// One playback. `carried`: amzdashdemux's `amzdash.history` context (the last stream's
/// estimates) as the last playback's pipeline held it, given to this one before it starts, as
/// an application playing track after track in new pipelines would, so a warm start is warm;
/// replaced by what this pipeline holds at its end. Only that context: the peer's warm runs
/// stay as they were measured (no shared HTTP session carried over).
fn run_once(spec: &PlaySpec, carried: &mut Vec<gst::Context>) -> Result<RunResult> {
    let (pipeline, sink) = build(spec)?;
    for c in carried.iter() {
        pipeline.set_context(c);
    }
    sink.set_property("sync", spec.sync);
    sink.set_property("signal-handoffs", true);
    let clock = gst::SystemClock::obtain();
    let rec = Arc::new(Mutex::new(Rec::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let elements = Arc::new(Mutex::new(Vec::<String>::new()));
    if let Some(bin) = pipeline.downcast_ref::<gst::Bin>() {
        let seen = |e: &gst::Element, into: &Mutex<Vec<String>>| {
            if let Some(f) = e.factory() {
                let n = f.name().to_string();
                if n.contains("demux") || n.contains("decrypt") {
                    into.lock().unwrap().push(n);
                }
            }
        };
        let mut it = bin.iterate_recurse();
        while let Ok(Some(e)) = it.next() {
            seen(&e, &elements);
        }
        let el = elements.clone();
        bin.connect_deep_element_added(move |_, _, e| seen(e, &el));
    }

    let t0 = clock.time();
    let since = move |now: gst::ClockTime| secs(now.saturating_sub(t0));
    let pad = sink
        .static_pad("sink")
        .context("fakesink has no sink pad")?;
    {
        let rec = rec.clone();
        let clock = clock.clone();
        let stop = stop.clone();
        let until_first = spec.until_first_buffer;
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let mut r = rec.lock().unwrap();
            if r.first_buffer.is_none() {
                r.first_buffer = Some(since(clock.time()));
                if until_first {
                    stop.store(true, Ordering::SeqCst);
                }
            }
            gst::PadProbeReturn::Ok
        });
    }
    {
        let rec = rec.clone();
        let stop = stop.clone();
        let (sync, keep, max_audio) = (spec.sync, spec.timeline, spec.max_audio_s);
        let cover = (spec.sink_buffer_ms * 1e6) as i64;
        let pad = pad.clone();
        sink.connect("handoff", false, move |args| {
            let sink = args[0].get::<gst::Element>().ok()?;
            let buf = args[1].get::<gst::Buffer>().ok()?;
            let clock = sink.clock().unwrap_or_else(gst::SystemClock::obtain);
            let now = clock.time();
            let pts = buf.pts();
            let mut r = rec.lock().unwrap();
            if sync {
                let rt = pad.sticky_event::<gst::event::Segment>(0).and_then(|ev| {
                    ev.segment()
                        .downcast_ref::<gst::ClockTime>()
                        .and_then(|s| s.to_running_time(pts?))
                });
                if let (Some(rt), Some(base)) = (rt, sink.base_time()) {
                    let mut offset: i64 = sink.property("ts-offset");
                    let due = (base + rt).nseconds() as i64 + offset;
                    let late = now.nseconds() as i64 - due;
                    if late > cover {
                        let dry = gst::ClockTime::from_nseconds((due + cover).max(0) as u64);
                        r.stalls.push([since(dry), since(now)]);
                        offset += late - cover;
                        sink.set_property("ts-offset", offset);
                    }
                    let dur = buf.duration().map_or(0, |d| d.nseconds() as i64);
                    r.last_due_end = Some((base + rt).nseconds() as i64 + offset + dur);
                }
            }
            if r.first_render.is_none() {
                r.first_render = Some(since(now));
            }
            if keep {
                let media = pts.map(secs).unwrap_or(f64::NAN);
                r.buffers.push([since(now), media]);
            }
            r.audio_s += buf.duration().map(secs).unwrap_or(0.0);
            if max_audio.is_some_and(|m| r.audio_s >= m) {
                stop.store(true, Ordering::SeqCst);
            }
            None
        });
    }

    let bus = pipeline.bus().context("pipeline without bus")?;
    let (cpu0, _) = rusage_self();
    let started = Instant::now();
    let mut out = RunResult::default();
    if let Err(e) = pipeline.set_state(gst::State::Playing) {
        out.error = Some(format!("cannot start: {e}"));
    }
    let timeout = Duration::from_secs_f64(spec.timeout_s);
    while out.error.is_none() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if started.elapsed() > timeout {
            out.timed_out = true;
            break;
        }
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(50),
            &[
                gst::MessageType::Error,
                gst::MessageType::Eos,
                gst::MessageType::Buffering,
                gst::MessageType::Element,
            ],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(e) => {
                out.error = Some(format!(
                    "{} ({})",
                    e.error(),
                    e.debug().map(|d| d.to_string()).unwrap_or_default()
                ));
            }
            gst::MessageView::Eos(_) => {
                out.eos = true;
                break;
            }
            gst::MessageView::Buffering(b)
                if b.percent() < 100 && rec.lock().unwrap().first_render.is_some() =>
            {
                out.buffering_dips += 1;
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure().filter(|s| s.name() == "amzdashdemux-segment") {
                    if let (Ok(start), Ok(rep)) =
                        (s.get::<u64>("start"), s.get::<String>("representation"))
                    {
                        out.segments.push((start as f64 / 1e9, rep));
                    }
                }
            }
            _ => {}
        }
    }
    let end = clock.time();
    out.end_s = since(end);
    {
        // Ran dry and nothing came back before the run ended: an open stall.
        let mut r = rec.lock().unwrap();
        let cover = (spec.sink_buffer_ms * 1e6) as i64;
        if spec.sync && (out.timed_out || out.error.is_some()) {
            if let Some(due_end) = r.last_due_end {
                if end.nseconds() as i64 > due_end + cover {
                    let dry = gst::ClockTime::from_nseconds((due_end + cover).max(0) as u64);
                    r.stalls.push([since(dry), out.end_s]);
                }
            }
        }
    }
    let (cpu1, _) = rusage_self();
    out.cpu_s = cpu1 - cpu0;
    *carried = pipeline
        .contexts()
        .into_iter()
        .filter(|c| c.context_type() == HISTORY_CONTEXT)
        .collect();
    let _ = pipeline.set_state(gst::State::Null);
    let r = std::mem::take(&mut *rec.lock().unwrap());
    out.first_buffer_s = r.first_buffer;
    out.first_render_s = r.first_render;
    out.buffers = r.buffers;
    out.stalls = r.stalls;
    out.audio_s = r.audio_s;
    let mut el = elements.lock().unwrap().clone();
    el.sort();
    el.dedup();
    out.elements = el;
    Ok(out)
}

/// The child's side: runs the spec's playbacks and prints `RESULT <json>`.
pub fn child_main(spec_json: &str) -> Result<()> {
    let spec: PlaySpec = serde_json::from_str(spec_json).context("--spec JSON")?;
    gst::init()?;
    let mut out = ChildOutput::default();
    let mut carried = Vec::new();
    for _ in 0..spec.runs.max(1) {
        let r = run_once(&spec, &mut carried).unwrap_or_else(|e| RunResult {
            error: Some(format!("{e:#}")),
            ..RunResult::default()
        });
        let failed = r.error.is_some();
        out.runs.push(r);
        if failed {
            break;
        }
    }
    out.peak_rss_kb = rusage_self().1;
    println!("RESULT {}", serde_json::to_string(&out)?);
    Ok(())
}

/// The parent's side: runs `exe play --spec …` with `env`, within the spec's timeout plus a
/// margin, and reads its result. The child's stderr goes to `log`.
pub fn spawn(
    exe: &Path,
    spec: &PlaySpec,
    env: &[(String, String)],
    log: &Path,
) -> Result<ChildOutput> {
    let limit = Duration::from_secs_f64(spec.timeout_s * spec.runs.max(1) as f64 + 20.0);
    let line = spawn_child(exe, "play", &serde_json::to_string(spec)?, limit, env, log)?;
    serde_json::from_str(&line).context("player result JSON")
}

/// Runs `exe SUBCOMMAND --spec SPEC` with `env`, kills it after `limit`, and returns what
/// follows `RESULT ` on its stdout. The child's stderr goes to `log`.
pub fn spawn_child(
    exe: &Path,
    subcommand: &str,
    spec_json: &str,
    limit: Duration,
    env: &[(String, String)],
    log: &Path,
) -> Result<String> {
    let err = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(exe)
        .arg(subcommand)
        .arg("--spec")
        .arg(spec_json)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .context("starting a player process")?;
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("RESULT ").map(str::to_string))
    });
    let started = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the player process did not finish within {limit:?} (log: {})",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let line = reader.join().map_err(|_| anyhow!("reader thread"))?;
    match line {
        Some(l) => Ok(l),
        None => {
            let t = tail(log, 4);
            bail!(
                "the player process ended ({status}) without a result; {}",
                if t.trim().is_empty() {
                    format!("its log {} is empty", log.display())
                } else {
                    format!("its log ends: {t}")
                }
            )
        }
    }
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}
