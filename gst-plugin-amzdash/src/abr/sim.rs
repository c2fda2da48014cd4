//! A deterministic playback simulator for the selector: one track over a bandwidth/latency trace
//! (such as the emulator's five shaping scenarios), scored exactly as Amazon's vinyl ABR benchmark does.

use std::time::Duration;

use super::ladder::{Candidate, CodecFamily, Ladder};
pub use super::qoe::{score, Event, Sample, Score};
use super::selector::{
    AbrConfig, AbrStats, BufferLevel, Buffered, Download, FetchAdvice, InFlight, QualitySelector,
    Reason, SessionEstimate,
};

/// The link over one stretch of time (the emulator's `shaping::Phase`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    pub duration_s: f64,
    pub bandwidth_bps: f64,
    /// Round trip added to every request.
    pub latency_s: f64,
    /// Nothing is answered or sent until the phase ends.
    pub outage: bool,
}

/// A schedule of phases that repeats once it runs out.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkTrace {
    pub name: String,
    pub phases: Vec<Phase>,
}

/// vinyl's published scores for its audio track (results.json, seed 1), per scenario.
pub const VINYL_AUDIO_SCORES: [(&str, f64); 5] = [
    ("stable-high", 0.902),
    ("stable-low", 0.610),
    ("wifi-to-4g", 0.878),
    ("outage", 0.368),
    ("noisy-mobile", 0.719),
];

fn phase(duration_s: f64, bandwidth_bps: f64, latency_ms: f64) -> Phase {
    Phase {
        duration_s,
        bandwidth_bps,
        latency_s: latency_ms / 1000.0,
        outage: false,
    }
}

impl NetworkTrace {
    /// A trace from `(seconds, bit/s, latency ms, outage)` phases, the shape of the emulator's
    /// `shaping::Phase` (the emulator owns the scenarios; the simulator only replays them).
    pub fn from_phases(
        name: &str,
        phases: impl IntoIterator<Item = (f64, f64, f64, bool)>,
    ) -> NetworkTrace {
        NetworkTrace {
            name: name.to_string(),
            phases: phases
                .into_iter()
                .map(|(d, bw, lat, outage)| Phase {
                    outage,
                    ..phase(d, bw, lat)
                })
                .collect(),
        }
    }

    /// A trace from `(seconds, bit/s, latency ms)` steps; 0 bit/s is an outage.
    pub fn steps(name: &str, steps: &[(f64, f64, f64)]) -> NetworkTrace {
        NetworkTrace {
            name: name.to_string(),
            phases: steps
                .iter()
                .map(|&(d, bw, lat)| Phase {
                    outage: bw <= 0.0,
                    ..phase(d, bw, lat)
                })
                .collect(),
        }
    }

    fn total(&self) -> f64 {
        self.phases.iter().map(|p| p.duration_s).sum()
    }

    /// The phase at `t` and the seconds until it ends (a trace without time is a dead link).
    pub fn at(&self, t: f64) -> (Phase, f64) {
        let total = self.total();
        if !(total > 0.0 && total.is_finite()) {
            let dead = Phase {
                duration_s: f64::INFINITY,
                bandwidth_bps: 0.0,
                latency_s: 0.0,
                outage: true,
            };
            return (dead, f64::INFINITY);
        }
        let mut x = t.max(0.0) % total;
        for p in &self.phases {
            if x < p.duration_s {
                return (*p, p.duration_s - x);
            }
            x -= p.duration_s;
        }
        let last = *self.phases.last().expect("a trace has phases");
        (last, last.duration_s)
    }

    /// Seconds a request sent at `t` waits for its first byte: the round trip, after the end of
    /// an outage if one is under way (as the emulator answers).
    pub fn request_delay(&self, t: f64) -> f64 {
        let (mut now, mut wait) = (t, 0.0);
        for _ in 0..10_000 {
            let (p, left) = self.at(now);
            if !p.outage {
                return wait + p.latency_s;
            }
            wait += left + 1e-6;
            now += left + 1e-6;
        }
        wait
    }
}

