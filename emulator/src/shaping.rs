//! Network shaping: a link whose bandwidth, latency and outages follow a named, seeded scenario
//! (those of Amazon's vinyl ABR benchmark) or a trace, applied to every service response.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The link's state over one stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Seconds this phase lasts.
    pub duration: f64,
    /// Bits per second; ignored while `outage`.
    pub bandwidth_bps: f64,
    /// Round-trip time added to each request, ms.
    pub latency_ms: f64,
    /// Online but unresponsive: nothing is answered or sent until the phase ends.
    #[serde(default)]
    pub outage: bool,
}

/// A schedule of phases that repeats once it runs out, as vinyl's benchmark does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub name: String,
    pub phases: Vec<Phase>,
}

pub const SCENARIOS: [&str; 5] = [
    "stable-high",
    "stable-low",
    "wifi-to-4g",
    "outage",
    "noisy-mobile",
];

/// mulberry32, the seeded generator vinyl's benchmark uses, so a seed means the same thing.
struct Mulberry32(u32);

impl Mulberry32 {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x6d2b_79f5);
        let s = self.0;
        let mut t = (s ^ (s >> 15)).wrapping_mul(1 | s);
        t = (t.wrapping_add((t ^ (t >> 7)).wrapping_mul(61 | t))) ^ t;
        ((t ^ (t >> 14)) as f64) / 4_294_967_296.0
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + self.next() * (hi - lo)
    }
}

fn phase(duration: f64, bandwidth_bps: f64, latency_ms: f64) -> Phase {
    Phase {
        duration,
        bandwidth_bps,
        latency_ms,
        outage: false,
    }
}

/// vinyl's harness sets the network condition once, then polls once a second and applies a
/// new one only at a poll: a phase boundary takes effect at the next whole second.
pub const VINYL_POLL_S: f64 = 1.0;
/// How many polls of a random scenario are drawn (vinyl's longest run is 180 s); the schedule
/// repeats after them.
const DRAWN_POLLS: u32 = 600;

/// A drawn phase of vinyl's continuous schedule: (duration, bandwidth b/s, latency ms, outage).
type Drawn = (f64, f64, f64, bool);

/// What vinyl applies at each poll of a phase schedule that repeats (its `phaseAt`), merged
/// into phases of whole polls.
fn polled(drawn: &[Drawn]) -> Vec<Phase> {
    let total: f64 = drawn.iter().map(|d| d.0).sum();
    let at = |t: f64| -> Drawn {
        let mut x = t % total;
        for d in drawn {
            if x < d.0 {
                return *d;
            }
            x -= d.0;
        }
        *drawn.last().expect("non-empty")
    };
    merge((0..DRAWN_POLLS).map(|k| {
        let (_, bw, lat, outage) = at(k as f64 * VINYL_POLL_S);
        Phase {
            duration: VINYL_POLL_S,
            bandwidth_bps: bw,
            latency_ms: lat,
            outage,
        }
    }))
}

/// Consecutive equal conditions as one phase (vinyl applies only a change).
fn merge(polls: impl Iterator<Item = Phase>) -> Vec<Phase> {
    let mut out: Vec<Phase> = Vec::new();
    for p in polls {
        match out.last_mut() {
            Some(l)
                if l.bandwidth_bps == p.bandwidth_bps
                    && l.latency_ms == p.latency_ms
                    && l.outage == p.outage =>
            {
                l.duration += p.duration
            }
            _ => out.push(p),
        }
    }
    out
}

