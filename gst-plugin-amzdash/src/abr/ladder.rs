//! The candidates the selector chooses between: one entry per playable representation, ordered
//! from the lowest to the highest quality, with the exact segment sizes when they are known.

use std::fmt;
use std::time::Duration;

/// The codec family of a representation (the workspace's one codec type decides it:
/// [`Codec::abr_family`](amzmusic_common::codec::Codec::abr_family)). Switching inside one
/// family is cheap (a new init segment); switching across families starts a new decoder, so the
/// selector makes it cost more. AAC and the Dolby codecs are distinct families.
pub use amzmusic_common::codec::AbrFamily as CodecFamily;

/// One representation as the selector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The Representation `id` (for logs and stats; the selector answers with indexes).
    pub id: String,
    pub codec: CodecFamily,
    /// The id (or index) of the AdaptationSet the representation belongs to.
    pub adaptation_set: u32,
    /// The `bandwidth` attribute, bit/s. The service documents it as a worst case that real
    /// segments can still exceed, so exact sizes are preferred whenever they are given.
    pub bandwidth_bps: u64,
    /// `qualityRanking` (lower is better), when the manifest gives one.
    pub quality_ranking: Option<u32>,
    /// Exact media segment sizes in bytes (SegmentList `mediaRange`, or the `sidx`); `None` when
    /// only `bandwidth` is known.
    pub segment_bytes: Option<Vec<u64>>,
    /// This candidate's own segment durations when its timeline differs from the ladder's (an
    /// Opus track often ends with a 20 ms tail segment the FLAC ones do not have): its sizes are
    /// then mapped onto the ladder's segments by time. `None`: one size per ladder segment.
    pub segment_durations: Option<Vec<Duration>>,
}

/// Why a ladder cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LadderError {
    NoCandidates,
    NoSegments,
    /// A segment duration is zero.
    ZeroDuration(usize),
    /// A candidate's `segment_bytes` does not have one entry per segment (of the ladder, or of
    /// its own `segment_durations`), or one of its own durations is zero.
    SizeCount {
        id: String,
        expected: usize,
        got: usize,
    },
    /// A candidate has `bandwidth` 0 and no exact sizes: nothing to predict from.
    NoRate(String),
}

impl fmt::Display for LadderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LadderError::NoCandidates => write!(f, "no representation to choose from"),
            LadderError::NoSegments => write!(f, "the track has no media segment"),
            LadderError::ZeroDuration(i) => write!(f, "media segment {i} has a zero duration"),
            LadderError::SizeCount { id, expected, got } => write!(
                f,
                "representation {id} lists {got} segment sizes for {expected} segments"
            ),
            LadderError::NoRate(id) => write!(
                f,
                "representation {id} has neither a bandwidth nor segment sizes"
            ),
        }
    }
}

impl std::error::Error for LadderError {}

/// The candidates of one track sorted from the lowest to the highest quality, and the track's
/// segment timeline (segment `k` covers the same media time in every candidate, which is what
/// makes switching at segment boundaries seamless).
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    candidates: Vec<Candidate>,
    durations_s: Vec<f64>,
    /// Exact sizes per candidate on the ladder's timeline, bytes.
    sizes: Vec<Option<Vec<f64>>>,
    /// Mean segment size per candidate, bytes (exact when known).
    mean_bytes: Vec<f64>,
}