/// A track to simulate: its candidates, segment timeline and the bytes fetched before media.
#[derive(Debug, Clone)]
pub struct SimTrack {
    pub candidates: Vec<Candidate>,
    pub durations: Vec<Duration>,
    /// Init segment size per candidate (same order as `candidates`).
    pub init_bytes: Vec<u64>,
    /// The manifest, fetched before anything else.
    pub manifest_bytes: u64,
}

/// One representation of the HD track: id, codec, `bandwidth`, `qualityRanking`, init size and
/// media segment sizes.
type RepSpec = (&'static str, CodecFamily, u64, u32, u64, &'static [u64]);

/// B0EMUHD001 ("Harbour Lights", 60 s, six 10 s segments per representation) as the emulator
/// packages it with cenc (content v4: Opus CBR, no tail segment), from `amzmusic-emulator export
/// B0EMUHD001` (SegmentList media ranges).
const HD_TRACK: [RepSpec; 4] = [
    (
        "opus-150k",
        CodecFamily::Opus,
        156_522,
        4,
        783,
        &[191_600, 191_600, 191_600, 195_653, 195_653, 196_044],
    ),
    (
        "opus-320k",
        CodecFamily::Opus,
        326_522,
        3,
        783,
        &[404_100, 404_100, 404_100, 408_153, 408_153, 408_969],
    ),
    (
        "flac-44k16",
        CodecFamily::Flac,
        794_390,
        2,
        845,
        &[988_826, 984_081, 992_988, 989_423, 986_651, 971_894],
    ),
    (
        "flac-48k24",
        CodecFamily::Flac,
        1_614_328,
        1,
        845,
        &[
            2_015_503, 2_009_503, 2_017_911, 2_013_189, 2_013_150, 1_996_125,
        ],
    ),
];

impl SimTrack {
    /// The emulator's HD track: Opus 150k/320k and FLAC 44.1/16 and 48/24, 60 s.
    pub fn hd() -> SimTrack {
        SimTrack::hd_repeated(1)
    }

    /// The HD track's ladder and sizes over `times` × 60 s, for long-run tests.
    pub fn hd_repeated(times: usize) -> SimTrack {
        let times = times.max(1);
        let mut candidates = Vec::new();
        let mut init_bytes = Vec::new();
        for (id, codec, bw, rank, init, sizes) in HD_TRACK {
            let bytes: Vec<u64> = (0..times).flat_map(|_| sizes.iter().copied()).collect();
            let durs = vec![Duration::from_secs(10); sizes.len() * times];
            candidates.push(Candidate {
                id: id.to_string(),
                codec,
                adaptation_set: if codec == CodecFamily::Flac { 1 } else { 0 },
                bandwidth_bps: bw,
                quality_ranking: Some(rank),
                segment_bytes: Some(bytes),
                segment_durations: Some(durs),
            });
            init_bytes.push(init);
        }
        SimTrack {
            candidates,
            durations: vec![Duration::from_secs(10); 6 * times],
            init_bytes,
            manifest_bytes: 6_270,
        }
    }
}

/// Simulation settings.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub config: AbrConfig,
    /// The estimate a previous session left (None: a cold start).
    pub previous: Option<SessionEstimate>,
    /// Time step, seconds.
    pub step_s: f64,
    /// Give up after this long.
    pub max_time_s: f64,
    /// Model an element that streams each segment into the demuxer as it arrives: playback
    /// may start (or resume) inside a downloading segment once `progressive_start_s` of it is
    /// in and the rest is expected before the playhead gets there. `false`: whole segments only,
    /// which is what vinyl (MSE appends) and the element as first built do.
    pub progressive: bool,
    pub progressive_start_s: f64,
    /// Once everything is fetched, fetch buffered segments again at a better quality
    /// ([`QualitySelector::upgrade`]) while the link would sit idle.
    pub upgrades: bool,
    /// Media held downstream ahead of the playhead: a segment can be swapped for its upgrade
    /// only until the playhead is this far from it (0: until it plays, as an MSE player can).
    pub downstream_s: f64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            config: AbrConfig::default(),
            previous: None,
            step_s: 0.005,
            max_time_s: 900.0,
            progressive: false,
            progressive_start_s: 0.2,
            upgrades: true,
            downstream_s: 0.0,
        }
    }
}

