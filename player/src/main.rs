//! `amzmusic-play`: plays a track, an album or a playlist through `playbin3`, queueing the next
//! track on `about-to-finish` so albums play gapless, and shows what is playing.

use amzmusic_player::{clock, list_tracks, rate, track_uri, ApiAccess, Item, TrackClock};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use gst::prelude::*;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "amzmusic-play", version, about)]
struct Cli {
    /// What to play: amazonmusic://track/<id>, amazonmusic://album/<id>,
    /// amazonmusic://playlist/<id>, or any URI playbin3 plays. Several are queued in order.
    #[arg(required = true)]
    uris: Vec<String>,
    /// Where the audio goes: the sound card, a WAV file, or the sound card when there is one.
    #[arg(long, value_enum, default_value = "auto")]
    output: Output,
    /// The WAV file written when there is no sound card (or with --output wav).
    #[arg(long, default_value = "amzmusic-play.wav")]
    wav: PathBuf,
    /// Decode as fast as possible instead of in real time (WAV output only).
    #[arg(long)]
    fast: bool,
    /// Quality asked of amazonmusicsrc (auto, sd, hd, uhd, atmos, 360ra).
    #[arg(long)]
    quality: Option<String>,
    /// Give up after this many seconds (0: never).
    #[arg(long, default_value_t = 0)]
    timeout: u64,
    /// Play at the loudness the service measured, not normalized (by default `rgvolume`
    /// applies the ReplayGain track gain that amzdashdemux reads from the manifest's
    /// ProgramLoudness, to ReplayGain's -18 LUFS).
    #[arg(long)]
    no_normalize: bool,
    /// Loudness to normalize to, in LUFS (rgvolume's pre-amp over ReplayGain's -18 LUFS).
    #[arg(long, default_value_t = -18.0, allow_negative_numbers = true)]
    target_lufs: f64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Auto,
    Sound,
    Wav,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("amzmusic-play: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The URIs to play in order: albums and playlists expanded through the music API.
fn expand(uris: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut access = None;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for u in uris {
        let (kind, id) = match Item::parse(u)? {
            Item::Track(id) => {
                out.push(track_uri(&id));
                continue;
            }
            Item::Other(u) => {
                out.push(u);
                continue;
            }
            Item::Album(id) => ("album", id),
            Item::Playlist(id) => ("playlist", id),
        };
        if access.is_none() {
            access = Some(ApiAccess::from_env()?);
        }
        let ids = rt.block_on(list_tracks(access.as_ref().unwrap(), kind, &id))?;
        out.extend(ids.iter().map(|i| track_uri(i)));
    }
    Ok(out)
}

/// A playback device PulseAudio/PipeWire or ALSA can open.
fn has_sound_card() -> bool {
    if std::env::var_os("PULSE_SERVER").is_some() {
        return true;
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
        if PathBuf::from(dir).join("pulse/native").exists() {
            return true;
        }
    }
    std::fs::read_dir("/dev/snd")
        .map(|d| {
            d.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().to_string();
                n.starts_with("pcmC") && n.ends_with('p')
            })
        })
        .unwrap_or(false)
}

fn make(factory: &str) -> Result<gst::Element> {
    gst::ElementFactory::make(factory).build().with_context(|| {
        format!("GStreamer element {factory} is missing (scripts/setup.sh installs the plugins)")
    })
}

/// One WAV file for the whole queue: a fixed output format, since a WAV header cannot change
/// rate or width mid-file while the tracks (and the ABR) may.
fn wav_sink(path: &std::path::Path, realtime: bool) -> Result<gst::Element> {
    let bin = gst::Bin::with_name("wav-output");
    let convert = make("audioconvert")?;
    let resample = make("audioresample")?;
    let caps = gst::ElementFactory::make("capsfilter")
        .property(
            "caps",
            gst::Caps::builder("audio/x-raw")
                .field("format", "S24LE")
                .field("rate", 48_000i32)
                .field("channels", 2i32)
                .build(),
        )
        .build()?;
    let wavenc = make("wavenc")?;
    let file = gst::ElementFactory::make("filesink")
        .property("location", path.to_string_lossy().to_string())
        .property("sync", realtime)
        .build()?;
    bin.add_many([&convert, &resample, &caps, &wavenc, &file])?;
    gst::Element::link_many([&convert, &resample, &caps, &wavenc, &file])?;
    let pad = convert
        .static_pad("sink")
        .expect("audioconvert has a sink pad");
    bin.add_pad(&gst::GhostPad::with_target(&pad)?)?;
    Ok(bin.upcast())
}

