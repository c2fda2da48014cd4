//! Deterministic, music-like source audio: a seeded arrangement (chords, bass, lead, drums, tape
//! hiss) rendered analytically at any sample rate, so every representation has exact source PCM.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::f64::consts::TAU;

/// One note event of the arrangement, in seconds.
#[derive(Debug, Clone)]
struct Note {
    start: f64,
    len: f64,
    freq: f64,
    amp: f64,
    /// -1 (left) ..= 1 (right)
    pan: f64,
    /// Number of harmonics; more for brighter voices.
    harmonics: u32,
}

#[derive(Debug, Clone)]
struct Hit {
    start: f64,
    amp: f64,
    /// Decay rate in 1/s: kick-like hits decay slowly, hats fast.
    decay: f64,
    /// Pitched body (kick) in Hz, 0 for pure noise.
    body: f64,
    pan: f64,
}

/// A rendered-on-demand piece of music. The same `Composition` rendered at two sample rates gives
/// the same music; rendering a range gives exactly the samples of that range of the whole.
#[derive(Debug, Clone)]
pub struct Composition {
    seed: u64,
    duration: f64,
    notes: Vec<Note>,
    hits: Vec<Hit>,
}

const SCALE: [f64; 7] = [0.0, 2.0, 4.0, 5.0, 7.0, 9.0, 11.0];

fn midi_to_hz(m: f64) -> f64 {
    440.0 * 2f64.powf((m - 69.0) / 12.0)
}

impl Composition {
    /// Arranges `duration` seconds of music from `seed`. Cheap: only the event list is built.
    pub fn new(seed: u64, duration: f64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tempo = rng.gen_range(84.0..132.0);
        let beat = 60.0 / tempo;
        let root = rng.gen_range(45.0..57.0f64).round();
        let mut notes = Vec::new();
        let mut hits = Vec::new();
        let bars = (duration / (4.0 * beat)).ceil() as usize + 1;
        for bar in 0..bars {
            let t0 = bar as f64 * 4.0 * beat;
            // A chord per bar on a degree of the scale.
            let degree = [0usize, 5, 3, 4][bar % 4];
            for (k, step) in [0usize, 2, 4].iter().enumerate() {
                let idx = degree + step;
                let m = root + 12.0 + SCALE[idx % 7] + 12.0 * (idx / 7) as f64;
                notes.push(Note {
                    start: t0,
                    len: 4.0 * beat * 0.95,
                    freq: midi_to_hz(m),
                    amp: 0.07,
                    pan: [-0.5, 0.0, 0.5][k],
                    harmonics: 4,
                });
            }
            // Bass on each beat.
            for b in 0..4 {
                let m = root - 12.0 + SCALE[degree % 7] + if b == 2 { 7.0 } else { 0.0 };
                notes.push(Note {
                    start: t0 + b as f64 * beat,
                    len: beat * 0.8,
                    freq: midi_to_hz(m),
                    amp: 0.16,
                    pan: 0.0,
                    harmonics: 6,
                });
            }
            // A lead melody in eighths, sometimes resting.
            for e in 0..8 {
                if rng.gen_bool(0.3) {
                    continue;
                }
                let idx = degree + rng.gen_range(0..9usize);
                let m = root + 24.0 + SCALE[idx % 7] + 12.0 * (idx / 7) as f64;
                notes.push(Note {
                    start: t0 + e as f64 * beat / 2.0,
                    len: beat / 2.0 * rng.gen_range(0.5..1.0),
                    freq: midi_to_hz(m) * (1.0 + rng.gen_range(-0.002..0.002)),
                    amp: rng.gen_range(0.05..0.1),
                    pan: rng.gen_range(-0.7..0.7),
                    harmonics: 8,
                });
            }
            // Drums: kick on 1 and 3, snare-ish on 2 and 4, hats on eighths.
            for b in 0..4 {
                let t = t0 + b as f64 * beat;
                if b % 2 == 0 {
                    hits.push(Hit {
                        start: t,
                        amp: 0.45,
                        decay: 9.0,
                        body: 55.0,
                        pan: 0.0,
                    });
                } else {
                    hits.push(Hit {
                        start: t,
                        amp: 0.22,
                        decay: 18.0,
                        body: 0.0,
                        pan: 0.1,
                    });
                }
                for h in 0..2 {
                    hits.push(Hit {
                        start: t + h as f64 * beat / 2.0,
                        amp: rng.gen_range(0.03..0.07),
                        decay: 60.0,
                        body: 0.0,
                        pan: -0.3,
                    });
                }
            }
        }
        notes.retain(|n| n.start < duration);
        hits.retain(|h| h.start < duration);
        Composition {
            seed,
            duration,
            notes,
            hits,
        }
    }

