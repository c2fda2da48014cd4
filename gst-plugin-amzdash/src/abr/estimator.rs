//! Throughput and latency estimation from finished downloads: a fast and a slow exponentially
//! weighted moving average of the transfer rate (the lower one is used), plus the request latency.

/// An EWMA whose samples are weighted by how long they took, so that a long download counts for
/// more than a short one, with a half-life in seconds of weight. The estimate is corrected for
/// the zero start value, so the first sample is taken as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Ewma {
    /// Per-second decay factor: 0.5 ^ (1 / half_life).
    alpha: f64,
    value: f64,
    total_weight: f64,
}

impl Ewma {
    pub fn new(half_life_s: f64) -> Ewma {
        Ewma {
            alpha: 0.5f64.powf(1.0 / half_life_s.max(1e-3)),
            value: 0.0,
            total_weight: 0.0,
        }
    }

    /// Adds `value` observed over `weight` seconds.
    pub fn sample(&mut self, weight: f64, value: f64) {
        if !(weight > 0.0 && value.is_finite()) {
            return;
        }
        let a = self.alpha.powf(weight);
        self.value = value * (1.0 - a) + a * self.value;
        self.total_weight += weight;
    }

    /// The estimate, or `None` before any sample.
    pub fn estimate(&self) -> Option<f64> {
        if self.total_weight <= 0.0 {
            return None;
        }
        let zero_factor = 1.0 - self.alpha.powf(self.total_weight);
        Some(self.value / zero_factor)
    }
}

/// Downloads shorter than this say more about TCP and the server than about the link.
pub const MIN_SAMPLE_BYTES: u64 = 16 * 1024;
/// Transfers shorter than this are timed as this long (a lower bound on the rate).
pub const MIN_TRANSFER_S: f64 = 0.005;
/// A first byte this much later than the usual latency means the link stalled (an outage).
pub const OUTAGE_TTFB_S: f64 = 2.0;
/// Time the link sat idle before a download counts towards that download's weight, up to this
/// much. The averages are in seconds of measurement; once the buffer is full, downloads are
/// short and ten seconds apart, and weighting a 0.2 s download of a small Opus segment by its
/// transfer time alone keeps a rate from half a minute ago in the estimate for minutes (after a
/// drop, FLAC never came back). The link is measured only while something downloads, so the
/// latest download is the best account of the link now: after a quiet spell it outweighs the
/// old samples like a download of up to this many seconds would.
pub const IDLE_WEIGHT_CAP_S: f64 = 4.0;

/// Transfer rate (fast/slow EWMA pair, Shaka's 2 s/5 s half-lives) and latency estimates.
#[derive(Debug, Clone)]
pub struct ThroughputEstimator {
    fast: Ewma,
    slow: Ewma,
    /// An earlier session's estimate, used until the first measurement.
    prior: Option<f64>,
    latency: Option<f64>,
    /// Bytes measured so far.
    bytes: u64,
    /// Longest link stall seen (first byte very late), seconds.
    longest_outage_s: f64,
    /// When the last download that measured the rate ended, on the caller's clock (seconds).
    last_end_s: Option<f64>,
    /// Share of the time the link answered (1) rather than stalled (0), over about a minute.
    availability: Ewma,
}

/// Half-life of the availability average, seconds of download time.
const AVAILABILITY_HALF_LIFE_S: f64 = 60.0;

impl ThroughputEstimator {
    pub fn new(fast_half_life_s: f64, slow_half_life_s: f64) -> ThroughputEstimator {
        ThroughputEstimator {
            fast: Ewma::new(fast_half_life_s),
            slow: Ewma::new(slow_half_life_s),
            prior: None,
            latency: None,
            bytes: 0,
            longest_outage_s: 0.0,
            last_end_s: None,
            availability: Ewma::new(AVAILABILITY_HALF_LIFE_S),
        }
    }

    /// Starts from an earlier estimate (the last session's) until the first measurement, which
    /// then replaces it entirely: yesterday's network says little once today's is measured.
    pub fn seed(&mut self, bps: f64, latency_s: Option<f64>) {
        if bps > 0.0 && bps.is_finite() {
            self.prior = Some(bps);
        }
        if let Some(l) = latency_s.filter(|l| l.is_finite() && *l >= 0.0) {
            self.latency = Some(l.min(OUTAGE_TTFB_S));
        }
    }

