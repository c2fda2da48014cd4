//! BOLA, the buffer-based rule dash.js uses once its buffer is healthy: a choice from the buffer
//! level alone, maximising (V·(utility + γp) − buffer) / size, with V and γp set from two levels.

/// BOLA with log utilities, parameterised so that the lowest candidate is chosen below
/// `low_s` of buffer and the highest from `high_s` on, the others in between.
#[derive(Debug, Clone, PartialEq)]
pub struct Bola {
    sizes: Vec<f64>,
    utilities: Vec<f64>,
    v: f64,
    gp: f64,
}

impl Bola {
    /// `mean_sizes`: mean segment size per candidate, lowest quality first.
    pub fn new(mean_sizes: &[f64], low_s: f64, high_s: f64) -> Bola {
        // Sizes must increase strictly for the thresholds to be ordered.
        let mut sizes: Vec<f64> = Vec::with_capacity(mean_sizes.len());
        for &s in mean_sizes {
            let floor = sizes.last().map_or(1.0, |p: &f64| p * 1.001);
            sizes.push(s.max(floor));
        }
        let s0 = sizes.first().copied().unwrap_or(1.0);
        let utilities: Vec<f64> = sizes.iter().map(|s| (s / s0).ln()).collect();
        // The buffer level where candidates m and m+1 score the same is V·(a_m + γp).
        let a = |m: usize| {
            let (x, y) = (sizes[m], sizes[m + 1]);
            (y * utilities[m] - x * utilities[m + 1]) / (y - x)
        };
        let high_s = high_s.max(low_s + 1e-3);
        let (v, gp) = match sizes.len() {
            0 | 1 => (1.0, 0.0),
            2 => {
                let gp = 1.0 - a(0);
                (low_s / (a(0) + gp), gp)
            }
            n => {
                let (a0, at) = (a(0), a(n - 2));
                let v = (high_s - low_s) / (at - a0).max(1e-9);
                (v, low_s / v - a0)
            }
        };
        Bola {
            sizes,
            utilities,
            v,
            gp,
        }
    }

    /// The candidate BOLA picks at `buffer_s` seconds of buffer.
    pub fn choose(&self, buffer_s: f64) -> usize {
        let mut best = 0;
        let mut best_score = f64::NEG_INFINITY;
        for (m, (u, s)) in self.utilities.iter().zip(&self.sizes).enumerate() {
            let score = (self.v * (u + self.gp) - buffer_s) / s;
            if score > best_score {
                best = m;
                best_score = score;
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_below_low_highest_above_high_monotonic_between() {
        // Mean segment sizes of a ladder like the HD track's (Opus 150k/320k, two FLACs).
        let sizes = [190e3, 400e3, 1.1e6, 2.0e6];
        let b = Bola::new(&sizes, 10.0, 30.0);
        assert_eq!(b.choose(0.0), 0);
        assert_eq!(b.choose(9.9), 0);
        assert_eq!(b.choose(10.1), 1);
        assert_eq!(b.choose(29.9), 2);
        assert_eq!(b.choose(30.1), 3);
        assert_eq!(b.choose(300.0), 3);
        let mut last = 0;
        for tenth in 0..400 {
            let c = b.choose(tenth as f64 / 10.0);
            assert!(c >= last, "not monotonic at {}", tenth as f64 / 10.0);
            last = c;
        }
    }

    #[test]
    fn two_and_one_candidates_and_unsorted_sizes() {
        let b = Bola::new(&[100.0, 400.0], 10.0, 30.0);
        assert_eq!(b.choose(9.0), 0);
        assert_eq!(b.choose(11.0), 1);
        assert_eq!(Bola::new(&[5.0], 10.0, 30.0).choose(100.0), 0);
        // Equal sizes do not break the thresholds.
        let b = Bola::new(&[100.0, 100.0, 300.0], 10.0, 20.0);
        assert_eq!(b.choose(0.0), 0);
        assert_eq!(b.choose(25.0), 2);
    }
}
