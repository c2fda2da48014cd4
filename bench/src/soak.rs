// SPDX-License-Identifier: MPL-2.0
//! The soak child (`amzmusic-bench soak --spec JSON`): one `playbin3` in one process playing a
//! plan of tracks back to back, `about-to-finish` setting the next `amazonmusic://` URI, into a
//! `fakesink sync=false`; after each track the process's resident set (VmRSS) and thread count.
//!
//! A track begins at its `stream-start` event at the sink pad and ends at the next one (or at the
//! one EOS, after the last). What came out in between is counted twice over: the buffers'
//! durations, and the samples their bytes hold under the caps they came with; the parent compares
//! both with the catalogue's duration, so a track cut short (or played twice) cannot pass.

use anyhow::{Context, Result};
use gst::prelude::*;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One track of the plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SoakItem {
    pub id: String,
    /// amazonmusicsrc's `quality` (`sd`, `hd`, …); None keeps `auto`.
    pub quality: Option<String>,
    /// amazonmusicsrc's `market`; None keeps the environment's.
    pub market: Option<String>,
    /// The catalogue's duration.
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakSpec {
    pub plan: Vec<SoakItem>,
    /// For the whole chain.
    pub timeout_s: f64,
}

/// One track as the sink saw it, and the process right after it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrackRecord {
    pub stream_id: String,
    pub buffers: u64,
    /// Sum of the buffers' durations.
    pub duration_ns: u64,
    /// The samples the buffers' bytes hold, as time.
    pub samples_ns: u64,
    /// First buffer's stream time (its PTS through the segment in force, so a primed
    /// stream whose segment starts at its edit list's media time reads 0), and the last
    /// buffer's stream time + duration.
    pub first_pts_ns: Option<u64>,
    pub end_pts_ns: Option<u64>,
    /// Every raw format the track came in (`S16LE/44100/2`, …), in order.
    pub formats: Vec<String>,
    /// VmRSS (KiB) and threads of the process when the track ended.
    pub rss_kb: u64,
    pub threads: usize,
    /// RssAnon when the track ended, KiB.
    pub rss_anon_kb: u64,
    /// The lowest and highest VmRSS while the track played (KiB, read every 20 ms).
    pub rss_min_kb: u64,
    pub rss_max_kb: u64,
    /// Bytes malloc had handed out and not had back when the track ended (mallinfo2:
    /// `uordblks + hblkhd`, every arena), KiB: the live heap, without the pages the allocator
    /// keeps after a free.
    pub heap_kb: u64,
    /// Seconds from the PLAYING request to the track's end.
    pub ended_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SoakOutput {
    pub tracks: Vec<TrackRecord>,
    /// The track id of each source playbin3 created, in order (`source-setup`).
    pub sources: Vec<String>,
    /// Problems seen on the way (a source that is not the plan's next track, a buffer outside
    /// any track).
    pub anomalies: Vec<String>,
    pub eos: bool,
    /// EOS events that reached the sink pad (one, after the last track).
    pub eos_events: u32,
    pub error: Option<String>,
    pub timed_out: bool,
    /// PLAYING request → EOS.
    pub wall_s: f64,
    /// Before the pipeline existed (GStreamer initialised).
    pub start_rss_kb: u64,
    pub start_heap_kb: u64,
    pub start_threads: usize,
    /// One second after the pipeline went to NULL and was dropped.
    pub null_rss_kb: u64,
    pub null_heap_kb: u64,
    pub null_threads: usize,
    /// ru_maxrss.
    pub peak_rss_kb: u64,
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `RssAnon`, …); 0 when unreadable.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// VmRSS of this process, KiB.
pub fn vm_rss_kb() -> u64 {
    status_kb("VmRSS")
}

/// The anonymous part of the resident set (heap, stacks), KiB: VmRSS without the pages of
/// mapped files (the libraries' code, which a decoder's first use maps in once).
pub fn rss_anon_kb() -> u64 {
    status_kb("RssAnon")
}

/// Bytes in use from malloc (every arena, and its mmapped blocks), KiB.
pub fn heap_in_use_kb() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let m = unsafe { libc::mallinfo2() };
    ((m.uordblks + m.hblkhd) / 1024) as u64
}

/// Threads of this process.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Bytes per sample of a raw audio format name.
fn sample_width(format: &str) -> u64 {
    match format {
        "S8" | "U8" => 1,
        f if f.starts_with("S16") || f.starts_with("U16") => 2,
        f if f.starts_with("S24_32") || f.starts_with("U24_32") => 4,
        f if f.starts_with("S24") || f.starts_with("U24") => 3,
        f if f.starts_with("F64") => 8,
        _ => 4,
    }
}