impl Schedule {
    /// A named scenario, reproducible for a seed, as vinyl's harness applies it: its generator
    /// and draw order, and each condition from the poll after it is due.
    pub fn scenario(name: &str, seed: u32) -> Option<Schedule> {
        let mut rng = Mulberry32(seed);
        let phases = match name {
            "stable-high" => vec![phase(3600.0, 10e6, 20.0)],
            "stable-low" => vec![phase(3600.0, 500e3, 80.0)],
            "wifi-to-4g" => {
                let mut d: Vec<Drawn> = Vec::new();
                for _ in 0..3 {
                    let dur = rng.range(8.0, 22.0);
                    let bw = rng.range(5e6, 12e6);
                    let lat = rng.range(10.0, 35.0);
                    d.push((dur, bw, lat, false));
                    let dur = rng.range(8.0, 22.0);
                    let bw = rng.range(250e3, 600e3);
                    let lat = rng.range(100.0, 250.0);
                    d.push((dur, bw, lat, false));
                }
                polled(&d)
            }
            "outage" => {
                let mut d: Vec<Drawn> = Vec::new();
                for _ in 0..4 {
                    d.push((rng.range(6.0, 10.0), 1e6, 30.0, false));
                    d.push((rng.range(20.0, 40.0), 1e6, 30.0, true));
                }
                polled(&d)
            }
            "noisy-mobile" => {
                // Drawn at each poll, in vinyl's order: the noise (500 kb/s, lognormal-ish
                // ±50 %, 80 kb/s floor), the latency (50–200 ms), then the rare 400 ms spike;
                // nothing is drawn during the 3 s dropout every 150 s.
                merge((0..DRAWN_POLLS).map(|k| {
                    if (k / 3) % 50 == 7 {
                        return Phase {
                            outage: true,
                            ..phase(VINYL_POLL_S, 0.0, 0.0)
                        };
                    }
                    let noise = (rng.next() - 0.5) * 2.0;
                    let bw = (500e3 * (noise * 0.5).exp()).max(80e3);
                    let lat = 50.0 + rng.next() * 150.0;
                    let spike = if rng.next() < 0.05 { 400.0 } else { 0.0 };
                    phase(VINYL_POLL_S, bw, lat + spike)
                }))
            }
            _ => return None,
        };
        Some(Schedule {
            name: name.to_string(),
            phases,
        })
    }

    /// A trace: one phase per non-empty line, `seconds bandwidth_kbps latency_ms [outage]`,
    /// or a JSON array of phases.
    pub fn from_trace(name: &str, text: &str) -> Result<Schedule, String> {
        let phases: Vec<Phase> = if text.trim_start().starts_with('[') {
            serde_json::from_str(text).map_err(|e| format!("trace JSON: {e}"))?
        } else {
            let mut v = Vec::new();
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let f: Vec<&str> = line.split_whitespace().collect();
                let num = |i: usize| -> Result<f64, String> {
                    f.get(i)
                        .ok_or_else(|| format!("trace line {}: too few fields", n + 1))?
                        .parse::<f64>()
                        .map_err(|e| format!("trace line {}: {e}", n + 1))
                };
                v.push(Phase {
                    duration: num(0)?,
                    bandwidth_bps: num(1)? * 1000.0,
                    latency_ms: num(2)?,
                    outage: f.get(3).is_some_and(|s| *s == "outage"),
                });
            }
            v
        };
        if phases.is_empty() || phases.iter().any(|p| p.duration <= 0.0) {
            return Err("a trace needs at least one phase, each with a positive duration".into());
        }
        Ok(Schedule {
            name: name.to_string(),
            phases,
        })
    }

    fn total(&self) -> f64 {
        self.phases.iter().map(|p| p.duration).sum()
    }

    /// The phase at `t` seconds, and the seconds until it ends.
    pub fn at(&self, t: f64) -> (Phase, f64) {
        let total = self.total();
        let mut x = t.max(0.0) % total;
        for p in &self.phases {
            if x < p.duration {
                return (*p, p.duration - x);
            }
            x -= p.duration;
        }
        let last = *self.phases.last().expect("non-empty");
        (last, last.duration)
    }
}

struct LinkState {
    schedule: Option<Schedule>,
    started: Instant,
    /// When the link is next free to send.
    next_free: Instant,
    bytes: u64,
}

