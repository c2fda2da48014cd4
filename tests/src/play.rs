// SPDX-License-Identifier: MPL-2.0
//! Pipelines that end in an appsink: parsing a launch line, playing it to EOS or an error,
//! and what came out (bytes, caps, timestamps).

use anyhow::{anyhow, bail, Context, Result};
use gst::prelude::*;
use std::time::{Duration, Instant};

use crate::init_gst;

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
    let (pipeline, sink) = launch(desc)?;
    sink.set_property("sync", false);
    let p = play_to_end(pipeline.upcast_ref(), &sink, timeout, |_| {});
    let stamped = || p.timestamps.iter().filter(|(pts, _)| *pts != u64::MAX);
    Ok(Decoded {
        caps: p.caps.last().map(|(c, _)| c.clone()),
        first_pts: stamped()
            .next()
            .map(|(pts, _)| gst::ClockTime::from_nseconds(*pts)),
        end: stamped()
            .rfind(|(_, d)| *d > 0)
            .map(|(pts, d)| gst::ClockTime::from_nseconds(pts + d)),
        buffers: p.timestamps.len(),
        bytes: p.bytes,
        error: p.error,
        eos: p.eos,
    })
}

/// What came out of an appsink, buffer by buffer.
#[derive(Debug, Default)]
pub struct Played {
    pub bytes: Vec<u8>,
    /// Every caps seen, in order, with the bytes that came out under it.
    pub caps: Vec<(gst::Caps, u64)>,
    /// (PTS, duration) of every buffer, in nanoseconds.
    pub timestamps: Vec<(u64, u64)>,
    /// (running time, duration) of every buffer, in nanoseconds: where the sink plays it. It
    /// differs from the PTS where a segment does not start at zero (a codec with priming: its
    /// PTS are media time) and after a seek.
    pub running: Vec<(u64, u64)>,
    pub error: Option<String>,
    /// The error message's GError (its domain and code), with its source element's name.
    pub gerror: Option<(gst::glib::Error, String)>,
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
            let duration = b.duration().map(|t| t.nseconds()).unwrap_or(0);
            p.timestamps
                .push((b.pts().map(|t| t.nseconds()).unwrap_or(u64::MAX), duration));
            let running = b.pts().and_then(|pts| {
                s.segment()?
                    .downcast_ref::<gst::ClockTime>()?
                    .to_running_time(pts)
            });
            p.running
                .push((running.map(|t| t.nseconds()).unwrap_or(u64::MAX), duration));
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
                    p.gerror = Some((
                        e.error(),
                        msg.src().map(|s| s.name().to_string()).unwrap_or_default(),
                    ));
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

/// Parses a launch line whose audio ends in `appsink name=sink`: the pipeline and its sink.
pub fn launch(desc: &str) -> Result<(gst::Pipeline, gst_app::AppSink)> {
    init_gst();
    let pipeline = gst::parse::launch(desc)
        .with_context(|| format!("parsing {desc}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("{desc}: not a pipeline"))?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| anyhow!("{desc}: no appsink named sink"))?;
    Ok((pipeline, sink))
}

/// [`launch`], with the sink set to hold one buffer at a time, unclocked (for tests that
/// watch the bus themselves).
pub fn launch_holding(desc: &str) -> Result<(gst::Element, gst_app::AppSink)> {
    let (pipeline, sink) = launch(desc)?;
    sink.set_sync(false);
    sink.set_max_buffers(1);
    sink.set_drop(false);
    Ok((pipeline.upcast(), sink))
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

/// Sets `max-bitrate` on every amzdashdemux that `bin` (playbin3, uridecodebin3) creates
/// (element-setup): pins its representation, say, so the output matches the source samples.
pub fn pin_max_bitrate(bin: &gst::Element, max_bitrate: u64) {
    bin.connect("element-setup", false, move |args| {
        let e = args[1]
            .get::<gst::Element>()
            .expect("element-setup gives the element");
        if e.factory().is_some_and(|f| f.name() == "amzdashdemux") {
            e.set_property("max-bitrate", max_bitrate);
        }
        None
    });
}

/// Pins every amzdashdemux that `bin` (playbin3, uridecodebin3) creates (element-setup) to
/// representation `rep`: no adaptive choice, so the output is that representation's samples.
pub fn pin_representation(bin: &gst::Element, rep: &str) {
    let rep = rep.to_string();
    bin.connect("element-setup", false, move |args| {
        let e = args[1]
            .get::<gst::Element>()
            .expect("element-setup gives the element");
        if e.factory().is_some_and(|f| f.name() == "amzdashdemux") {
            e.set_property("representation", &rep);
        }
        None
    });
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