    pub fn duration(&self) -> f64 {
        self.duration
    }

    /// Renders frames `[first, first + count)` at `rate` into interleaved f64 samples in
    /// [-1, 1] for `channels` channels (1, 2 or 6; 6 is 5.1 in L R C LFE Ls Rs order).
    pub fn render(&self, rate: u32, channels: u32, first: u64, count: usize) -> Vec<f64> {
        let ch = channels as usize;
        let mut out = vec![0.0f64; count * ch];
        let rate_f = rate as f64;
        let t_first = first as f64 / rate_f;
        let t_last = (first + count as u64) as f64 / rate_f;
        // Stereo bus, then up/down-mixed to the channel layout.
        let mut left = vec![0.0f64; count];
        let mut right = vec![0.0f64; count];
        let mut low = vec![0.0f64; count];
        let limit = (rate_f / 2.0).min(20_000.0);
        let weights: Vec<f64> = (1..=16).map(|h| 1.0 / (h as f64).powf(1.2)).collect();
        for n in &self.notes {
            let end = n.start + n.len + 0.3;
            if end < t_first || n.start > t_last {
                continue;
            }
            let i0 = ((n.start * rate_f).ceil() as i64 - first as i64).max(0) as usize;
            let i1 = (((end * rate_f).floor() as i64 - first as i64).max(0) as usize).min(count);
            let (gl, gr) = ((1.0 - n.pan) * 0.5, (1.0 + n.pan) * 0.5);
            for i in i0..i1 {
                let t = (first + i as u64) as f64 / rate_f - n.start;
                let env = envelope(t, n.len);
                if env == 0.0 {
                    continue;
                }
                // Harmonic k of phase θ by the recurrence sin((k+1)θ) = 2cosθ·sin(kθ) − sin((k−1)θ):
                // two trigonometric calls a sample whatever the number of harmonics.
                let theta = TAU * n.freq * t + 0.3 * (TAU * 5.0 * t).sin();
                let (s1, c1) = theta.sin_cos();
                let (mut prev, mut cur) = (0.0, s1);
                let mut v = 0.0;
                for (h, w) in weights.iter().enumerate().take(n.harmonics as usize) {
                    if n.freq * (h + 1) as f64 >= limit {
                        break;
                    }
                    v += cur * w;
                    let next = 2.0 * c1 * cur - prev;
                    prev = cur;
                    cur = next;
                }
                let s = v * env * n.amp;
                left[i] += s * gl;
                right[i] += s * gr;
                if n.freq < 120.0 {
                    low[i] += s;
                }
            }
        }
        for (k, h) in self.hits.iter().enumerate() {
            let end = h.start + 6.0 / h.decay;
            if end < t_first || h.start > t_last {
                continue;
            }
            let i0 = ((h.start * rate_f).ceil() as i64 - first as i64).max(0) as usize;
            let i1 = (((end * rate_f).floor() as i64 - first as i64).max(0) as usize).min(count);
            let (gl, gr) = ((1.0 - h.pan) * 0.5, (1.0 + h.pan) * 0.5);
            for i in i0..i1 {
                let abs = first + i as u64;
                let t = abs as f64 / rate_f - h.start;
                let env = (-h.decay * t).exp() * h.amp;
                let noise = hash_noise(self.seed ^ (k as u64).wrapping_mul(0x9E37_79B9), abs);
                let s = if h.body > 0.0 {
                    env * ((TAU * h.body * t * (1.0 + 2.0 * (-30.0 * t).exp())).sin() + 0.1 * noise)
                } else {
                    env * noise
                };
                left[i] += s * gl;
                right[i] += s * gr;
                if h.body > 0.0 {
                    low[i] += s;
                }
            }
        }
        for i in 0..count {
            let abs = first + i as u64;
            // Tape hiss around -66 dBFS fills the low bits as real recordings do.
            let hl = 0.0005 * hash_noise(self.seed ^ 0xA5A5, abs);
            let hr = 0.0005 * hash_noise(self.seed ^ 0x5A5A, abs);
            let (l, r) = (soft_clip(left[i] + hl), soft_clip(right[i] + hr));
            let o = &mut out[i * ch..(i + 1) * ch];
            match ch {
                1 => o[0] = soft_clip((left[i] + right[i]) * 0.5 + hl),
                2 => {
                    o[0] = l;
                    o[1] = r;
                }
                _ => {
                    o[0] = l;
                    o[1] = r;
                    o[2] = soft_clip((left[i] + right[i]) * 0.35);
                    o[3] = soft_clip(low[i] * 0.8);
                    // Surrounds get a decorrelated, delayed-feeling ambience.
                    o[4] = soft_clip(r * 0.4 + hr * 4.0);
                    o[5] = soft_clip(l * 0.4 + hl * 4.0);
                    for extra in o.iter_mut().skip(6) {
                        *extra = 0.0;
                    }
                }
            }
        }
        out
    }
}