/// The demuxer's `stats`, when an amzdashdemux is playing, as a short human line.
fn demux_status(pipeline: &gst::Bin) -> Option<(String, Option<String>)> {
    let demux = pipeline
        .iterate_all_by_element_factory_name("amzdashdemux")
        .into_iter()
        .flatten()
        .next()?;
    demux.find_property("stats")?;
    let s = demux.property::<gst::Structure>("stats");
    let text = |k: &str| -> Option<String> {
        s.value(k).ok().and_then(|v| {
            v.get::<String>()
                .ok()
                .or_else(|| v.get::<u64>().ok().map(|n| n.to_string()))
                .or_else(|| v.get::<u32>().ok().map(|n| n.to_string()))
                .or_else(|| v.get::<i64>().ok().map(|n| n.to_string()))
                .or_else(|| v.get::<f64>().ok().map(|n| format!("{n:.1}")))
        })
    };
    let num = |k: &str| -> Option<u64> {
        s.value(k).ok().and_then(|v| {
            v.get::<u64>()
                .ok()
                .or_else(|| v.get::<u32>().ok().map(u64::from))
                .or_else(|| v.get::<f64>().ok().map(|f| f as u64))
        })
    };
    // Field names as amzdashdemux documents its `stats` (gst-plugin-amzdash/README.md).
    let rep = text("representation").filter(|r| !r.is_empty());
    let mut parts = Vec::new();
    for k in ["representation", "codec", "quality"] {
        if let Some(v) = text(k).filter(|v| !v.is_empty()) {
            parts.push(v);
        }
    }
    if let Some(b) = num("bandwidth").filter(|b| *b > 0) {
        parts.push(rate(b));
    }
    if let Some(t) = num("throughput-estimate").filter(|t| *t > 0) {
        parts.push(format!("net {}", rate(t)));
    }
    if let Some(b) = num("buffer-level-time") {
        parts.push(format!("buffer {:.1} s", b as f64 / 1e9));
    }
    if let Some(n) = num("switches").filter(|n| *n > 0) {
        parts.push(format!("{n} switches"));
    }
    Some((parts.join(" | "), rep))
}

/// An event line, written over the status line (which the next tick redraws).
fn say(line: &str) {
    println!("\r\x1b[K{line}");
}

fn show_title(shown: &mut String, new: Option<String>) {
    if let Some(t) = new.filter(|t| t != shown) {
        say(&format!("  title:  {t}"));
        *shown = t;
    }
}