/// The shared link every connection's writes go through.
pub struct Shaper {
    state: Mutex<LinkState>,
}

#[derive(Debug, Serialize)]
pub struct ShaperStatus {
    pub scenario: Option<String>,
    pub elapsed_s: f64,
    pub bandwidth_bps: Option<f64>,
    pub latency_ms: Option<f64>,
    pub outage: bool,
    pub bytes_sent: u64,
}

pub enum Grant {
    Now(usize),
    Wait(Instant, usize),
}

impl Default for Shaper {
    fn default() -> Self {
        let now = Instant::now();
        Shaper {
            state: Mutex::new(LinkState {
                schedule: None,
                started: now,
                next_free: now,
                bytes: 0,
            }),
        }
    }
}

impl Shaper {
    /// Installs a schedule (None lifts shaping); its clock starts now.
    pub fn set(&self, schedule: Option<Schedule>) {
        let mut s = self.state.lock().unwrap();
        let now = Instant::now();
        s.schedule = schedule;
        s.started = now;
        s.next_free = now;
        s.bytes = 0;
    }

    pub fn status(&self) -> ShaperStatus {
        let s = self.state.lock().unwrap();
        let elapsed = s.started.elapsed().as_secs_f64();
        let cur = s.schedule.as_ref().map(|sch| sch.at(elapsed).0);
        ShaperStatus {
            scenario: s.schedule.as_ref().map(|x| x.name.clone()),
            elapsed_s: elapsed,
            bandwidth_bps: cur.map(|p| p.bandwidth_bps),
            latency_ms: cur.map(|p| p.latency_ms),
            outage: cur.is_some_and(|p| p.outage),
            bytes_sent: s.bytes,
        }
    }

    /// How long a request waits before it is answered: the round trip, or until an outage ends
    /// (then the round trip).
    pub fn request_delay(&self) -> Duration {
        let s = self.state.lock().unwrap();
        let Some(sch) = &s.schedule else {
            return Duration::ZERO;
        };
        let mut t = s.started.elapsed().as_secs_f64();
        let mut wait = 0.0;
        for _ in 0..10_000 {
            let (p, left) = sch.at(t);
            if !p.outage {
                return Duration::from_secs_f64(wait + p.latency_ms / 1000.0);
            }
            wait += left + 1e-6;
            t += left + 1e-6;
        }
        Duration::from_secs_f64(wait)
    }

    /// Permission to write up to `want` bytes now or at an instant.
    pub fn grant(&self, want: usize) -> Grant {
        let mut s = self.state.lock().unwrap();
        let Some(sch) = s.schedule.clone() else {
            s.bytes += want as u64;
            return Grant::Now(want);
        };
        let now = Instant::now();
        let start = s.next_free.max(now);
        let t = start.duration_since(s.started).as_secs_f64();
        let (p, left) = sch.at(t);
        if p.outage || p.bandwidth_bps <= 0.0 {
            let until = start + Duration::from_secs_f64(left + 1e-4);
            s.next_free = until;
            return Grant::Wait(until, 0);
        }
        // Small chunks (≈20 ms of the link) keep pacing smooth at low rates.
        let chunk = ((p.bandwidth_bps / 8.0 * 0.02) as usize).clamp(512, 64 * 1024);
        let n = want.min(chunk);
        let tx = Duration::from_secs_f64(n as f64 * 8.0 / p.bandwidth_bps);
        s.next_free = start + tx;
        s.bytes += n as u64;
        if s.next_free > now + Duration::from_millis(2) {
            Grant::Wait(s.next_free, n)
        } else {
            Grant::Now(n)
        }
    }
}

