// SPDX-License-Identifier: MPL-2.0
//! The selector's unit tests: each rule on a small ladder, no pipeline.

use super::*;
use crate::abr::ladder::{Candidate, CodecFamily};

const S: Duration = Duration::from_secs(1);

fn cand(id: &str, codec: CodecFamily, bw: u64) -> Candidate {
    Candidate {
        id: id.into(),
        codec,
        adaptation_set: 0,
        bandwidth_bps: bw,
        quality_ranking: None,
        segment_bytes: None,
        segment_durations: None,
    }
}

/// 100/200/400 kb/s Opus and 800 kb/s FLAC, bandwidth only, `n` segments of 10 s.
fn ladder(n: usize) -> Ladder {
    Ladder::new(
        vec![
            cand("o100", CodecFamily::Opus, 100_000),
            cand("o200", CodecFamily::Opus, 200_000),
            cand("o400", CodecFamily::Opus, 400_000),
            cand("f800", CodecFamily::Flac, 800_000),
        ],
        &vec![10 * S; n],
    )
    .unwrap()
}

/// A config with only the throughput rule and the deadline guard active.
fn throughput_only() -> AbrConfig {
    AbrConfig {
        bola_low: 10_000 * S,
        bola_high: 20_000 * S,
        hold_buffer: 10_000 * S,
        min_buffer_for_up: Duration::ZERO,
        build_buffer: Duration::ZERO,
        cross_codec_margin: 0.0,
        cross_codec_min_interval: Duration::ZERO,
        ..AbrConfig::default()
    }
}

/// A selector whose estimate is exactly `bps` with zero latency.
fn measured(l: Ladder, config: AbrConfig, bps: f64) -> QualitySelector {
    let mut q = QualitySelector::new(l, config);
    q.on_download(&Download {
        bytes: (bps / 8.0 * 10.0) as u64,
        ttfb: Duration::ZERO,
        total: 10 * S,
    });
    q
}

fn playing(secs: u32) -> BufferLevel {
    BufferLevel {
        ahead: secs * S,
        bytes: 0,
        playing: true,
    }
}

#[test]
fn startup_from_default_or_previous_estimate() {
    let stopped = BufferLevel {
        ahead: Duration::ZERO,
        bytes: 0,
        playing: false,
    };
    // Cold: 1 Mb/s assumed, the 1 s budget fits only 100 kb/s × 10 s (+ 0.1 s latency).
    let mut q = QualitySelector::new(ladder(6), AbrConfig::default());
    let c = q.choose(0, &stopped, Duration::ZERO);
    assert_eq!((c.rep, c.reason), (0, Reason::Startup));
    // Warm: last session measured 5 Mb/s, 20 ms: 800 kb/s × 10 s arrives in 1.62 s, too slow
    // for the budget; 400 kb/s in 0.82 s fits.
    let prev = SessionEstimate {
        bps: 5e6,
        latency: Duration::from_millis(20),
    };
    let mut q = QualitySelector::new(ladder(6), AbrConfig::default()).with_previous(Some(prev));
    assert_eq!(q.choose(0, &stopped, Duration::ZERO).rep, 2);
    assert_eq!(q.session_estimate(), Some(prev));
}

#[test]
fn start_codec_keeps_the_first_choice_in_the_preferred_family() {
    let stopped = BufferLevel {
        ahead: Duration::ZERO,
        bytes: 0,
        playing: false,
    };
    let flac_first = AbrConfig {
        start_codec: Some(CodecFamily::Flac),
        ..AbrConfig::default()
    };
    // Cold, nothing FLAC fits the budget: the lowest FLAC, not the Opus that would.
    let mut q = QualitySelector::new(ladder(6), flac_first.clone());
    assert_eq!(q.choose(0, &stopped, Duration::ZERO).rep, 3);
    // A rebuffer may still fall back to the lowest rung of any family.
    let mut q = QualitySelector::new(ladder(6), flac_first);
    q.choose(0, &stopped, Duration::ZERO);
    q.choose(1, &playing(5), S);
    assert_eq!(q.choose(2, &stopped, 2 * S).rep, 0);
}