fn envelope(t: f64, len: f64) -> f64 {
    const ATTACK: f64 = 0.008;
    const RELEASE: f64 = 0.25;
    if t < 0.0 {
        0.0
    } else if t < ATTACK {
        t / ATTACK
    } else if t < len {
        0.75 + 0.25 * (-(t - ATTACK) * 3.0).exp()
    } else if t < len + RELEASE {
        0.75 * (1.0 - (t - len) / RELEASE)
    } else {
        0.0
    }
}

fn soft_clip(x: f64) -> f64 {
    x.tanh() * 0.98
}

/// White noise in [-1, 1] as a pure function of (seed, sample index): any range renders alike.
fn hash_noise(seed: u64, i: u64) -> f64 {
    let mut z = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// Quantizes to signed integers of `bits` (16 or 24), clamped.
pub fn quantize(samples: &[f64], bits: u32) -> Vec<i32> {
    let max = ((1i64 << (bits - 1)) - 1) as f64;
    samples
        .iter()
        .map(|&s| (s * max).round().clamp(-max - 1.0, max) as i32)
        .collect()
}

/// Little-endian packed PCM: 2 bytes a sample for 16-bit, 3 for 24-bit.
pub fn pack_le(samples: &[i32], bits: u32) -> Vec<u8> {
    let width = (bits / 8) as usize;
    let mut out = Vec::with_capacity(samples.len() * width);
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes()[..width]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_a_range_equals_the_slice_of_the_whole() {
        let c = Composition::new(7, 3.0);
        let whole = c.render(44_100, 2, 0, 44_100 * 2);
        let part = c.render(44_100, 2, 30_000, 20_000);
        assert_eq!(&whole[60_000..100_000], &part[..]);
    }

    #[test]
    fn same_seed_same_music_other_seed_other_music() {
        let a = Composition::new(1, 2.0).render(48_000, 2, 0, 48_000);
        let b = Composition::new(1, 2.0).render(48_000, 2, 0, 48_000);
        let c = Composition::new(2, 2.0).render(48_000, 2, 0, 48_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn music_is_not_silent_not_clipped_and_stereo() {
        let s = Composition::new(3, 4.0).render(44_100, 2, 0, 44_100 * 4);
        let peak = s.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(peak > 0.2 && peak < 1.0, "peak {peak}");
        let diff: f64 = s.chunks(2).map(|f| (f[0] - f[1]).abs()).sum();
        assert!(diff > 100.0, "channels should differ");
    }

    #[test]
    fn quantize_and_pack() {
        let q = quantize(&[1.0, -1.0, 0.0, 0.5], 16);
        assert_eq!(q, vec![32767, -32767, 0, 16384]);
        assert_eq!(pack_le(&[-2], 24), vec![0xfe, 0xff, 0xff]);
    }
}
