//! Scenario tests of the selector in simulation: vinyl's scores beaten, no rebuffers where the
//! network allows, no oscillation on a steady link, down and back up across a bandwidth drop.

use super::*;
use amzmusic_emulator::shaping::{Schedule, SCENARIOS};
use rand::{Rng as _, SeedableRng};

/// The emulator's scenario, replayed by the simulator: both see the same network.
fn emulated(name: &str, seed: u32) -> Option<NetworkTrace> {
    let s = Schedule::scenario(name, seed)?;
    Some(NetworkTrace::from_phases(
        &s.name,
        s.phases
            .iter()
            .map(|p| (p.duration, p.bandwidth_bps, p.latency_ms, p.outage)),
    ))
}

/// The five scenarios on the HD track, cold start.
fn run_scenarios(seed: u32, opts: &SimOptions) -> Vec<(&'static str, SimResult)> {
    let traces: Vec<NetworkTrace> = SCENARIOS
        .iter()
        .map(|n| emulated(n, seed).expect("known scenario"))
        .collect();
    SCENARIOS
        .iter()
        .copied()
        .zip(run_traces(&traces, opts).into_iter().map(|(_, r)| r))
        .collect()
}

/// A seeded generator for the random-input test.
struct Rng(rand_chacha::ChaCha8Rng);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0.gen::<f64>()
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + self.next() * (hi - lo)
    }
}

fn name(r: &SimResult, rep: usize) -> &str {
    &r.ladder.candidates()[rep].id
}

fn print_run(scenario: &str, r: &SimResult) {
    let s = &r.score;
    let reps: Vec<&str> = r.segment_reps.iter().map(|&k| name(r, k)).collect();
    println!(
        "{scenario:<13} score {:.3}  quality {:.3}  rebuffer {:.3}  stall {:.3}  startup {:.3}  \
         ({} rebuffers, {:.1} s stalled, start {:.2} s, avg {:.0} kb/s, {} switches) {:?}",
        s.total,
        s.quality,
        s.rebuffer,
        s.stall,
        s.startup,
        s.rebuffers,
        s.stall_s,
        r.startup_s,
        s.avg_bitrate / 1000.0,
        r.stats.switches,
        reps
    );
}