    /// Adds one finished download: `ttfb_s` from the request to the first byte, `total_s` from
    /// the request to the last byte. The rate is measured after the first byte, so a request's
    /// round trip does not make a fast link look slow; the round trip is estimated apart.
    pub fn add(&mut self, bytes: u64, ttfb_s: f64, total_s: f64) {
        self.add_stalled(bytes, ttfb_s, total_s, 0.0);
    }

    /// [`add`](Self::add) for a download whose bytes stopped flowing for `stalled_s` after the
    /// first byte (a link outage while it was in flight, seen from its progress): the stall
    /// counts against the link's availability and as an outage, not as a slow transfer, so the
    /// rate stays what the link gives when it is up.
    pub fn add_stalled(&mut self, bytes: u64, ttfb_s: f64, total_s: f64, stalled_s: f64) {
        self.add_stalled_at(bytes, ttfb_s, total_s, stalled_s, None);
    }

    /// [`add_stalled`](Self::add_stalled) for a download that ended at `end_s` on the caller's
    /// (monotonic) clock: the time the link sat idle since the previous one ended counts
    /// towards its weight, up to [`IDLE_WEIGHT_CAP_S`].
    pub fn add_stalled_at(
        &mut self,
        bytes: u64,
        ttfb_s: f64,
        total_s: f64,
        stalled_s: f64,
        end_s: Option<f64>,
    ) {
        if !(ttfb_s.is_finite() && total_s.is_finite()) || ttfb_s < 0.0 {
            return;
        }
        let stalled_s = if stalled_s.is_finite() {
            stalled_s.clamp(0.0, (total_s - ttfb_s).max(0.0))
        } else {
            0.0
        };
        if stalled_s > 0.0 {
            self.longest_outage_s = self.longest_outage_s.max(stalled_s);
            self.availability.sample(stalled_s, 0.0);
        }
        let usual = self.latency.unwrap_or(0.0);
        if ttfb_s - usual > OUTAGE_TTFB_S {
            // The request waited on a stalled link: remember how long, keep it out of the
            // latency (it is not what the next request will see when the link is up), and count
            // it against the link's availability.
            self.longest_outage_s = self.longest_outage_s.max(ttfb_s - usual);
            self.availability.sample(ttfb_s - usual, 0.0);
            self.availability
                .sample((total_s - stalled_s - ttfb_s + usual).max(1e-3), 1.0);
        } else {
            self.availability
                .sample((total_s - stalled_s).max(1e-3), 1.0);
            self.latency = Some(match self.latency {
                None => ttfb_s,
                Some(l) => 0.7 * l + 0.3 * ttfb_s,
            });
        }
        if bytes < MIN_SAMPLE_BYTES || total_s - ttfb_s - stalled_s < 0.0 {
            return;
        }
        // A download too quick to time (a local or very fast link: a megabyte in a
        // millisecond) still says the link is at least that fast. Dropping it left no estimate
        // at all, so the default guess (1 Mb/s) took FLAC away on a loopback link.
        let transfer_s = (total_s - ttfb_s - stalled_s).max(MIN_TRANSFER_S);
        let end_s = end_s.filter(|e| e.is_finite());
        let idle_s = match (end_s, self.last_end_s) {
            (Some(end), Some(last)) => (end - total_s - last).clamp(0.0, IDLE_WEIGHT_CAP_S),
            _ => 0.0,
        };
        if end_s.is_some() {
            self.last_end_s = end_s;
        }
        let bps = bytes as f64 * 8.0 / transfer_s;
        self.fast.sample(transfer_s + idle_s, bps);
        self.slow.sample(transfer_s + idle_s, bps);
        self.bytes += bytes;
    }

    /// The lower of the fast and slow averages, bit/s: quick to fall, slow to rise.
    pub fn estimate_bps(&self) -> Option<f64> {
        match (self.fast.estimate(), self.slow.estimate()) {
            (Some(f), Some(s)) => Some(f.min(s)),
            _ => self.prior,
        }
    }

    /// A request got no answer for `waited_s` (it timed out and will be retried): the link was
    /// down that long, as far as anyone can tell.
    pub fn add_outage(&mut self, waited_s: f64) {
        if waited_s.is_finite() && waited_s > 0.0 {
            self.longest_outage_s = self.longest_outage_s.max(waited_s);
            self.availability.sample(waited_s, 0.0);
        }
    }