/// What happened in one simulated session.
#[derive(Debug, Clone)]
pub struct SimResult {
    pub score: Score,
    pub timeline: Vec<Sample>,
    /// Every decision: (time, segment, candidate index in the ladder, reason).
    pub decisions: Vec<(f64, usize, usize, Reason)>,
    /// The candidate each segment was finally downloaded from.
    pub segment_reps: Vec<usize>,
    pub stats: AbrStats,
    pub startup_s: f64,
    pub end_time: f64,
    pub ended: bool,
    pub ladder: Ladder,
}

struct Request {
    /// `None`: the manifest.
    media: Option<(usize, usize)>,
    sent: f64,
    first_byte: f64,
    total: u64,
    /// Init segment bytes fetched along (they come first).
    init: u64,
    received: f64,
    /// Fetching an already buffered segment again, better.
    upgrade: bool,
}

impl Request {
    /// Media bytes of the segment received so far.
    fn media_received(&self) -> f64 {
        (self.received - self.init as f64).max(0.0)
    }
}

/// Plays `track` over `trace` with a fresh [`QualitySelector`], the way the element drives it:
/// the manifest first, then the init and first media segment together, then one segment at a
/// time while [`QualitySelector::fetch_advice`] says so, an abandon check every 250 ms.
pub fn simulate(track: &SimTrack, trace: &NetworkTrace, opts: &SimOptions) -> SimResult {
    let ladder =
        Ladder::new(track.candidates.clone(), &track.durations).expect("a valid simulated track");
    let init_of = |rep: usize| {
        let id = &ladder.candidates()[rep].id;
        let i = track
            .candidates
            .iter()
            .position(|c| &c.id == id)
            .expect("same ids");
        track.init_bytes[i]
    };
    let bw_of = |rep: usize| ladder.candidates()[rep].bandwidth_bps;
    let top_bw = (0..ladder.len()).map(bw_of).max().unwrap_or(0);
    let mut abr =
        QualitySelector::new(ladder.clone(), opts.config.clone()).with_previous(opts.previous);
    let count = ladder.segment_count();
    let total_media: f64 = ladder.remaining_s(0);
    let starts: Vec<f64> = (0..count)
        .map(|k| total_media - ladder.remaining_s(k))
        .collect();
    let seg_at = |pos: f64| starts.iter().rposition(|s| *s <= pos + 1e-9).unwrap_or(0);

    let dt = opts.step_s;
    let mut t = 0.0;
    let mut req: Option<Request> = None;
    let mut manifest_done = false;
    let mut have_init = vec![false; ladder.len()];
    let mut seg_rep: Vec<Option<usize>> = vec![None; count];
    let mut next_seg = 0usize;
    let mut playhead = 0.0;
    let (mut playing, mut started, mut ended) = (false, false, false);
    let mut startup_s = 0.0;
    let mut timeline: Vec<Sample> = Vec::new();
    let mut decisions = Vec::new();
    let mut playing_bw: Option<u64> = None;
    let mut next_abandon_check = 0.0;
    let mut start_checked = false;

    let send = |t: f64, media: Option<(usize, usize)>, total: u64, init: u64| Request {
        media,
        sent: t,
        first_byte: t + trace.request_delay(t),
        total,
        init,
        received: 0.0,
        upgrade: false,
    };
    // A media request for segment `k` of `rep`, with its init segment the first time.
    let fetch = |t: f64, k: usize, rep: usize, have_init: &mut [bool]| {
        let init = if have_init[rep] { 0 } else { init_of(rep) };
        have_init[rep] = true;
        send(
            t,
            Some((k, rep)),
            ladder.segment_bytes(rep, k) as u64 + init,
            init,
        )
    };

    while !ended && t < opts.max_time_s {
        // Media time playable: whole segments, plus (progressive) what arrived of the next.
        let whole = seg_rep.iter().take_while(|r| r.is_some()).count();
        let whole_end = if whole == count {
            total_media
        } else {
            starts[whole]
        };
        let in_flight = req.as_ref().and_then(|r| {
            r.media
                .filter(|(k, _)| opts.progressive && *k == whole)
                .map(|(k, rep)| (k, rep, r.media_received()))
        });
        let front = match in_flight {
            Some((k, rep, got)) => {
                let media = ladder.segment_bytes(rep, k);
                whole_end + ladder.duration_s(k) * (got / media).min(1.0)
            }
            None => whole_end,
        };
        let level = |playing: bool, playhead: f64| {
            let from = seg_at(playhead);
            let bytes: f64 = (from..count)
                .filter_map(|k| seg_rep[k].map(|r| ladder.segment_bytes(r, k)))
                .sum();
            BufferLevel {
                ahead: Duration::from_secs_f64((front - playhead).max(0.0)),
                bytes: bytes as u64,
                playing,
            }
        };
        // Start the next request.
        if req.is_none() {
            if !manifest_done {
                req = Some(send(t, None, track.manifest_bytes, 0));
            } else if next_seg >= count && opts.upgrades {
                let buffer = level(playing, playhead);
                let buffered: Vec<Buffered> = (seg_at(playhead)..count)
                    .filter_map(|k| {
                        seg_rep[k].map(|rep| Buffered {
                            segment: k,
                            rep,
                            due_in: Duration::from_secs_f64(
                                (starts[k] - opts.downstream_s - playhead).max(0.0),
                            ),
                        })
                    })
                    .collect();
                if let Some((k, c)) = abr.upgrade(&buffered, &buffer) {
                    decisions.push((t, k, c.rep, c.reason));
                    let mut r = fetch(t, k, c.rep, &mut have_init);
                    r.upgrade = true;
                    req = Some(r);
                }
            } else if next_seg < count {
                let buffer = level(playing, playhead);
                if abr.fetch_advice(&buffer) == FetchAdvice::Fetch {
                    let c = abr.choose(next_seg, &buffer, Duration::from_secs_f64(t));
                    decisions.push((t, next_seg, c.rep, c.reason));
                    req = Some(fetch(t, next_seg, c.rep, &mut have_init));
                    next_abandon_check = t + 0.25;
                }
            }
        }
        // An upgrade that can no longer be swapped in is dropped (the element aborts it), with
        // the init segment it carried if that had not all come.
        if let Some(r) = req.as_ref().filter(|r| {
            r.upgrade
                && r.media
                    .is_some_and(|(k, _)| playhead >= starts[k] - opts.downstream_s)
        }) {
            if let Some((_, rep)) = r.media.filter(|_| r.init > 0 && r.received < r.init as f64) {
                have_init[rep] = false;
            }
            req = None;
        }
        // The element's start check (progressive only): before anything plays, once 100 ms of
        // the first segment's body came, the rate it comes at must keep it in real time.
        if opts.progressive && !started && !start_checked {
            if let Some(r) = req.as_ref().filter(|r| !r.upgrade) {
                if let Some((k, rep)) = r.media.filter(|_| t >= r.first_byte + 0.1) {
                    start_checked = true;
                    let f = InFlight {
                        rep,
                        segment: k,
                        bytes_total: r.total - r.init,
                        bytes_received: r.media_received() as u64,
                        elapsed: Duration::from_secs_f64(t - r.sent),
                        ttfb: Some(Duration::from_secs_f64(r.first_byte - r.sent)),
                    };
                    if let Some(c) = abr.check_start(&f, Duration::from_secs_f64(t)) {
                        decisions.push((t, k, c.rep, c.reason));
                        req = Some(fetch(t, k, c.rep, &mut have_init));
                    }
                }
            }
        }
        // Abandon check (not for a segment already playing progressively).
        if let Some((k, rep, sent, first_byte, total, received)) = req.as_ref().and_then(|r| {
            r.media
                .filter(|_| !r.upgrade)
                .map(|(k, rep)| (k, rep, r.sent, r.first_byte, r.total, r.received))
        }) {
            if t >= next_abandon_check && !(opts.progressive && playhead >= starts[k]) {
                next_abandon_check = t + 0.25;
                let f = InFlight {
                    rep,
                    segment: k,
                    bytes_total: total,
                    bytes_received: received as u64,
                    elapsed: Duration::from_secs_f64(t - sent),
                    ttfb: (t >= first_byte).then(|| Duration::from_secs_f64(first_byte - sent)),
                };
                let buffer = level(playing, playhead);
                if let Some(c) = abr.check_abandon(&f, &buffer, Duration::from_secs_f64(t)) {
                    decisions.push((t, k, c.rep, c.reason));
                    req = Some(fetch(t, k, c.rep, &mut have_init));
                }
            }
        }
        // Move bytes.
        let mut link_bps = 0.0;
        if let Some(r) = req.as_mut() {
            let from = t.max(r.first_byte);
            let (p, _) = trace.at(from);
            if from < t + dt && !p.outage && p.bandwidth_bps > 0.0 {
                link_bps = p.bandwidth_bps;
                let avail = p.bandwidth_bps / 8.0 * (t + dt - from);
                let need = r.total as f64 - r.received;
                if avail >= need {
                    let done_at = from + need / (p.bandwidth_bps / 8.0);
                    abr.on_download_at(
                        &Download {
                            bytes: r.total,
                            ttfb: Duration::from_secs_f64(r.first_byte - r.sent),
                            total: Duration::from_secs_f64(done_at - r.sent),
                        },
                        Duration::from_secs_f64(done_at),
                    );
                    match r.media {
                        None => manifest_done = true,
                        // An upgrade is swapped in only if its segment has not started.
                        Some((k, rep)) if r.upgrade => {
                            if playhead < starts[k] - opts.downstream_s {
                                seg_rep[k] = Some(rep);
                            }
                        }
                        Some((k, rep)) => {
                            seg_rep[k] = Some(rep);
                            next_seg = k + 1;
                        }
                    }
                    req = None;
                } else {
                    r.received += avail;
                }
            }
        }
        // Playback.
        let rep_at = |pos: f64| {
            let k = seg_at(pos);
            seg_rep[k].or_else(|| {
                req.as_ref()
                    .and_then(|r| r.media)
                    .filter(|(rk, _)| *rk == k)
                    .map(|(_, rep)| rep)
            })
        };
        if playing {
            playhead += dt;
            if playhead >= total_media - 1e-9 {
                playing = false;
                ended = true;
                timeline.push(Sample {
                    time: t + dt,
                    bandwidth: None,
                    event: Event::Ended,
                });
            } else if playhead >= front {
                playhead = front;
                playing = false;
                abr.on_stall();
                timeline.push(Sample {
                    time: t + dt,
                    bandwidth: None,
                    event: Event::Waiting,
                });
            } else {
                let bw = rep_at(playhead).map(bw_of);
                if bw.is_some() && bw != playing_bw {
                    playing_bw = bw;
                    timeline.push(Sample {
                        time: t + dt,
                        bandwidth: bw,
                        event: Event::QualityChange,
                    });
                }
            }
        } else if manifest_done {
            let ready = if front >= whole_end && whole_end > playhead + 1e-9 {
                true
            } else if let Some((k, rep, got)) = in_flight {
                // Inside the downloading segment: enough of it, and the rest in time.
                let media = ladder.segment_bytes(rep, k);
                let left_bits = (media - got).max(0.0) * 8.0;
                let until_end = whole_end + ladder.duration_s(k) - playhead;
                front - playhead >= opts.progressive_start_s
                    && link_bps > 0.0
                    && left_bits / link_bps <= 0.8 * until_end
            } else {
                false
            };
            if ready {
                playing = true;
                if !started {
                    started = true;
                    startup_s = t + dt;
                }
                playing_bw = rep_at(playhead).map(bw_of);
                timeline.push(Sample {
                    time: t + dt,
                    bandwidth: playing_bw,
                    event: Event::Playing,
                });
            }
        }
        t += dt;
    }
    let end_time = t;
    SimResult {
        score: score(&timeline, end_time, startup_s, top_bw),
        timeline,
        decisions,
        segment_reps: seg_rep.iter().map(|r| r.unwrap_or(0)).collect(),
        stats: abr.stats(),
        startup_s,
        end_time,
        ended,
        ladder,
    }
}

/// Runs the HD track (cold start) over each trace, e.g. the emulator's five scenarios
/// (`amzmusic_emulator::shaping::Schedule::scenario`, converted with `NetworkTrace::from_phases`).
pub fn run_traces(traces: &[NetworkTrace], opts: &SimOptions) -> Vec<(String, SimResult)> {
    let track = SimTrack::hd();
    traces
        .iter()
        .map(|trace| (trace.name.clone(), simulate(&track, trace, opts)))
        .collect()
}

#[cfg(test)]
mod tests;