/// (format label, bytes per frame, rate) of raw audio caps.
fn raw_format(caps: &gst::CapsRef) -> Option<(String, u64, u64)> {
    let s = caps.structure(0)?;
    let format = s.get::<String>("format").ok()?;
    let rate = s.get::<i32>("rate").ok()?.max(1) as u64;
    let channels = s.get::<i32>("channels").ok()?.max(1) as u64;
    Some((
        format!("{format}/{rate}/{channels}"),
        sample_width(&format) * channels,
        rate,
    ))
}

#[derive(Default)]
struct Sink {
    current: Option<TrackRecord>,
    done: Vec<TrackRecord>,
    /// (bytes per frame, rate) and label of the caps in force.
    frame: Option<(u64, u64)>,
    format: Option<String>,
    /// The time segment in force at the sink.
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    eos_events: u32,
    anomalies: Vec<String>,
}

impl Sink {
    fn close(&mut self, t0: Instant) {
        if let Some(mut t) = self.current.take() {
            t.rss_kb = vm_rss_kb();
            t.heap_kb = heap_in_use_kb();
            t.rss_anon_kb = rss_anon_kb();
            t.threads = threads();
            t.rss_min_kb = t.rss_min_kb.min(t.rss_kb);
            t.rss_max_kb = t.rss_max_kb.max(t.rss_kb);
            t.ended_s = t0.elapsed().as_secs_f64();
            self.done.push(t);
        }
    }
}

/// The child's side: plays the plan and prints `RESULT <json>`.
pub fn child_main(spec_json: &str) -> Result<()> {
    let spec: SoakSpec = serde_json::from_str(spec_json).context("--spec JSON")?;
    gst::init()?;
    let mut out = SoakOutput {
        start_rss_kb: vm_rss_kb(),
        start_heap_kb: heap_in_use_kb(),
        start_threads: threads(),
        ..SoakOutput::default()
    };
    play(&spec, &mut out)?;
    // The pipeline is gone: what it started and did not stop is still here.
    std::thread::sleep(Duration::from_secs(1));
    out.null_rss_kb = vm_rss_kb();
    out.null_heap_kb = heap_in_use_kb();
    out.null_threads = threads();
    out.peak_rss_kb = crate::play::rusage_self().1;
    println!("RESULT {}", serde_json::to_string(&out)?);
    Ok(())
}