#[test]
fn throughput_rule_upgrades_at_085_keeps_until_095() {
    // 450 kb/s: 400 needs 0.89 of it (> 0.85): not an up-switch target...
    let mut q = measured(ladder(60), throughput_only(), 450e3);
    assert_eq!(q.choose(1, &playing(40), S).rep, 1);
    // (Near the end of the track, the buffer would have bought 400 kb/s.)
    assert_eq!(q.choose(55, &playing(40), S).rep, 2);
    q.current = Some(1);
    // ...but once at 400, it is kept (0.89 < 0.95).
    q.current = Some(2);
    assert_eq!(q.choose(2, &playing(40), S).rep, 2);
    // 480 kb/s: 400 needs 0.83: up.
    let mut q = measured(ladder(60), throughput_only(), 480e3);
    assert_eq!(q.choose(1, &playing(40), S).rep, 2);
    // 415 kb/s: 400 needs 0.964 (> 0.95): down, to what needs at most 0.85 (200).
    let mut q = measured(ladder(60), throughput_only(), 415e3);
    q.current = Some(2);
    let c = q.choose(1, &playing(40), S);
    assert_eq!((c.rep, c.reason), (1, Reason::Throughput));
}

#[test]
fn exact_sizes_not_the_bandwidth_attribute_decide() {
    // The attribute says 800 kb/s, the real segments are 400 kb/s: 500 kb/s is enough.
    let mut f = cand("f", CodecFamily::Flac, 800_000);
    f.segment_bytes = Some(vec![500_000; 60]);
    let l = Ladder::new(
        vec![cand("o", CodecFamily::Opus, 100_000), f],
        &vec![10 * S; 60],
    )
    .unwrap();
    let mut q = measured(l, throughput_only(), 500e3);
    assert_eq!(q.choose(1, &playing(40), S).rep, 1);
}

#[test]
fn exoplayer_buffer_rules() {
    let cfg = AbrConfig {
        build_buffer: Duration::ZERO,
        bola_low: 10_000 * S,
        bola_high: 20_000 * S,
        cross_codec_margin: 0.0,
        ..AbrConfig::default()
    };
    // 1.2 Mb/s sustains 800 kb/s, but under 10 s buffered: no up-switch...
    let mut q = measured(ladder(60), cfg.clone(), 1.2e6);
    q.current = Some(0);
    let c = q.choose(1, &playing(9), S);
    assert_eq!((c.rep, c.reason), (0, Reason::LowBuffer));
    assert_eq!(q.choose(2, &playing(11), S).rep, 3);
    // ...unless the segment is quick to fetch: at 10 Mb/s, 0.94 s, three times over in the
    // 6 s above the reserve.
    let mut q = measured(ladder(60), cfg.clone(), 10e6);
    q.current = Some(0);
    assert_eq!(q.choose(1, &playing(9), S).rep, 3);
    // 25 s or more buffered: no down-switch although 800 kb/s no longer fits 500 kb/s...
    let mut q = measured(ladder(60), cfg.clone(), 500e3);
    q.current = Some(3);
    let c = q.choose(1, &playing(25), S);
    assert_eq!((c.rep, c.reason), (3, Reason::BufferHold));
    // ...but under 25 s, down it goes.
    assert!(q.choose(2, &playing(24), S).rep < 3);
    // And the hold never risks the deadline: 800 kb/s × 10 s takes 16.9 s at 0.95 × 500 kb/s,
    // more than 18 s − 3 s reserve... at 19 s it fits, at 18 s it does not.
    let mut cfg2 = cfg;
    cfg2.hold_buffer = 10 * S;
    let mut q = measured(ladder(60), cfg2, 500e3);
    q.current = Some(3);
    assert_eq!(q.choose(1, &playing(20), S).rep, 3);
    q.current = Some(3);
    assert!(q.choose(2, &playing(18), S).rep < 3);
}