fn show_artist(shown: &mut String, new: Option<String>) {
    if let Some(a) = new.filter(|a| a != shown) {
        say(&format!("  artist: {a}"));
        *shown = a;
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    gst::init()?;
    let queue = expand(&cli.uris)?;
    let total = queue.len();
    let mut queue: VecDeque<String> = queue.into();
    let first = queue.pop_front().expect("at least one URI");
    let queue = Arc::new(Mutex::new(queue));

    let playbin = make("playbin3")?;
    let use_wav = match cli.output {
        Output::Wav => true,
        Output::Sound => false,
        Output::Auto => !has_sound_card(),
    };
    if use_wav {
        playbin.set_property("audio-sink", wav_sink(&cli.wav, !cli.fast)?);
        println!(
            "No sound card: writing the audio to {}",
            std::fs::canonicalize(
                cli.wav
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(std::path::Path::new("."))
            )
            .unwrap_or_default()
            .join(cli.wav.file_name().unwrap_or_default())
            .display()
        );
    } else {
        playbin.set_property("audio-sink", make("autoaudiosink")?);
    }
    playbin.set_property("video-sink", make("fakesink")?);
    let mut rgvolume: Option<gst::Element> = None;
    if !cli.no_normalize {
        // rgvolume works on float samples; playbin3 converts after the filter for the sink.
        // The manifest gives no peak, so rgvolume would refuse any gain above 0 dB: headroom
        // lets a quiet track come up, and rglimiter keeps what would clip below full scale.
        let filter = gst::parse::bin_from_description(
            &format!(
                "audioconvert ! rgvolume name=rg pre-amp={:.2} headroom=10 ! rglimiter",
                cli.target_lufs + 18.0
            ),
            true,
        )
        .context("rgvolume (gst-plugins-good) for loudness normalization (--no-normalize)")?;
        rgvolume = filter.by_name("rg");
        playbin.set_property("audio-filter", &filter);
    }
    // The sources playbin3 creates, in queue order. A source posts its track's title and artist
    // when it starts, which for the next track (prefetched) is while the current one plays.
    let sources: Arc<Mutex<Vec<gst::glib::WeakRef<gst::Element>>>> = Arc::default();
    {
        let sources = sources.clone();
        let quality = cli.quality.clone();
        playbin.connect("source-setup", false, move |args| {
            let src = args[1]
                .get::<gst::Element>()
                .expect("source-setup gives the source");
            if let Some(q) = &quality {
                if src.find_property("quality").is_some() {
                    src.set_property_from_str("quality", q);
                }
            }
            sources.lock().unwrap().push(src.downgrade());
            None
        });
    }
    {
        let queue = queue.clone();
        playbin.connect("about-to-finish", false, move |args| {
            let pb = args[0].get::<gst::Element>().expect("playbin3");
            if let Some(next) = queue.lock().unwrap().pop_front() {
                pb.set_property("uri", next);
            }
            None
        });
    }
    playbin.set_property("uri", &first);

    let pipeline = playbin
        .clone()
        .downcast::<gst::Bin>()
        .map_err(|_| anyhow!("playbin3 is not a bin"))?;
    let bus = playbin.bus().expect("a pipeline has a bus");
    playbin
        .set_state(gst::State::Playing)
        .context("starting playback")?;

    let started = Instant::now();
    let mut track_no = 0usize;
    let mut title = String::new();
    let mut artist = String::new();
    // (title, artist) each source posted, by queue position, until its track plays.
    let mut track_tags: Vec<(Option<String>, Option<String>)> = vec![(None, None); total];
    let mut times = TrackClock::default();
    let mut codec = String::new();
    let mut gain: Option<f64> = None;
    let mut last_rep: Option<String> = None;
    let mut last_status = Instant::now() - Duration::from_secs(1);
    let mut buffering = 100;
    let result = loop {
        if cli.timeout > 0 && started.elapsed() > Duration::from_secs(cli.timeout) {
            break Err(anyhow!("gave up after {} s", cli.timeout));
        }
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(200)) {
            use gst::MessageView;
            match msg.view() {
                MessageView::Eos(_) => break Ok(()),
                MessageView::Error(e) => {
                    let from = msg
                        .src()
                        .map(|s| s.path_string().to_string())
                        .unwrap_or_default();
                    let debug = e.debug().map(|d| format!("\n  ({d})")).unwrap_or_default();
                    break Err(anyhow!("{} [{from}]{debug}", e.error()));
                }
                MessageView::StreamStart(_) => {
                    track_no += 1;
                    times.next_track();
                    title.clear();
                    artist.clear();
                    say(&format!("▶ track {track_no}/{total}"));
                    if let Some((t, a)) = track_tags.get(track_no - 1).cloned() {
                        show_title(&mut title, t);
                        show_artist(&mut artist, a);
                    }
                }
                MessageView::Tag(t) => {
                    let tags = t.tags();
                    let t_title = tags.get::<gst::tags::Title>().map(|v| v.get().to_string());
                    let t_artist = tags.get::<gst::tags::Artist>().map(|v| v.get().to_string());
                    let from = msg.src().map(|s| s.as_ptr());
                    let source_no = sources.lock().unwrap().iter().position(|w| {
                        w.upgrade()
                            .is_some_and(|e| Some(e.upcast_ref::<gst::Object>().as_ptr()) == from)
                    });
                    match source_no {
                        // A track still queued: shown when it starts.
                        Some(n) if n + 1 > track_no => {
                            if let Some(slot) = track_tags.get_mut(n) {
                                slot.0 = t_title.or(slot.0.take());
                                slot.1 = t_artist.or(slot.1.take());
                            }
                        }
                        _ => {
                            show_title(&mut title, t_title);
                            show_artist(&mut artist, t_artist);
                        }
                    }
                    if let Some(v) = tags.get::<gst::tags::TrackGain>() {
                        if gain != Some(v.get()) {
                            gain = Some(v.get());
                            say(&format!(
                                "  loudness: ReplayGain track gain {:+.2} dB{}",
                                v.get(),
                                if cli.no_normalize {
                                    " (not applied)"
                                } else {
                                    " (rgvolume)"
                                }
                            ));
                        }
                    }
                    if let Some(v) = tags.get::<gst::tags::AudioCodec>() {
                        if codec != v.get() {
                            codec = v.get().to_string();
                            say(&format!("  codec:  {codec}"));
                        }
                    }
                }
                MessageView::Buffering(b) => {
                    // Say when the buffer runs dry and when it is full again, not every step.
                    let p = b.percent();
                    if p < 100 && buffering == 100 {
                        say(&format!("  buffering ({p} %)"));
                    } else if p == 100 && buffering < 100 {
                        say("  buffered");
                    }
                    buffering = p;
                }
                _ => {}
            }
        }
        if last_status.elapsed() >= Duration::from_secs(1) {
            last_status = Instant::now();
            // rgvolume takes the ReplayGain tags out of the stream: its result says the gain.
            if let Some(rg) = &rgvolume {
                let g = rg.property::<f64>("result-gain");
                // 0 dB before the first tags is no news.
                if gain != Some(g) && (gain.is_some() || g != 0.0) {
                    gain = Some(g);
                    say(&format!("  loudness: {g:+.2} dB (ReplayGain, rgvolume)"));
                }
            }
            let (pos, dur) = times.track_times(
                playbin
                    .query_position::<gst::ClockTime>()
                    .map(|t| t.nseconds()),
                playbin
                    .query_duration::<gst::ClockTime>()
                    .map(|t| t.nseconds()),
            );
            let (demux, rep) = demux_status(&pipeline).unwrap_or_default();
            if rep.is_some() && last_rep.is_some() && rep != last_rep {
                say(&format!(
                    "  switch: {} -> {}",
                    last_rep.as_deref().unwrap_or("?"),
                    rep.as_deref().unwrap_or("?")
                ));
            }
            if rep.is_some() {
                last_rep = rep;
            }
            print!("\r\x1b[K  [{} / {}] {demux}", clock(pos), clock(dur));
            let _ = std::io::stdout().flush();
        }
    };
    println!();
    playbin.set_state(gst::State::Null)?;
    if result.is_ok() && track_no == 0 {
        bail!("the pipeline ended without playing anything");
    }
    result
}