impl Ladder {
    /// Sorts the candidates by quality: by `qualityRanking` (higher number first) when every
    /// candidate has one, then by mean bitrate. Indexes in every answer refer to this order:
    /// see [`Ladder::candidates`] and [`Ladder::position`].
    pub fn new(
        candidates: Vec<Candidate>,
        segment_durations: &[Duration],
    ) -> Result<Ladder, LadderError> {
        if candidates.is_empty() {
            return Err(LadderError::NoCandidates);
        }
        if segment_durations.is_empty() {
            return Err(LadderError::NoSegments);
        }
        if let Some(i) = segment_durations.iter().position(|d| d.is_zero()) {
            return Err(LadderError::ZeroDuration(i));
        }
        let durations_s: Vec<f64> = segment_durations.iter().map(|d| d.as_secs_f64()).collect();
        let total: f64 = durations_s.iter().sum();
        for c in &candidates {
            if c.segment_bytes.is_none() && c.bandwidth_bps == 0 {
                return Err(LadderError::NoRate(c.id.clone()));
            }
        }
        let mut mapped = Vec::with_capacity(candidates.len());
        for c in &candidates {
            mapped.push(match &c.segment_bytes {
                None => None,
                Some(s) => Some(map_sizes(c, s, &durations_s)?),
            });
        }
        let mean_rate = |c: &Candidate, m: &Option<Vec<f64>>| match m {
            Some(s) => s.iter().sum::<f64>() * 8.0 / total,
            None => c.bandwidth_bps as f64,
        };
        let all_ranked = candidates.iter().all(|c| c.quality_ranking.is_some());
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| {
            let (ca, cb) = (&candidates[a], &candidates[b]);
            let by_rank = if all_ranked {
                cb.quality_ranking.cmp(&ca.quality_ranking)
            } else {
                std::cmp::Ordering::Equal
            };
            by_rank.then(mean_rate(ca, &mapped[a]).total_cmp(&mean_rate(cb, &mapped[b])))
        });
        let mean_bytes = order
            .iter()
            .map(|&i| {
                mean_rate(&candidates[i], &mapped[i]) / 8.0 * total / durations_s.len() as f64
            })
            .collect();
        let sizes = order.iter().map(|&i| mapped[i].take()).collect();
        let mut slots: Vec<Option<Candidate>> = candidates.into_iter().map(Some).collect();
        let candidates = order
            .iter()
            .map(|&i| slots[i].take().expect("each once"))
            .collect();
        Ok(Ladder {
            candidates,
            durations_s,
            sizes,
            mean_bytes,
        })
    }

    /// The candidates, lowest quality first.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// The index of the candidate with this Representation id.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.candidates.iter().position(|c| c.id == id)
    }

    pub fn segment_count(&self) -> usize {
        self.durations_s.len()
    }

    /// Duration of segment `k`, seconds (the last one for `k` past the end).
    pub fn duration_s(&self, k: usize) -> f64 {
        self.durations_s[k.min(self.durations_s.len() - 1)]
    }

    /// Media time from segment `k` to the end of the track, seconds.
    pub fn remaining_s(&self, k: usize) -> f64 {
        self.durations_s.iter().skip(k).sum()
    }

    /// Bytes of segment `k` of candidate `rep`: exact when known, else `bandwidth × duration`
    /// (the manifest's worst case).
    pub fn segment_bytes(&self, rep: usize, k: usize) -> f64 {
        match &self.sizes[rep] {
            Some(s) => s[k.min(s.len() - 1)],
            None => self.candidates[rep].bandwidth_bps as f64 / 8.0 * self.duration_s(k),
        }
    }

    /// Mean segment size of a candidate, bytes.
    pub fn mean_bytes(&self, rep: usize) -> f64 {
        self.mean_bytes[rep]
    }

    /// Bit rate needed to fetch segments `k..k+n` in their own duration, bit/s (exact sizes).
    pub fn window_rate_bps(&self, rep: usize, k: usize, n: usize) -> f64 {
        let end = (k + n.max(1)).min(self.segment_count()).max(k + 1);
        let (mut bytes, mut secs) = (0.0, 0.0);
        for j in k..end {
            bytes += self.segment_bytes(rep, j);
            secs += self.duration_s(j);
        }
        bytes * 8.0 / secs
    }

    pub fn codec(&self, rep: usize) -> CodecFamily {
        self.candidates[rep].codec
    }
}