#[test]
fn deadline_guard_lowers_until_the_segment_arrives_in_time() {
    // 1 Mb/s; 7 s buffered, 3 s reserve: 4 s to fetch at 0.95 Mb/s: 3.8 Mbit, so 200 kb/s
    // (2 Mbit) fits and 400 (4 Mbit) does not, whatever the other rules say.
    let mut q = measured(ladder(60), throughput_only(), 1e6);
    let c = q.choose(1, &playing(7), S);
    assert_eq!((c.rep, c.reason), (1, Reason::Deadline));
    // With nothing buffered the lowest is all there is.
    assert_eq!(q.choose(2, &playing(0), S).rep, 0);
}

#[test]
fn buffer_first_then_quality() {
    let cfg = AbrConfig {
        min_buffer_for_up: Duration::ZERO,
        ..AbrConfig::default()
    };
    // 1.5 Mb/s: 800 kb/s is sustainable, but under 20 s buffered only what downloads 3×
    // faster than real time (≤ 3.3 s per 10 s segment at 0.85 × 1.5 Mb/s: 400 kb/s).
    let mut q = measured(ladder(60), cfg.clone(), 1.5e6);
    let c = q.choose(1, &playing(12), S);
    assert_eq!((c.rep, c.reason), (2, Reason::BufferBuild));
    assert_eq!(q.choose(2, &playing(20), S).rep, 3);
    // After a 30 s outage, the buffer to build covers it (1.25 × 30 + 3 s), and the link's
    // availability counts against what it sustains: 800 kb/s is out of reach at 30 s.
    let mut q = measured(ladder(60), cfg, 1.5e6);
    q.on_download(&Download {
        bytes: 100_000,
        ttfb: 30 * S,
        total: 31 * S,
    });
    assert!((q.build_level() - 40.5).abs() < 0.1, "{}", q.build_level());
    assert!(q.est.availability() < 0.5, "{}", q.est.availability());
    assert!(q.choose(1, &playing(30), S).rep < 3);
    // A request given up after 30 s without an answer counts the same.
    let mut q = measured(ladder(60), AbrConfig::default(), 1.5e6);
    q.on_request_timeout(30 * S);
    assert!((q.build_level() - 40.5).abs() < 0.1, "{}", q.build_level());
}

#[test]
fn a_stall_mid_download_is_an_outage_not_a_slow_link() {
    // 1 Mb/s, 30 ms; a 400 kB segment: 100 kB in the first 0.83 s, then nothing for 30 s
    // (the link went down mid-transfer; the first byte was on time), then the rest at 1 Mb/s.
    let mut q = QualitySelector::new(ladder(60), AbrConfig::default());
    let ms = Duration::from_millis;
    let at = |elapsed: Duration, got: u64| InFlight {
        rep: 0,
        segment: 3,
        bytes_total: 400_000,
        bytes_received: got,
        elapsed,
        ttfb: Some(ms(30)),
    };
    let mut t = ms(280);
    while t <= ms(830) {
        let got = (t - ms(30)).as_secs_f64() * 125_000.0;
        assert_eq!(q.check_abandon(&at(t, got as u64), &playing(40), t), None);
        t += ms(250);
    }
    let stalled_bytes = (ms(780) - ms(30)).as_secs_f64() * 125_000.0;
    while t < ms(30_830) {
        q.check_abandon(&at(t, stalled_bytes as u64), &playing(40), t);
        t += ms(250);
    }
    // Already known as an outage while it lasts.
    assert!(
        q.est.longest_outage_s() > 29.0,
        "{}",
        q.est.longest_outage_s()
    );
    q.on_download(&Download {
        bytes: 400_000,
        ttfb: ms(30),
        total: ms(33_230),
    });
    // The rate is the link's when up, not 400 kB over 33 s (97 kb/s)...
    let bps = q.est.estimate_bps().unwrap();
    assert!((bps - 1e6).abs() < 0.05e6, "{bps}");
    // ...and the stall counts as an outage: buffer to build, availability.
    let o = q.est.longest_outage_s();
    assert!((29.5..31.0).contains(&o), "{o}");
    assert!(q.build_level() > 39.0, "{}", q.build_level());
    assert!(q.est.availability() < 0.2, "{}", q.est.availability());
    // Bytes that keep coming, even slowly, are no outage; nor are far-apart calls.
    let mut q = QualitySelector::new(ladder(60), AbrConfig::default());
    for (s, got) in [(1, 10_000), (5, 50_000), (9, 90_000)] {
        q.check_abandon(&at(s * S, got), &playing(40), S);
    }
    q.on_download(&Download {
        bytes: 400_000,
        ttfb: ms(30),
        total: 40 * S,
    });
    assert_eq!(q.est.longest_outage_s(), 0.0);
    assert!((q.est.estimate_bps().unwrap() - 80e3).abs() < 1e3);
}