    /// A download in flight has had no new byte for `stalled_s` so far: the link is down at
    /// least that long (counted in full once the download reports it with
    /// [`add_stalled`](Self::add_stalled)).
    pub fn note_stall(&mut self, stalled_s: f64) {
        if stalled_s.is_finite() && stalled_s > OUTAGE_TTFB_S {
            self.longest_outage_s = self.longest_outage_s.max(stalled_s);
        }
    }

    /// Round trip to the first byte, seconds.
    pub fn latency_s(&self) -> Option<f64> {
        self.latency
    }

    pub fn measured_bytes(&self) -> u64 {
        self.bytes
    }

    /// Share of recent time the link was answering (1 without outages): what a long track can
    /// count on is the rate times this.
    pub fn availability(&self) -> f64 {
        self.availability.estimate().unwrap_or(1.0).clamp(0.0, 1.0)
    }

    /// The longest link outage observed, seconds (0 when none).
    pub fn longest_outage_s(&self) -> f64 {
        self.longest_outage_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn ewma_first_sample_is_exact_and_half_life_halves() {
        let mut e = Ewma::new(2.0);
        assert_eq!(e.estimate(), None);
        e.sample(0.5, 1000.0);
        assert!(close(e.estimate().unwrap(), 1000.0));
        // After one half-life of weight at a new value, the old value's share is halved
        // (before the zero-start correction, which is ~1 once weight is large).
        let mut e = Ewma::new(2.0);
        e.sample(100.0, 1000.0);
        e.sample(2.0, 0.0);
        assert!(close(e.estimate().unwrap(), 500.0), "{:?}", e.estimate());
        e.sample(2.0, 0.0);
        assert!(close(e.estimate().unwrap(), 250.0));
    }

    #[test]
    fn ewma_zero_start_correction() {
        // Two samples with total weight 1 half-life: raw value = v2*(1-0.5^(w2/h)) + ..., the
        // corrected one divides by 1 - 0.5^(total/h).
        let mut e = Ewma::new(1.0);
        e.sample(0.5, 100.0);
        e.sample(0.5, 200.0);
        let a = 0.5f64.powf(0.5);
        let raw = 200.0 * (1.0 - a) + a * (100.0 * (1.0 - a));
        assert!(close(e.estimate().unwrap(), raw / 0.5));
        // Invalid samples are ignored.
        e.sample(0.0, 5.0);
        e.sample(1.0, f64::NAN);
        assert!(close(e.estimate().unwrap(), raw / 0.5));
    }

    #[test]
    fn takes_the_lower_of_fast_and_slow() {
        let mut t = ThroughputEstimator::new(2.0, 5.0);
        assert_eq!(t.estimate_bps(), None);
        // 10 s at 8 Mb/s, then 1 s at 1 Mb/s: the fast average drops further and wins.
        t.add(10_000_000, 0.02, 10.02);
        assert!(close(t.estimate_bps().unwrap(), 8e6));
        t.add(125_000, 0.02, 1.02);
        let (mut fast, mut slow) = (Ewma::new(2.0), Ewma::new(5.0));
        for e in [&mut fast, &mut slow] {
            e.sample(10.0, 8e6);
            e.sample(1.0, 1e6);
        }
        let (fast, slow) = (fast.estimate().unwrap(), slow.estimate().unwrap());
        assert!(fast < slow);
        assert!(close(t.estimate_bps().unwrap(), fast));
        // A recovery moves the slow average up more slowly: the estimate stays below the link
        // for a while (slow to trust a better network).
        t.add(1_000_000, 0.02, 1.02);
        assert!(t.estimate_bps().unwrap() < 8e6 * 0.95);
    }

    #[test]
    fn latency_is_apart_and_small_or_stalled_samples_do_not_pollute() {
        let mut t = ThroughputEstimator::new(2.0, 5.0);
        // 200 kB in 1.1 s of which 0.1 s to first byte: the rate is 1.6 Mb/s, not 1.45.
        t.add(200_000, 0.1, 1.1);
        assert!(close(t.estimate_bps().unwrap(), 1.6e6));
        assert!(close(t.latency_s().unwrap(), 0.1));
        // A 1 kB init segment only updates the latency.
        t.add(1_000, 0.2, 0.2001);
        assert!(close(t.estimate_bps().unwrap(), 1.6e6));
        assert!(close(t.latency_s().unwrap(), 0.13));
        // A first byte 25 s late is an outage, not latency.
        t.add(200_000, 25.0, 26.0);
        assert!(close(t.latency_s().unwrap(), 0.13));
        assert!((t.longest_outage_s() - 24.87).abs() < 1e-9);
        // 24.87 s stalled against 1.1 + 0.0001 + 1.13 s answering, weighted over a minute.
        let a = t.availability();
        assert!(a > 0.05 && a < 0.2, "{a}");
        assert_eq!(ThroughputEstimator::new(2.0, 5.0).availability(), 1.0);
        // A request that timed out after 30 s says the same.
        let mut t = ThroughputEstimator::new(2.0, 5.0);
        t.add(200_000, 0.1, 1.1);
        t.add_outage(30.0);
        t.add_outage(f64::NAN);
        assert_eq!(t.longest_outage_s(), 30.0);
        assert!(t.availability() < 0.2);
    }

    #[test]
    fn seeded_estimate_gives_way_to_measurements() {
        let mut t = ThroughputEstimator::new(2.0, 5.0);
        t.seed(10e6, Some(0.02));
        assert!(close(t.estimate_bps().unwrap(), 10e6));
        assert!(close(t.latency_s().unwrap(), 0.02));
        // The first measurement replaces it.
        t.add(187_500, 0.08, 3.08);
        assert!(close(t.estimate_bps().unwrap(), 500e3));
        // Nonsense seeds are ignored.
        let mut t = ThroughputEstimator::new(2.0, 5.0);
        t.seed(f64::NAN, Some(-1.0));
        assert_eq!((t.estimate_bps(), t.latency_s()), (None, None));
    }

    #[test]
    fn idle_time_lets_sparse_small_downloads_show_a_recovery() {
        // 25 s of a 250 kb/s link (back-to-back 80 kB downloads), then the link is 3 Mb/s again
        // while the full buffer spaces the downloads 10 s apart, each 0.21 s long.
        let (mut timed, mut untimed) = (
            ThroughputEstimator::new(2.0, 5.0),
            ThroughputEstimator::new(2.0, 5.0),
        );
        let mut t = 0.0;
        for _ in 0..10 {
            let total = 0.02 + 80_000.0 * 8.0 / 250e3;
            t += total;
            timed.add_stalled_at(80_000, 0.02, total, 0.0, Some(t));
            untimed.add(80_000, 0.02, total);
        }
        assert!((timed.estimate_bps().unwrap() - 250e3).abs() < 1.0);
        let total = 0.02 + 80_000.0 * 8.0 / 3e6;
        t += 10.0;
        timed.add_stalled_at(80_000, 0.02, total, 0.0, Some(t));
        untimed.add(80_000, 0.02, total);
        // Without the idle time the old rate still dominates; with it, one download after the
        // quiet spell already shows more than FLAC 44.1/16 needs with Shaka's margins.
        assert!(
            untimed.estimate_bps().unwrap() < 400e3,
            "{:?}",
            untimed.estimate_bps()
        );
        let e = timed.estimate_bps().unwrap();
        assert!(e > 1.2e6 && e < 3e6, "{e}");
        // Back-to-back downloads (no idle) weigh by transfer time as before, and a download
        // that overlapped the previous one (init and first segment together) adds no idle.
        let mut a = ThroughputEstimator::new(2.0, 5.0);
        let mut b = ThroughputEstimator::new(2.0, 5.0);
        a.add_stalled_at(400_000, 0.02, 1.02, 0.0, Some(1.02));
        a.add_stalled_at(100_000, 0.02, 1.02, 0.0, Some(2.04));
        a.add_stalled_at(100_000, 0.02, 1.02, 0.0, Some(2.5));
        b.add(400_000, 0.02, 1.02);
        b.add(100_000, 0.02, 1.02);
        b.add(100_000, 0.02, 1.02);
        assert!(close(a.estimate_bps().unwrap(), b.estimate_bps().unwrap()));
    }

    #[test]
    fn a_download_too_quick_to_time_gives_a_lower_bound() {
        let mut t = ThroughputEstimator::new(2.0, 5.0);
        t.add(1_000_000, 0.0005, 0.0012);
        assert!(close(t.estimate_bps().unwrap(), 8e6 / MIN_TRANSFER_S));
    }
}