/// A candidate's exact sizes on the ladder's timeline: its own segments spread over the ladder
/// segments they overlap, in proportion to time; anything past the ladder's end joins the last.
fn map_sizes(c: &Candidate, sizes: &[u64], ladder: &[f64]) -> Result<Vec<f64>, LadderError> {
    let count_err = |expected: usize| LadderError::SizeCount {
        id: c.id.clone(),
        expected,
        got: sizes.len(),
    };
    let Some(own) = &c.segment_durations else {
        if sizes.len() != ladder.len() {
            return Err(count_err(ladder.len()));
        }
        return Ok(sizes.iter().map(|&b| b as f64).collect());
    };
    if own.len() != sizes.len() || own.iter().any(|d| d.is_zero()) {
        return Err(count_err(own.len()));
    }
    let mut out = vec![0.0; ladder.len()];
    let ends: Vec<f64> = ladder
        .iter()
        .scan(0.0, |t, d| {
            *t += d;
            Some(*t)
        })
        .collect();
    let mut start = 0.0;
    for (d, &bytes) in own.iter().zip(sizes) {
        let (a, b) = (start, start + d.as_secs_f64());
        start = b;
        let mut lstart = 0.0;
        for (k, &lend) in ends.iter().enumerate() {
            let overlap = (b.min(lend) - a.max(lstart)).max(0.0);
            out[k] += bytes as f64 * overlap / (b - a);
            lstart = lend;
        }
        let past = (b - a.max(lstart)).max(0.0).min(b - a);
        out[ladder.len() - 1] += bytes as f64 * past / (b - a);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &str, codec: CodecFamily, bw: u64, rank: Option<u32>) -> Candidate {
        Candidate {
            id: id.into(),
            codec,
            adaptation_set: 0,
            bandwidth_bps: bw,
            quality_ranking: rank,
            segment_bytes: None,
            segment_durations: None,
        }
    }

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[test]
    fn codec_families_from_codecs_attribute() {
        use amzmusic_common::codec::Codec;
        let family = |c: &str| Codec::from_dash_codecs(c).map(Codec::abr_family);
        assert_eq!(family("fLaC"), Some(CodecFamily::Flac));
        assert_eq!(family("opus"), Some(CodecFamily::Opus));
        assert_eq!(family("ec-3"), Some(CodecFamily::Ac3));
        // AAC was `Other` with AC-3, so a switch between them read as same-codec (issue 16).
        assert_eq!(family("mp4a.40.2"), Some(CodecFamily::Aac));
        assert_ne!(family("mp4a.40.2"), family("ac-3"));
    }

    #[test]
    fn sorted_by_ranking_then_rate() {
        let l = Ladder::new(
            vec![
                cand("flac", CodecFamily::Flac, 900_000, Some(1)),
                cand("opus-lo", CodecFamily::Opus, 150_000, Some(3)),
                cand("opus-hi", CodecFamily::Opus, 320_000, Some(2)),
            ],
            &secs(&[10, 10]),
        )
        .unwrap();
        let ids: Vec<_> = l.candidates().iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["opus-lo", "opus-hi", "flac"]);
        assert_eq!(l.position("flac"), Some(2));
        // Without a ranking on every candidate, the mean rate decides.
        let l = Ladder::new(
            vec![
                cand("b", CodecFamily::Flac, 900_000, Some(9)),
                cand("a", CodecFamily::Opus, 150_000, None),
            ],
            &secs(&[10]),
        )
        .unwrap();
        assert_eq!(l.candidates()[0].id, "a");
    }

    #[test]
    fn exact_sizes_beat_the_bandwidth_attribute() {
        let mut c = cand("x", CodecFamily::Flac, 1_000_000, None);
        c.segment_bytes = Some(vec![1_000_000, 500_000]);
        let l = Ladder::new(vec![c], &secs(&[10, 10])).unwrap();
        assert_eq!(l.segment_bytes(0, 0), 1_000_000.0);
        // 8 Mbit in 10 s exceeds the 1 Mb/s "worst case": exact sizes tell the truth.
        assert_eq!(l.window_rate_bps(0, 0, 1), 800_000.0);
        assert_eq!(l.window_rate_bps(0, 0, 2), 600_000.0);
        assert_eq!(l.mean_bytes(0), 750_000.0);
        // Without sizes, bandwidth × duration.
        let l = Ladder::new(
            vec![cand("y", CodecFamily::Opus, 160_000, None)],
            &secs(&[10]),
        )
        .unwrap();
        assert_eq!(l.segment_bytes(0, 0), 200_000.0);
        assert_eq!(l.remaining_s(0), 10.0);
    }

    #[test]
    fn own_timelines_are_mapped_by_time() {
        // Opus: six 10 s segments and a 20 ms tail; the ladder has six 10 s segments.
        let mut opus = cand("opus", CodecFamily::Opus, 260_400, None);
        opus.segment_bytes = Some(vec![100, 100, 100, 100, 100, 100, 7]);
        let mut d = secs(&[10, 10, 10, 10, 10, 10]);
        d.push(Duration::from_millis(20));
        opus.segment_durations = Some(d);
        // And a candidate with 20 s segments.
        let mut long = cand("long", CodecFamily::Flac, 1, None);
        long.segment_bytes = Some(vec![400, 400, 400]);
        long.segment_durations = Some(secs(&[20, 20, 20]));
        let l = Ladder::new(vec![opus, long], &secs(&[10, 10, 10, 10, 10, 10])).unwrap();
        let o = l.position("opus").unwrap();
        assert_eq!(l.segment_bytes(o, 0), 100.0);
        assert_eq!(l.segment_bytes(o, 5), 107.0);
        let g = l.position("long").unwrap();
        assert_eq!(l.segment_bytes(g, 0), 200.0);
        assert_eq!(l.segment_bytes(g, 5), 200.0);
        let mut bad = cand("bad", CodecFamily::Flac, 1, None);
        bad.segment_bytes = Some(vec![1, 2]);
        bad.segment_durations = Some(secs(&[10]));
        assert!(Ladder::new(vec![bad], &secs(&[10])).is_err());
    }

    #[test]
    fn bad_ladders_are_refused() {
        let c = cand("x", CodecFamily::Flac, 1, None);
        assert_eq!(
            Ladder::new(vec![], &secs(&[1])),
            Err(LadderError::NoCandidates)
        );
        assert_eq!(
            Ladder::new(vec![c.clone()], &[]),
            Err(LadderError::NoSegments)
        );
        assert_eq!(
            Ladder::new(vec![c.clone()], &secs(&[1, 0])),
            Err(LadderError::ZeroDuration(1))
        );
        let mut bad = c.clone();
        bad.segment_bytes = Some(vec![1]);
        assert!(matches!(
            Ladder::new(vec![bad], &secs(&[1, 1])),
            Err(LadderError::SizeCount { .. })
        ));
        let zero = cand("z", CodecFamily::Opus, 0, None);
        assert_eq!(
            Ladder::new(vec![zero], &secs(&[1])),
            Err(LadderError::NoRate("z".into()))
        );
    }
}