/// A response body paced by the shared link: each chunk goes out only as fast as the link's
/// current bandwidth allows, and not at all during an outage.
pub fn paced_body(body: axum::body::Body, shaper: Arc<Shaper>) -> axum::body::Body {
    use futures::StreamExt;
    let stream = futures::stream::unfold(
        (body.into_data_stream(), bytes::Bytes::new(), shaper),
        |(mut inner, mut pending, shaper)| async move {
            if pending.is_empty() {
                match inner.next().await? {
                    Ok(b) => pending = b,
                    Err(e) => {
                        return Some((Err(std::io::Error::other(e)), (inner, pending, shaper)))
                    }
                }
                if pending.is_empty() {
                    return Some((Ok(pending.clone()), (inner, pending, shaper)));
                }
            }
            loop {
                match shaper.grant(pending.len()) {
                    Grant::Now(n) => {
                        let out = pending.split_to(n);
                        return Some((Ok(out), (inner, pending, shaper)));
                    }
                    Grant::Wait(until, n) => {
                        tokio::time::sleep_until(until).await;
                        if n > 0 {
                            let out = pending.split_to(n);
                            return Some((Ok(out), (inner, pending, shaper)));
                        }
                    }
                }
            }
        },
    );
    axum::body::Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_seeded_and_reproducible() {
        for name in SCENARIOS {
            let a = Schedule::scenario(name, 42).unwrap();
            let b = Schedule::scenario(name, 42).unwrap();
            assert_eq!(a, b, "{name}");
        }
        assert_ne!(
            Schedule::scenario("wifi-to-4g", 1),
            Schedule::scenario("wifi-to-4g", 2)
        );
        assert!(Schedule::scenario("moon-link", 1).is_none());
    }

    #[test]
    fn scenario_shapes_match_their_definitions() {
        let w = Schedule::scenario("wifi-to-4g", 7).unwrap();
        for (i, p) in w.phases.iter().take(6).enumerate() {
            // Whole polls: a phase of 8–22 s lasts 8–22 polls (its start and end each move to
            // the next poll).
            assert_eq!(p.duration.fract(), 0.0);
            assert!((8.0..=22.0).contains(&p.duration), "{p:?}");
            if i % 2 == 0 {
                assert!((5e6..12e6).contains(&p.bandwidth_bps));
            } else {
                assert!((250e3..600e3).contains(&p.bandwidth_bps));
            }
        }
        let o = Schedule::scenario("outage", 7).unwrap();
        assert!(o
            .phases
            .iter()
            .take(8)
            .skip(1)
            .step_by(2)
            .all(|p| p.outage && (20.0..=40.0).contains(&p.duration)));
        let n = Schedule::scenario("noisy-mobile", 7).unwrap();
        assert!(n.at(22.0).0.outage);
        assert!(!n.at(5.0).0.outage);
        assert!(n.phases.iter().all(|p| p.outage || p.bandwidth_bps >= 80e3));
    }

    /// The condition that applies from poll `k` on, and the poll at which it started.
    fn at_poll(s: &Schedule, k: u32) -> (Phase, u32) {
        let (p, left) = s.at(k as f64 + 0.5);
        let started = (k as f64 + 0.5 + left - p.duration).round() as u32;
        (p, started)
    }

    /// vinyl's published run (`packages/vinyl/test/abrBenchmark/results/results.json` of
    /// amazonmusic/vinyl, seed 1, engine "vinyl", track "audio-10s") records each condition it
    /// applied in `networkSeries`: the poll's time, bytes/s and latency. Our seed-1 schedules
    /// regenerate them: the same values, from the same poll (its time floored: vinyl's polls
    /// drift about 3 ms each, which is not modelled).
    #[test]
    fn seed_1_regenerates_vinyls_published_schedules() {
        // (poll time s, downloadThroughput B/s, latency ms) from that file.
        let wifi = [
            (0.0, 627_393.756_032_688_5, 23.186_175_998_998_806),
            (17.015, 73_616.533_046_879_34, 142.165_525_443_851_95),
            (39.048, 1_255_650.248_494_930_6, 20.644_923_802_465_2),
            (56.086, 51_168.111_813_603_9, 173.318_247_613_497_08),
        ];
        let noisy = [
            (0.0, 70_968.810_892_965_5, 50.410_358_177_032_32),
            (1.0, 101_110.858_539_850_09, 195.256_684_732_157_74),
            (2.004, 69_965.720_666_710_4, 158.111_471_170_559_53),
            (15.044, 43_050.654_273_860_775, 489.698_643_505_107_6),
            (24.065, 39_433.454_808_090_1, 180.302_921_810_653_06),
            (31.077, 85_043.026_132_715_46, 178.135_804_494_377_23),
        ];
        for (name, rows) in [("wifi-to-4g", &wifi[..]), ("noisy-mobile", &noisy[..])] {
            let s = Schedule::scenario(name, 1).unwrap();
            for &(t, bytes_per_s, latency) in rows {
                let k = t as u32;
                let (p, started) = at_poll(&s, k);
                assert!(!p.outage, "{name} at {t}");
                assert!(
                    (p.bandwidth_bps / 8.0 - bytes_per_s).abs() < 1e-6,
                    "{name} at {t}: {} B/s, vinyl {bytes_per_s}",
                    p.bandwidth_bps / 8.0
                );
                assert!(
                    (p.latency_ms - latency).abs() < 1e-9,
                    "{name} at {t}: {} ms, vinyl {latency}",
                    p.latency_ms
                );
                // wifi-to-4g's conditions start at the poll vinyl applied them at.
                if name == "wifi-to-4g" {
                    assert_eq!(started, k, "{name}: the condition of {t} s");
                }
            }
        }
        // noisy-mobile's 3 s dropout: applied at the poll of 21.059 s, lifted at 24.065 s.
        let n = Schedule::scenario("noisy-mobile", 1).unwrap();
        assert_eq!(at_poll(&n, 21), (n.at(21.5).0, 21));
        assert!(n.at(21.5).0.outage && n.at(23.9).0.outage && !n.at(24.1).0.outage);
        // outage: stalled from 9.018 s, healthy from 29.055 s, stalled from 37.065 s, healthy
        // from 77.131 s, stalled from 87.162 s (1 Mb/s and 30 ms while healthy).
        let o = Schedule::scenario("outage", 1).unwrap();
        let mut starts = vec![];
        let mut t = 0.0;
        for p in &o.phases {
            if t > 0.0 && t < 90.0 {
                starts.push((t, p.outage));
            }
            assert!(p.outage || (p.bandwidth_bps == 1e6 && p.latency_ms == 30.0));
            t += p.duration;
        }
        assert_eq!(
            starts,
            vec![
                (9.0, true),
                (29.0, false),
                (37.0, true),
                (77.0, false),
                (87.0, true)
            ]
        );
    }

    #[test]
    fn schedules_repeat_and_traces_parse() {
        let t = Schedule::from_trace("t", "# s kbps ms\n2 1000 10\n1 0 0 outage\n").unwrap();
        assert_eq!(t.at(0.5).0.bandwidth_bps, 1e6);
        assert!(t.at(2.5).0.outage);
        assert_eq!(t.at(3.5).0.latency_ms, 10.0);
        assert!(Schedule::from_trace("t", "").is_err());
        assert!(Schedule::from_trace("t", "x y z").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_follows_the_bandwidth() {
        let shaper = Shaper::default();
        shaper.set(Some(Schedule::from_trace("t", "100 800 0").unwrap())); // 100 kB/s
        let start = Instant::now();
        let mut sent = 0;
        while sent < 50_000 {
            match shaper.grant(50_000 - sent) {
                Grant::Now(n) => sent += n,
                Grant::Wait(until, n) => {
                    tokio::time::sleep_until(until).await;
                    sent += n;
                }
            }
        }
        let took = start.elapsed().as_secs_f64();
        assert!((0.45..0.55).contains(&took), "took {took}");
    }
}
