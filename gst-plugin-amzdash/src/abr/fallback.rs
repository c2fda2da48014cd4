// SPDX-License-Identifier: MPL-2.0
//! The throughput rule alone, for a manifest the selector's [`Ladder`](super::Ladder) rejects
//! (a zero segment duration, a representation with neither a bandwidth nor segment sizes).

/// The cold estimate of this rule alone. It decides only where no ladder could be built; every
/// other start uses the selector's [`DEFAULT_ESTIMATE_BPS`](super::DEFAULT_ESTIMATE_BPS). Kept
/// at 2 Mb/s so that the choice for such manifests stays what it was.
pub const FALLBACK_ESTIMATE_BPS: f64 = 2_000_000.0;

use amzmusic_common::codec::Codec;

/// One representation as the rule sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rung {
    /// Its codec: the rule never leaves `family`.
    pub codec: Codec,
    pub bandwidth: u64,
}

/// The best rung of `family` whose bandwidth fits 85 % of `estimate_bps` (and `max_bitrate`,
/// 0 = none); the lowest of the family when none does. From `current`, a higher rung is taken
/// only when the estimate says so clearly (its bandwidth at most 0.7 of the estimate).
pub fn choose(
    rungs: &[Rung],
    family: Codec,
    estimate_bps: f64,
    max_bitrate: u64,
    current: Option<usize>,
) -> usize {
    let mut of_family: Vec<usize> = (0..rungs.len())
        .filter(|i| rungs[*i].codec == family)
        .collect();
    of_family.sort_by_key(|i| rungs[*i].bandwidth);
    let budget = estimate_bps * 0.85;
    let next = of_family
        .iter()
        .rev()
        .copied()
        .find(|i| {
            let b = rungs[*i].bandwidth;
            (b as f64) <= budget && (max_bitrate == 0 || b <= max_bitrate)
        })
        .or_else(|| of_family.first().copied())
        .unwrap_or(0);
    if let Some(cur) = current {
        // Hysteresis: only leave the current one when the estimate says so clearly.
        let cb = rungs[cur].bandwidth as f64;
        let nb = rungs[next].bandwidth as f64;
        if nb > cb && nb > estimate_bps * 0.7 {
            return cur;
        }
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAC: Codec = Codec::Flac;
    const OPUS: Codec = Codec::Opus;

    const RUNGS: [Rung; 3] = [
        Rung {
            codec: FLAC,
            bandwidth: 1_200_000,
        },
        Rung {
            codec: FLAC,
            bandwidth: 2_400_000,
        },
        Rung {
            codec: OPUS,
            bandwidth: 70_000,
        },
    ];

    #[test]
    fn choice_fits_the_estimate_within_the_family() {
        let c = &RUNGS;
        assert_eq!(choose(c, FLAC, 3_000_000.0, 0, None), 1);
        assert_eq!(choose(c, FLAC, 2_000_000.0, 0, None), 0);
        assert_eq!(choose(c, FLAC, 3_000_000.0, 2_000_000, None), 0);
        // Nothing fits: the lowest of the family, never another codec.
        assert_eq!(choose(c, FLAC, 100_000.0, 0, None), 0);
        assert_eq!(choose(c, OPUS, 10_000_000.0, 0, None), 2);
        // Cold, from nothing measured: the rule's own start.
        assert_eq!(choose(c, FLAC, FALLBACK_ESTIMATE_BPS, 0, None), 0);
    }

    #[test]
    fn an_up_switch_needs_a_clear_margin() {
        let c = &RUNGS;
        // 2.4 Mb/s fits 0.85 of 3 Mb/s but is above 0.7 of it: stay.
        assert_eq!(choose(c, FLAC, 3_000_000.0, 0, Some(0)), 0);
        assert_eq!(choose(c, FLAC, 3_500_000.0, 0, Some(0)), 1);
        // Down is never held back.
        assert_eq!(choose(c, FLAC, 1_000_000.0, 0, Some(1)), 0);
    }
}