#[test]
fn a_large_buffer_is_spent_evenly_within_the_codec() {
    // 300 kb/s sustains 200 kb/s (not 400) by the throughput rule; with 200 s buffered and
    // 30 segments left, every one at 400 kb/s still arrives in time: take it now, rather
    // than hoard the buffer for the end. Not across codecs (FLAC), not below bola_high.
    let cfg = AbrConfig {
        min_buffer_for_up: Duration::ZERO,
        ..AbrConfig::default()
    };
    let mut q = measured(ladder(60), cfg.clone(), 300e3);
    q.current = Some(1);
    let c = q.choose(30, &playing(200), S);
    assert_eq!((c.rep, c.reason), (2, Reason::EndGame));
    let mut q = measured(ladder(60), cfg, 300e3);
    q.current = Some(1);
    assert_eq!(q.choose(30, &playing(29), S).rep, 1);
}

#[test]
fn end_of_track_spends_the_buffer_on_quality() {
    // 300 kb/s: only 200 kb/s is sustainable, but with 36 s buffered and 2 segments left,
    // 400 kb/s for both arrives in time (4 Mbit each at 0.85 × 300 kb/s = 15.7 s).
    let mut q = measured(ladder(6), throughput_only(), 300e3);
    q.current = Some(1);
    let c = q.choose(4, &playing(36), S);
    assert_eq!((c.rep, c.reason), (2, Reason::EndGame));
    // With 5 segments left it would not: the throughput rule stands.
    let mut q = measured(ladder(6), throughput_only(), 300e3);
    q.current = Some(1);
    assert_eq!(q.choose(1, &playing(36), S).rep, 1);
}

#[test]
fn cross_codec_up_switch_costs_more() {
    let cfg = AbrConfig {
        cross_codec_margin: 0.2,
        cross_codec_min_interval: 20 * S,
        ..throughput_only()
    };
    // 1 Mb/s: 800 kb/s FLAC needs 0.8 (< 0.85) but not the 0.85 / 1.2 = 0.71 a codec
    // change asks for: stay with the best Opus.
    let mut q = measured(ladder(60), cfg.clone(), 1e6);
    q.current = Some(2);
    let c = q.choose(1, &playing(40), S);
    assert_eq!((c.rep, c.reason), (2, Reason::CodecCost));
    // 1.2 Mb/s: enough headroom, FLAC.
    let mut q = measured(ladder(60), cfg, 1.2e6);
    q.current = Some(2);
    assert_eq!(q.choose(1, &playing(40), 100 * S).rep, 3);
    assert_eq!(q.stats().codec_switches, 1);
    // Forced down to Opus at t = 105 s (deadline), then back up too soon is refused.
    let c = q.choose(2, &playing(5), 105 * S);
    assert_eq!((c.rep, c.reason), (1, Reason::Deadline));
    assert_eq!(q.choose(3, &playing(40), 110 * S).reason, Reason::CodecCost);
    assert_eq!(q.choose(4, &playing(40), 126 * S).rep, 3);
}