fn play(spec: &SoakSpec, out: &mut SoakOutput) -> Result<()> {
    let Some(first) = spec.plan.first() else {
        out.error = Some("an empty plan".into());
        return Ok(());
    };
    let uri = |i: &SoakItem| format!("amazonmusic://track/{}", i.id);
    let pb = gst::ElementFactory::make("playbin3")
        .property("uri", uri(first))
        .build()
        .context("playbin3")?;
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .build()
        .context("fakesink")?;
    pb.set_property("audio-sink", &sink);
    pb.set_property(
        "video-sink",
        gst::ElementFactory::make("fakesink")
            .build()
            .context("fakesink")?,
    );
    let plan = Arc::new(spec.plan.clone());
    let sources = Arc::new(Mutex::new(Vec::<String>::new()));
    let anomalies = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        // Each new source is the plan's next track: its quality and market.
        let (plan, sources, anomalies) = (plan.clone(), sources.clone(), anomalies.clone());
        pb.connect("source-setup", false, move |args| {
            let src = args[1].get::<gst::Element>().ok()?;
            src.find_property("track-id")?;
            let id = src
                .property::<Option<String>>("track-id")
                .unwrap_or_default();
            let mut seen = sources.lock().unwrap();
            let n = seen.len();
            match plan.get(n) {
                Some(item) if item.id == id => {
                    if let Some(q) = &item.quality {
                        src.set_property_from_str("quality", q);
                    }
                    if let Some(m) = &item.market {
                        src.set_property("market", m);
                    }
                }
                Some(item) => anomalies.lock().unwrap().push(format!(
                    "source {} is {id}, the plan says {}",
                    n + 1,
                    item.id
                )),
                None => anomalies
                    .lock()
                    .unwrap()
                    .push(format!("source {} ({id}) beyond the plan", n + 1)),
            }
            seen.push(id);
            None
        });
    }
    {
        let plan = plan.clone();
        let queued = AtomicUsize::new(1);
        pb.connect("about-to-finish", false, move |args| {
            let pb = args[0].get::<gst::Element>().ok()?;
            let n = queued.fetch_add(1, Ordering::SeqCst);
            if let Some(item) = plan.get(n) {
                pb.set_property("uri", uri(item));
            }
            None
        });
    }
    let t0 = Instant::now();
    let state = Arc::new(Mutex::new(Sink::default()));
    {
        let state = state.clone();
        let pad = sink
            .static_pad("sink")
            .context("fakesink has no sink pad")?;
        pad.add_probe(
            gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM,
            move |pad, info| {
                let mut s = state.lock().unwrap();
                match &info.data {
                    Some(gst::PadProbeData::Event(ev)) => match ev.view() {
                        gst::EventView::StreamStart(ss) => {
                            s.close(t0);
                            // A track in the same format as the last gets no caps event.
                            let rss = vm_rss_kb();
                            s.current = Some(TrackRecord {
                                stream_id: ss.stream_id().to_string(),
                                formats: s.format.iter().cloned().collect(),
                                rss_min_kb: rss,
                                rss_max_kb: rss,
                                ..TrackRecord::default()
                            });
                        }
                        gst::EventView::Caps(c) => {
                            let f = raw_format(c.caps());
                            s.frame = f.as_ref().map(|(_, bpf, rate)| (*bpf, *rate));
                            s.format = f.map(|(label, _, _)| label);
                            let label = s.format.clone();
                            if let (Some(label), Some(t)) = (label, s.current.as_mut()) {
                                if t.buffers == 0 {
                                    t.formats = vec![label];
                                } else if t.formats.last() != Some(&label) {
                                    t.formats.push(label);
                                }
                            }
                        }
                        gst::EventView::Segment(e) => {
                            s.segment = e.segment().downcast_ref::<gst::ClockTime>().cloned();
                        }
                        gst::EventView::Eos(_) => {
                            s.eos_events += 1;
                            s.close(t0);
                        }
                        _ => {}
                    },
                    Some(gst::PadProbeData::Buffer(b)) => {
                        let frame = s.frame;
                        let segment = s.segment.clone();
                        match s.current.as_mut() {
                            Some(t) => {
                                t.buffers += 1;
                                let dur = b.duration().map_or(0, |d| d.nseconds());
                                t.duration_ns += dur;
                                if let Some((bpf, rate)) = frame {
                                    let frames = b.size() as u64 / bpf.max(1);
                                    t.samples_ns += frames * 1_000_000_000 / rate;
                                }
                                let stream_time = b.pts().and_then(|p| match &segment {
                                    Some(seg) => seg.to_stream_time(p),
                                    None => Some(p),
                                });
                                if let Some(pts) = stream_time.map(|p| p.nseconds()) {
                                    t.first_pts_ns.get_or_insert(pts);
                                    t.end_pts_ns = Some(pts + dur);
                                }
                            }
                            None => {
                                let n = s.done.len();
                                s.anomalies.push(format!(
                                    "a buffer at {} outside any track (after track {n})",
                                    pad.name()
                                ));
                            }
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    }
    let bus = pb.bus().context("playbin3 without a bus")?;
    if let Err(e) = pb.set_state(gst::State::Playing) {
        out.error = Some(format!("cannot start: {e}"));
    }
    let timeout = Duration::from_secs_f64(spec.timeout_s);
    while out.error.is_none() {
        if t0.elapsed() > timeout {
            out.timed_out = true;
            break;
        }
        {
            let rss = vm_rss_kb();
            if let Some(t) = state.lock().unwrap().current.as_mut() {
                t.rss_min_kb = t.rss_min_kb.min(rss);
                t.rss_max_kb = t.rss_max_kb.max(rss);
            }
        }
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(20),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        ) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(e) => {
                out.error = Some(format!(
                    "{} from {} ({})",
                    e.error(),
                    msg.src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default(),
                    e.debug().map(|d| d.to_string()).unwrap_or_default()
                ));
            }
            gst::MessageView::Eos(_) => {
                out.eos = true;
                break;
            }
            _ => {}
        }
    }
    out.wall_s = t0.elapsed().as_secs_f64();
    let _ = pb.set_state(gst::State::Null);
    drop(bus);
    drop(pb);
    drop(sink);
    let mut s = state.lock().unwrap();
    // A track still open when the run stopped (an error or a timeout) is reported as it was.
    s.close(t0);
    out.tracks = std::mem::take(&mut s.done);
    out.eos_events = s.eos_events;
    out.anomalies = std::mem::take(&mut s.anomalies);
    out.anomalies.extend(anomalies.lock().unwrap().drain(..));
    out.sources = sources.lock().unwrap().clone();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_formats_give_their_frame_size() {
        gst::init().unwrap();
        let caps = |f: &str, ch: i32| {
            gst::Caps::builder("audio/x-raw")
                .field("format", f)
                .field("rate", 48_000i32)
                .field("channels", ch)
                .build()
        };
        assert_eq!(
            raw_format(&caps("S16LE", 2)),
            Some(("S16LE/48000/2".into(), 4, 48_000))
        );
        assert_eq!(raw_format(&caps("S24LE", 2)).unwrap().1, 6);
        assert_eq!(raw_format(&caps("S24_32LE", 2)).unwrap().1, 8);
        assert_eq!(raw_format(&caps("F32LE", 6)).unwrap().1, 24);
        assert_eq!(
            raw_format(&gst::Caps::new_empty_simple("audio/x-raw")),
            None
        );
    }

    #[test]
    fn this_process_has_a_resident_set_and_threads() {
        assert!(vm_rss_kb() > 0);
        assert!(rss_anon_kb() > 0 && rss_anon_kb() <= vm_rss_kb() + 1024);
        assert!(threads() >= 1);
    }
}