/// The five scenarios, cold start: seed 1 (vinyl's default seed) in detail, then the mean over
/// seeds 1–20; whole-segment playback, then progressive. The figures of ABR.md.
#[test]
fn abr_scenario_scores() {
    // The element streams progressively and, choosing across codecs, starts in the manifest's
    // preferred family (FLAC here).
    let element = AbrConfig {
        start_codec: Some(CodecFamily::Flac),
        ..AbrConfig::default()
    };
    // The element swaps an upgrade in only before the segment goes downstream. (In a playbin3
    // run, the queue ahead of a segment 16.9 s from playing held 16.7 s: little waits
    // downstream. 1 s is a margin.)
    for (mode, progressive, config, downstream_s) in [
        ("whole segments", false, AbrConfig::default(), 0.0),
        ("progressive", true, AbrConfig::default(), 0.0),
        (
            "as the element (progressive, FLAC start)",
            true,
            element,
            1.0,
        ),
    ] {
        let opts = SimOptions {
            progressive,
            downstream_s,
            config,
            ..SimOptions::default()
        };
        // ABR_SIM_SEED=N details another seed.
        let seed = std::env::var("ABR_SIM_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        println!("== {mode}, seed {seed} (vinyl, seed 1: stable-high 0.902, stable-low 0.610, wifi-to-4g 0.878, outage 0.368, noisy-mobile 0.719)");
        for (scenario, r) in run_scenarios(seed, &opts) {
            print_run(scenario, &r);
            for d in &r.decisions {
                println!(
                    "    t={:7.2} seg {} -> {} ({:?})",
                    d.0,
                    d.1,
                    name(&r, d.2),
                    d.3
                );
            }
        }
        println!("== {mode}, mean of seeds 1-20");
        for scenario in SCENARIOS {
            let runs: Vec<SimResult> = (1..=20)
                .map(|seed| simulate(&SimTrack::hd(), &emulated(scenario, seed).unwrap(), &opts))
                .collect();
            let mean =
                |f: &dyn Fn(&Score) -> f64| runs.iter().map(|r| f(&r.score)).sum::<f64>() / 20.0;
            let worst = runs
                .iter()
                .map(|r| r.score.total)
                .fold(f64::INFINITY, f64::min);
            println!(
                "{scenario:<13} score {:.3} (worst {:.3})  quality {:.3}  rebuffer {:.3}  stall {:.3}  startup {:.3}  rebuffers in 20 runs: {}",
                mean(&|s| s.total),
                worst,
                mean(&|s| s.quality),
                mean(&|s| s.rebuffer),
                mean(&|s| s.stall),
                mean(&|s| s.startup),
                runs.iter().map(|r| r.score.rebuffers).sum::<u32>()
            );
            if std::env::var_os("ABR_SIM_SEEDS").is_some() {
                let per_seed: Vec<String> = runs
                    .iter()
                    .map(|r| format!("{:.3}/{}", r.score.total, r.score.rebuffers))
                    .collect();
                println!("    per seed (score/rebuffers): {}", per_seed.join(" "));
            }
        }
    }
}

#[test]
fn scenarios_mirror_the_emulator_and_vinyl() {
    // vinyl's results.json (seed 1) records wifi-to-4g's first phases as 627393.756 B/s and
    // 73616.533 B/s: the same generator and draw order give the same links (the emulator's
    // `seed_1_regenerates_vinyls_published_schedules` checks them all), each from the poll
    // vinyl applies it at (17 s, 39 s).
    let w = emulated("wifi-to-4g", 1).unwrap();
    assert_eq!(w.phases[0].duration_s, 17.0);
    assert_eq!(w.phases[1].duration_s, 22.0);
    assert!((w.phases[0].bandwidth_bps / 8.0 - 627_393.756_032_688_5).abs() < 1e-6);
    assert!((w.phases[1].bandwidth_bps / 8.0 - 73_616.533_046_879_34).abs() < 1e-6);
    assert!((w.phases[2].bandwidth_bps / 8.0 - 1_255_650.248_494_930_6).abs() < 1e-6);
    let o = emulated("outage", 1).unwrap();
    assert!(o.phases.iter().skip(1).step_by(2).all(|p| p.outage));
    // The first outage is applied at the poll of 9 s and lifted at 29 s: a request sent at
    // 10 s waits until then.
    assert!((o.request_delay(10.0) - (29.0 - 10.0 + 0.03)).abs() < 0.01);
    let n = emulated("noisy-mobile", 1).unwrap();
    assert!(n.at(22.0).0.outage && !n.at(5.0).0.outage);
    assert!(emulated("moon-link", 1).is_none());
    // No phases: a dead link, the session times out instead of panicking.
    let dead = NetworkTrace::steps("dead", &[]);
    let opts = SimOptions {
        max_time_s: 5.0,
        ..SimOptions::default()
    };
    let r = simulate(&SimTrack::hd(), &dead, &opts);
    assert!(!r.ended && r.score.total == 0.0);
}

#[test]
fn abr_zero_rebuffers_where_the_network_allows() {
    for progressive in [false, true] {
        let opts = SimOptions {
            progressive,
            ..SimOptions::default()
        };
        for scenario in ["stable-high", "stable-low", "wifi-to-4g"] {
            for seed in 1..=20 {
                let trace = emulated(scenario, seed).unwrap();
                let r = simulate(&SimTrack::hd(), &trace, &opts);
                assert!(r.ended, "{scenario} seed {seed} did not finish");
                assert_eq!(
                    r.score.rebuffers, 0,
                    "{scenario} seed {seed} ({progressive})"
                );
            }
        }
    }
}

#[test]
fn abr_beats_vinyls_published_audio_scores() {
    // All but noisy-mobile, in both playback models: progressive (the element streams each
    // segment into qtdemux as it arrives) and whole segments (as vinyl's MSE appends).
    // noisy-mobile is out of reach with the honest ladder (emulator content v4: Opus 150k
    // scores √(156522/1614328) = 0.311, Opus 320k 0.450, where the tail-inflated attributes
    // scored 0.402 and 0.576). The choices are the ones that scored 0.720 / 0.670 before; the
    // metric alone took 0.043 off. The best fixed plan knowing the whole future of the seed-1
    // link (every one of the 4^6 plans, no rebuffer, start within 4 s) scores 0.728 progressive
    // (Opus 150k, 3 × Opus 320k, 2 × FLAC 44.1/16, start 1.22 s) and 0.662 with whole segments
    // (start 3.37 s at best): 0.009 above vinyl for a clairvoyant plan, which a causal
    // selector over a ±50 % noisy link cannot promise. The bounds below are what this selector
    // reaches (0.677 / 0.627, ABR.md), so that a regression shows.
    for progressive in [true, false] {
        let opts = SimOptions {
            progressive,
            ..SimOptions::default()
        };
        for (scenario, r) in run_scenarios(1, &opts) {
            let vinyl = VINYL_AUDIO_SCORES
                .iter()
                .find(|v| v.0 == scenario)
                .unwrap()
                .1;
            if scenario == "noisy-mobile" {
                let bound = if progressive { 0.67 } else { 0.62 };
                assert!(
                    r.score.total > bound,
                    "noisy-mobile (progressive {progressive}): {:.3} <= {bound}",
                    r.score.total
                );
                continue;
            }
            assert!(
                r.score.total > vinyl,
                "{scenario} (progressive {progressive}): {:.3} <= vinyl {vinyl}",
                r.score.total
            );
        }
    }
}

#[test]
fn abr_warm_start_is_not_the_lowest() {
    // A previous session measured 10 Mb/s: the first segment is FLAC, still quick to start.
    let opts = SimOptions {
        previous: Some(SessionEstimate {
            bps: 10e6,
            latency: Duration::from_millis(20),
        }),
        ..SimOptions::default()
    };
    let trace = emulated("stable-high", 1).unwrap();
    let r = simulate(&SimTrack::hd(), &trace, &opts);
    assert_eq!(r.decisions[0].3, Reason::Startup);
    assert_eq!(name(&r, r.decisions[0].2), "flac-44k16");
    assert!(r.startup_s < 1.2, "{}", r.startup_s);
    // The same previous estimate on a 500 kb/s link: the first download finds out, the
    // segment is abandoned for Opus, and the start-up stays bounded with no rebuffer.
    let trace = emulated("stable-low", 1).unwrap();
    let r = simulate(&SimTrack::hd(), &trace, &opts);
    assert!(
        r.decisions.iter().any(|d| d.3 == Reason::Abandon),
        "{:?}",
        r.decisions
    );
    assert_eq!(r.score.rebuffers, 0);
    assert!(r.startup_s < 6.0, "{}", r.startup_s);
}

#[test]
fn abr_is_deterministic() {
    let trace = emulated("noisy-mobile", 3).unwrap();
    let a = simulate(&SimTrack::hd(), &trace, &SimOptions::default());
    let b = simulate(&SimTrack::hd(), &trace, &SimOptions::default());
    assert_eq!(a.timeline, b.timeline);
    assert_eq!(a.decisions, b.decisions);
}

#[test]
fn abr_steady_link_does_not_oscillate() {
    // Ten minutes of the HD ladder over constant links from below Opus 320k to above FLAC 48/24.
    let track = SimTrack::hd_repeated(10);
    for kbps in [300.0, 450.0, 700.0, 1000.0, 1500.0, 2500.0, 10_000.0] {
        let trace = NetworkTrace::steps("steady", &[(3600.0, kbps * 1e3, 40.0)]);
        let r = simulate(&track, &trace, &SimOptions::default());
        let reps: Vec<&str> = r.segment_reps.iter().map(|&k| name(&r, k)).collect();
        assert!(r.ended, "{kbps} kb/s");
        assert_eq!(r.score.rebuffers, 0, "{kbps} kb/s: {reps:?}");
        assert_eq!(r.stats.down_switches, 0, "{kbps} kb/s: {reps:?}");
        assert!(r.stats.up_switches <= 3, "{kbps} kb/s: {reps:?}");
    }
}

#[test]
fn abr_drop_goes_down_without_stall_and_comes_back() {
    // Ten minutes of track; 8 Mb/s, then 300 kb/s for 200 s, then 8 Mb/s again.
    let track = SimTrack::hd_repeated(10);
    let trace = NetworkTrace::steps(
        "drop",
        &[
            (40.0, 8e6, 20.0),
            (200.0, 300e3, 150.0),
            (3600.0, 8e6, 20.0),
        ],
    );
    let r = simulate(&track, &trace, &SimOptions::default());
    let reps: Vec<&str> = r.segment_reps.iter().map(|&k| name(&r, k)).collect();
    assert!(r.ended);
    assert_eq!(r.score.rebuffers, 0, "{reps:?}");
    let opus = |rep: usize| r.ladder.codec(rep) == CodecFamily::Opus;
    let fetched_during = |from: f64, to: f64| {
        r.decisions
            .iter()
            .filter(move |d| d.0 >= from && d.0 < to)
            .map(|d| d.2)
    };
    assert!(
        fetched_during(0.0, 40.0).any(|rep| !opus(rep)),
        "FLAC first: {reps:?}"
    );
    assert!(
        fetched_during(40.0, 240.0).any(opus),
        "Opus in the drop: {reps:?}"
    );
    let top = r.ladder.len() - 1;
    assert_eq!(
        *r.segment_reps.last().unwrap(),
        top,
        "back to the top: {reps:?}"
    );
    assert!(r.stats.codec_switches >= 2);
}

#[test]
fn abr_long_track_through_outages() {
    // Ten minutes through the outage scenario (1 Mb/s for 6-10 s, then 20-40 s of nothing):
    // counting the outages against the link's rate keeps to what it sustains (Opus), and the
    // buffer built before each outage covers nearly all of them.
    let track = SimTrack::hd_repeated(10);
    let mut rebuffers = 0;
    for seed in 1..=5 {
        let r = simulate(
            &track,
            &emulated("outage", seed).unwrap(),
            &SimOptions::default(),
        );
        assert!(r.ended, "seed {seed}");
        let flac = r
            .segment_reps
            .iter()
            .filter(|&&k| r.ladder.codec(k) == CodecFamily::Flac)
            .count();
        assert!(flac <= 2, "seed {seed}: {flac} FLAC segments");
        rebuffers += r.score.rebuffers;
    }
    assert!(rebuffers <= 2, "{rebuffers} rebuffers in 5 × 10 minutes");
}

#[test]
fn abr_random_ladders_and_links_never_panic_or_hang() {
    // Odd ladders (one candidate, sizes far from `bandwidth`, no sizes, short segments) over odd
    // links (outages, 50 kb/s, 500 ms): every session ends, every answer is a candidate.
    let mut rng = Rng(rand_chacha::ChaCha8Rng::seed_from_u64(7));
    for case in 0..60 {
        let reps = 1 + (rng.next() * 5.0) as usize;
        let segs = 1 + (rng.next() * 20.0) as usize;
        let dur = Duration::from_millis(1000 + (rng.next() * 9000.0) as u64);
        let mut candidates = Vec::new();
        for i in 0..reps {
            let bw = rng.range(32e3, 3e6) as u64;
            let sizes = (rng.next() < 0.5).then(|| {
                (0..segs)
                    .map(|_| (bw as f64 / 8.0 * dur.as_secs_f64() * rng.range(0.5, 1.5)) as u64)
                    .collect()
            });
            candidates.push(Candidate {
                id: format!("r{i}"),
                codec: if rng.next() < 0.5 {
                    CodecFamily::Opus
                } else {
                    CodecFamily::Flac
                },
                adaptation_set: 0,
                bandwidth_bps: bw,
                quality_ranking: (rng.next() < 0.5).then_some(i as u32),
                segment_bytes: sizes,
                segment_durations: None,
            });
        }
        let track = SimTrack {
            init_bytes: vec![700; reps],
            candidates,
            durations: vec![dur; segs],
            manifest_bytes: 5000,
        };
        let mut steps = vec![(rng.range(1.0, 30.0), rng.range(50e3, 20e6), 30.0)];
        for _ in 0..(rng.next() * 5.0) as usize {
            let bw = if rng.next() < 0.2 {
                0.0
            } else {
                rng.range(50e3, 20e6)
            };
            steps.push((rng.range(1.0, 30.0), bw, rng.range(5.0, 500.0)));
        }
        let opts = SimOptions {
            step_s: 0.01,
            max_time_s: 3000.0,
            ..SimOptions::default()
        };
        let r = simulate(&track, &NetworkTrace::steps("random", &steps), &opts);
        assert!(r.ended, "case {case}: {steps:?}");
        assert!(r.decisions.iter().all(|d| d.2 < reps), "case {case}");
    }
}