#[test]
fn a_start_too_slow_for_real_time_is_dropped_before_it_plays() {
    // Cold, the first segment is the FLAC rung (1 MB for 10 s). On a 500 kb/s link its
    // first bytes come at that rate: it would take 16 s, so it goes to the best Opus rung
    // that comes within 8 s at that rate (400 kb/s would need 8.1 s), before it plays.
    let cfg = AbrConfig {
        start_codec: Some(CodecFamily::Flac),
        ..AbrConfig::default()
    };
    let stopped = BufferLevel {
        ahead: Duration::ZERO,
        bytes: 0,
        playing: false,
    };
    let mut q = QualitySelector::new(ladder(6), cfg.clone());
    let c = q.choose(0, &stopped, Duration::ZERO);
    assert_eq!((c.rep, c.reason), (3, Reason::Startup));
    let at = |bps: f64| InFlight {
        rep: 3,
        segment: 0,
        bytes_total: 1_000_000,
        bytes_received: (bps / 8.0 * 0.05) as u64,
        elapsed: Duration::from_millis(130),
        ttfb: Some(Duration::from_millis(80)),
    };
    let c = q
        .check_start(&at(500e3), Duration::from_millis(130))
        .unwrap();
    assert_eq!((c.rep, c.reason), (1, Reason::Abandon));
    assert_eq!(q.stats().abandons, 1);
    // Once per segment.
    assert_eq!(q.check_start(&at(500e3), Duration::from_millis(200)), None);
    // On a 10 Mb/s link it stays; and never once playing.
    let mut q = QualitySelector::new(ladder(6), cfg);
    q.choose(0, &stopped, Duration::ZERO);
    assert_eq!(q.check_start(&at(10e6), Duration::from_millis(130)), None);
    q.choose(1, &playing(9), S);
    let mut f = at(100e3);
    f.segment = 1;
    assert_eq!(q.check_start(&f, S), None);
}

#[test]
fn abandon_a_download_that_would_arrive_too_late() {
    let mut q = measured(ladder(60), throughput_only(), 2e6);
    // 800 kb/s segment (1 MB), 100 kB in after 4 s at 200 kb/s: 36 s to go, 12 s buffered.
    let f = InFlight {
        rep: 3,
        segment: 5,
        bytes_total: 1_000_000,
        bytes_received: 100_000,
        elapsed: 4 * S + Duration::from_millis(100),
        ttfb: Some(Duration::from_millis(100)),
    };
    let c = q.check_abandon(&f, &playing(12), S).unwrap();
    // At 200 kb/s, 9 s of budget: 100 kb/s (1 Mbit, 5.1 s) fits, 200 kb/s (10.1 s) not.
    assert_eq!((c.rep, c.reason), (0, Reason::Abandon));
    // Once per segment.
    assert_eq!(q.check_abandon(&f, &playing(12), S), None);
    // Not when it will arrive in time, nor before the first byte (an outage: nothing helps).
    let mut q = measured(ladder(60), throughput_only(), 2e6);
    assert_eq!(q.check_abandon(&f, &playing(60), S), None);
    let waiting = InFlight {
        ttfb: None,
        bytes_received: 0,
        ..f
    };
    assert_eq!(q.check_abandon(&waiting, &playing(5), S), None);
}

