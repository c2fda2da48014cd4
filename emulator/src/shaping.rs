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

impl Schedule {
    /// A named scenario, reproducible for a seed.
    pub fn scenario(name: &str, seed: u32) -> Option<Schedule> {
        let mut rng = Mulberry32(seed);
        let phases = match name {
            "stable-high" => vec![phase(3600.0, 10e6, 20.0)],
            "stable-low" => vec![phase(3600.0, 500e3, 80.0)],
            "wifi-to-4g" => {
                let mut p = Vec::new();
                for _ in 0..3 {
                    let d = rng.range(8.0, 22.0);
                    let bw = rng.range(5e6, 12e6);
                    let lat = rng.range(10.0, 35.0);
                    p.push(phase(d, bw, lat));
                    let d = rng.range(8.0, 22.0);
                    let bw = rng.range(250e3, 600e3);
                    let lat = rng.range(100.0, 250.0);
                    p.push(phase(d, bw, lat));
                }
                p
            }
            "outage" => {
                let mut p = Vec::new();
                for _ in 0..4 {
                    p.push(phase(rng.range(6.0, 10.0), 1e6, 30.0));
                    p.push(Phase {
                        outage: true,
                        ..phase(rng.range(20.0, 40.0), 1e6, 30.0)
                    });
                }
                p
            }
            "noisy-mobile" => {
                // One-second steps: 500 kb/s with lognormal-ish ±50 % noise (80 kb/s floor),
                // 50–200 ms latency with rare 400 ms spikes, and a 3 s dropout every 150 s.
                let mut p = Vec::new();
                for s in 0..600u32 {
                    if (s / 3) % 50 == 7 {
                        p.push(Phase {
                            outage: true,
                            ..phase(1.0, 0.0, 0.0)
                        });
                        continue;
                    }
                    let noise = (rng.next() - 0.5) * 2.0;
                    let bw = (500e3 * (noise * 0.5).exp()).max(80e3);
                    let spike = if rng.next() < 0.05 { 400.0 } else { 0.0 };
                    let lat = 50.0 + rng.next() * 150.0 + spike;
                    p.push(phase(1.0, bw, lat));
                }
                p
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
        assert_eq!(w.phases.len(), 6);
        for (i, p) in w.phases.iter().enumerate() {
            assert!((8.0..22.0).contains(&p.duration));
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
            .skip(1)
            .step_by(2)
            .all(|p| p.outage && (20.0..40.0).contains(&p.duration)));
        let n = Schedule::scenario("noisy-mobile", 7).unwrap();
        assert!(n.at(22.0).0.outage);
        assert!(!n.at(5.0).0.outage);
        assert!(n.phases.iter().all(|p| p.outage || p.bandwidth_bps >= 80e3));
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