#[test]
fn fetch_pauses_when_full_and_resumes_below_the_gap() {
    let cfg = AbrConfig {
        max_buffer: 60 * S,
        resume_gap: 10 * S,
        max_buffer_bytes: 3_000_000,
        ..AbrConfig::default()
    };
    let mut q = QualitySelector::new(ladder(60), cfg);
    q.current = Some(2); // 500 kB segments
    let lvl = |s: u32, bytes: u64| BufferLevel {
        ahead: s * S,
        bytes,
        playing: true,
    };
    assert_eq!(q.fetch_advice(&lvl(59, 0)), FetchAdvice::Fetch);
    assert_eq!(q.fetch_advice(&lvl(60, 0)), FetchAdvice::Pause);
    assert_eq!(q.fetch_advice(&lvl(55, 0)), FetchAdvice::Pause);
    assert_eq!(q.fetch_advice(&lvl(50, 0)), FetchAdvice::Fetch);
    // The byte budget too.
    assert_eq!(q.fetch_advice(&lvl(5, 3_000_000)), FetchAdvice::Pause);
    // Resumes only when the next segment fits in the budget.
    assert_eq!(q.fetch_advice(&lvl(5, 2_600_000)), FetchAdvice::Pause);
    assert_eq!(q.fetch_advice(&lvl(5, 2_400_000)), FetchAdvice::Fetch);
}

#[test]
fn seek_starts_again_and_cap_holds() {
    let stopped = BufferLevel {
        ahead: Duration::ZERO,
        bytes: 0,
        playing: false,
    };
    let mut q = measured(ladder(60), throughput_only(), 10e6);
    assert_eq!(q.choose(5, &playing(40), S).rep, 3);
    // Running dry after playing: the fastest way back.
    q.played = true;
    assert_eq!(q.choose(6, &stopped, S).reason, Reason::Rebuffer);
    // After a seek: a start at 10 Mb/s, 800 kb/s × 10 s arrives in 0.8 s.
    q.on_seek();
    let c = q.choose(30, &stopped, S);
    assert_eq!((c.rep, c.reason), (3, Reason::Startup));
    // max-bitrate lowered to the 400 kb/s candidate.
    q.set_cap(Some(2));
    assert_eq!(q.choose(31, &playing(40), S).rep, 2);
    q.set_cap(None);
    assert_eq!(q.choose(32, &playing(40), S).rep, 3);
}

/// Segments `(segment, rep)` buffered at 20 s into the track, the first one playing.
fn at_20s(segs: &[(usize, usize)]) -> Vec<Buffered> {
    segs.iter()
        .map(|&(segment, rep)| Buffered {
            segment,
            rep,
            due_in: (segment as u32 * 10).saturating_sub(20) * S,
        })
        .collect()
}

#[test]
fn idle_link_upgrades_buffered_segments_from_the_end() {
    let mut q = measured(ladder(6), throughput_only(), 1e6);
    // At 20 s, segments 2 (playing) to 5 buffered at 100 kb/s Opus: the last one first, and
    // not to FLAC (that would add a codec change): 400 kb/s Opus.
    let all_low = at_20s(&[(2, 0), (3, 0), (4, 0), (5, 0)]);
    let (k, c) = q.upgrade(&all_low, &playing(40)).unwrap();
    assert_eq!((k, c.rep, c.reason), (5, 2, Reason::Upgrade));
    // FLAC already at the end: segment 3 may become FLAC (no extra change) but 800 kb/s
    // (8.4 s at 0.95 Mb/s) does not arrive 3 s before it plays in 10 s; 400 kb/s does.
    let flac_end = at_20s(&[(2, 0), (3, 0), (4, 3), (5, 3)]);
    let (k, c) = q.upgrade(&flac_end, &playing(40)).unwrap();
    assert_eq!((k, c.rep), (3, 2));
    // Nothing while rebuffering, nothing above the cap.
    let stalled = BufferLevel {
        playing: false,
        ..playing(40)
    };
    assert_eq!(q.upgrade(&all_low, &stalled), None);
    q.set_cap(Some(0));
    assert_eq!(q.upgrade(&all_low, &playing(40)), None);
    assert_eq!(q.stats().upgrades, 2);
}
