// SPDX-License-Identifier: MPL-2.0
//! The soak section: 50 tracks back to back through one `playbin3` in one process (the
//! `about-to-finish` chain an application uses), as fast as they play, cycling through the
//! catalogue's kinds (FLAC HD and UHD, Opus, E-AC-3, cenc and cbcs, a market of its own). Every
//! track must play to its end, and the process's resident set and thread count must stay flat.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::time::Duration;

use super::runner::Ctx;
use super::Results;
use crate::emulator;
use crate::soak::{SoakItem, SoakOutput, SoakSpec};

/// Tracks in a full soak, and in `--quick`.
pub const SOAK_TRACKS: usize = 50;
pub const SOAK_QUICK_TRACKS: usize = 6;
/// Tracks before the resident set is expected to be flat: the first tracks start what lives as
/// long as the process (each plugin's network runtime, GStreamer's thread pools, the decoders'
/// and the allocator's first arenas).
pub const WARMUP_TRACKS: usize = 10;
/// The live heap (what malloc handed out and did not get back, every arena) may grow by at most
/// this much per track after the warm-up (Theil–Sen slope over tracks 10–50, KiB per track):
/// 3.1 MiB over 50 tracks. Anything malloc'd and left behind per track shows here: a segment
/// (0.4–4.7 MiB for these tracks), a pipeline with its elements and pads. A smaller leak (a
/// manifest, 7 KiB) would need a longer soak. In 10 release runs this slope was −29 to +21.
pub const HEAP_SLOPE_BOUND_KIB: f64 = 64.0;
/// The resident set may grow by at most this much per track after the warm-up (Theil–Sen slope
/// over tracks 10–50). Looser than the heap's: with the heap flat, RSS still rose by 9–152
/// KiB/track over tracks 10–50 in 11 release runs. That rise is anonymous memory malloc keeps
/// after frees: with MALLOC_ARENA_MAX=2 it was 0–31 KiB/track, and 200-track runs level off.
/// 256 KiB/track (12.5 MiB over 50 tracks) still fails on a segment or a pipeline left behind
/// per track, and on memory malloc does not count (thread stacks, other mappings).
pub const RSS_SLOPE_BOUND_KIB: f64 = 256.0;
/// The tolerance on each track's duration: the emulator's Opus may end up to 20 ms long.
pub const DURATION_TOLERANCE_MS: f64 = 30.0;

/// The full soak's cycle: (track, quality, market). Consecutive tracks differ in codec, rate or
/// scheme, so every join changes what the decoders and the sink see.
const CYCLE: [(&str, Option<&str>, Option<&str>); 8] = [
    ("B0EMUHD001", None, None),       // FLAC 44.1/48 kHz, cenc
    ("B0EMUAL001", Some("sd"), None), // Opus, cbcs
    ("B0EMUUHD01", None, None),       // FLAC 192 kHz/24, cbcs
    ("B0EMUATM01", None, None),       // E-AC-3 5.1, cenc
    ("B0EMUAL002", None, None),       // FLAC 44.1 kHz, cbcs
    ("B0EMUUHD02", None, None),       // FLAC 96 kHz/24, cenc
    ("B0EMUJP001", None, Some("JP")), // FLAC, cenc, JP market only
    ("B0EMUAL003", Some("sd"), None), // Opus, cbcs
];
/// `--quick`'s cycle: the shortest tracks.
const QUICK_CYCLE: [(&str, Option<&str>, Option<&str>); 3] = [
    ("B0EMUJP001", None, Some("JP")),
    ("B0EMUAL001", Some("sd"), None),
    ("B0EMUAL003", None, None),
];

/// One track of the soak as the report shows it.
#[derive(Debug, Clone, Default)]
pub struct SoakRow {
    pub id: String,
    pub quality: String,
    pub expected_ms: u64,
    /// Samples that reached the sink, as time; the buffers' durations.
    pub played_ms: Option<f64>,
    pub duration_ms: Option<f64>,
    pub formats: String,
    pub rss_kb: u64,
    pub rss_anon_kb: u64,
    pub rss_min_kb: u64,
    pub heap_kb: u64,
    pub threads: usize,
    pub ended_s: f64,
}

#[derive(Debug, Clone, Default)]
pub struct SoakResult {
    pub started: String,
    pub planned: usize,
    pub rows: Vec<SoakRow>,
    /// Everything that makes the soak fail apart from flatness: errors, cut or missing tracks.
    pub problems: Vec<String>,
    pub wall_s: f64,
    pub audio_s: f64,
    pub start_rss_kb: u64,
    pub start_heap_kb: u64,
    pub start_threads: usize,
    pub null_rss_kb: u64,
    pub null_heap_kb: u64,
    pub null_threads: usize,
    pub peak_rss_kb: u64,
    /// From track `slope_from` (1-based) to the last, KiB per track: the RSS slope (Theil–Sen,
    /// judged; least squares, shown), the heap's (Theil–Sen).
    pub rss_slope_kib: Option<f64>,
    pub rss_lsq_slope_kib: Option<f64>,
    pub heap_slope_kib: Option<f64>,
    pub slope_from: usize,
    /// Thread counts over the warm-up tracks and over the tracks after it.
    pub threads_warmup: Option<(usize, usize)>,
    pub threads_after: Option<(usize, usize)>,
    /// None when there are too few tracks to judge (`--quick`).
    pub flat: Option<bool>,
    pub why: String,
    /// `GET /cdn/<track>/manifest…` requests per track in the emulator's log, beside the
    /// plays the plan has.
    pub manifests: BTreeMap<String, (usize, usize)>,
}

impl SoakResult {
    /// Every track played to its end and (when judged) RSS and threads were flat.
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.flat != Some(false)
    }

    /// RSS after track `n` (1-based).
    pub fn rss_after(&self, n: usize) -> Option<u64> {
        self.rows.get(n.checked_sub(1)?).map(|r| r.rss_kb)
    }

    pub fn max_rss_kb(&self) -> Option<u64> {
        self.rows.iter().map(|r| r.rss_kb).max()
    }

    pub fn threads_range(&self) -> Option<(usize, usize)> {
        min_max(self.rows.iter().map(|r| r.threads))
    }
}

fn min_max(v: impl Iterator<Item = usize>) -> Option<(usize, usize)> {
    v.fold(None, |acc, x| match acc {
        None => Some((x, x)),
        Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
    })
}

/// The plan: `n` tracks cycling through `cycle`, with the catalogue's durations.
pub fn plan(n: usize, quick: bool, durations: &BTreeMap<String, u64>) -> Result<Vec<SoakItem>> {
    let cycle: &[(&str, Option<&str>, Option<&str>)] = if quick { &QUICK_CYCLE } else { &CYCLE };
    (0..n)
        .map(|i| {
            let (id, quality, market) = cycle[i % cycle.len()];
            Ok(SoakItem {
                id: id.to_string(),
                quality: quality.map(str::to_string),
                market: market.map(str::to_string),
                duration_ms: *durations
                    .get(id)
                    .with_context(|| format!("{id} is not in the emulator's catalogue"))?,
            })
        })
        .collect()
}

/// Theil–Sen slope of `y` over x = 1, 2, …: the median of the slopes between every two points,
/// which the few tracks sampled while a large download was still in memory do not move (a
/// least-squares fit swung by ±200 KiB/track on them).
pub fn robust_slope(y: &[f64]) -> Option<f64> {
    if y.len() < 2 {
        return None;
    }
    let mut slopes = Vec::with_capacity(y.len() * (y.len() - 1) / 2);
    for i in 0..y.len() {
        for j in i + 1..y.len() {
            slopes.push((y[j] - y[i]) / (j - i) as f64);
        }
    }
    slopes.sort_by(|a, b| a.total_cmp(b));
    let n = slopes.len();
    Some(if n % 2 == 1 {
        slopes[n / 2]
    } else {
        (slopes[n / 2 - 1] + slopes[n / 2]) / 2.0
    })
}

/// Least-squares slope of `y` over x = 1, 2, …
pub fn slope(y: &[f64]) -> Option<f64> {
    if y.len() < 2 {
        return None;
    }
    let n = y.len() as f64;
    let mx = (n + 1.0) / 2.0;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, v) in y.iter().enumerate() {
        let dx = i as f64 + 1.0 - mx;
        sxy += dx * (v - my);
        sxx += dx * dx;
    }
    Some(sxy / sxx)
}

/// Judges a soak's output against its plan: every track there, in order, played to its end,
/// one EOS after the last; then the slope and the thread counts.
pub fn analyse(
    plan: &[SoakItem],
    out: &SoakOutput,
    manifests: &BTreeMap<String, usize>,
) -> SoakResult {
    let mut r = SoakResult {
        planned: plan.len(),
        wall_s: out.wall_s,
        start_rss_kb: out.start_rss_kb,
        start_heap_kb: out.start_heap_kb,
        start_threads: out.start_threads,
        null_rss_kb: out.null_rss_kb,
        null_heap_kb: out.null_heap_kb,
        null_threads: out.null_threads,
        peak_rss_kb: out.peak_rss_kb,
        ..SoakResult::default()
    };
    if let Some(e) = &out.error {
        r.problems.push(format!("error: {e}"));
    }
    if out.timed_out {
        r.problems.push(format!(
            "timed out after {:.0} s, in track {}",
            out.wall_s,
            out.tracks.len()
        ));
    }
    if !out.eos && out.error.is_none() && !out.timed_out {
        r.problems.push("no EOS".into());
    }
    if out.eos_events != 1 {
        r.problems.push(format!(
            "{} EOS events reached the sink (one, after the last track, expected)",
            out.eos_events
        ));
    }
    if out.tracks.len() != plan.len() {
        r.problems.push(format!(
            "{} tracks reached the sink (stream-start events), {} planned",
            out.tracks.len(),
            plan.len()
        ));
    }
    let planned_ids: Vec<&str> = plan.iter().map(|i| i.id.as_str()).collect();
    let sources: Vec<&str> = out.sources.iter().map(String::as_str).collect();
    if sources != planned_ids {
        r.problems.push(format!(
            "playbin3 created {} sources ({}), not the plan's {}",
            sources.len(),
            first_difference(&sources, &planned_ids),
            plan.len()
        ));
    }
    r.problems.extend(out.anomalies.iter().cloned());
    for (i, item) in plan.iter().enumerate() {
        let t = out.tracks.get(i);
        let ms = |ns: u64| ns as f64 / 1e6;
        let row = SoakRow {
            id: item.id.clone(),
            quality: item.quality.clone().unwrap_or_else(|| "auto".into()),
            expected_ms: item.duration_ms,
            played_ms: t.map(|t| ms(t.samples_ns)),
            duration_ms: t.map(|t| ms(t.duration_ns)),
            formats: t.map(|t| t.formats.join(" → ")).unwrap_or_default(),
            rss_kb: t.map_or(0, |t| t.rss_kb),
            rss_anon_kb: t.map_or(0, |t| t.rss_anon_kb),
            rss_min_kb: t.map_or(0, |t| t.rss_min_kb),
            heap_kb: t.map_or(0, |t| t.heap_kb),
            threads: t.map_or(0, |t| t.threads),
            ended_s: t.map_or(0.0, |t| t.ended_s),
        };
        if let Some(t) = t {
            let want = item.duration_ms as f64;
            for (what, got) in [
                ("samples", ms(t.samples_ns)),
                ("buffer durations", ms(t.duration_ns)),
            ] {
                if (got - want).abs() > DURATION_TOLERANCE_MS {
                    r.problems.push(format!(
                        "track {} ({}): {got:.1} ms of {what} for a {want:.0} ms track",
                        i + 1,
                        item.id
                    ));
                }
            }
            if t.first_pts_ns.is_some_and(|p| p > 1_000_000) {
                r.problems.push(format!(
                    "track {} ({}) starts at {:.3} s, not 0",
                    i + 1,
                    item.id,
                    t.first_pts_ns.unwrap_or(0) as f64 / 1e9
                ));
            }
        }
        r.audio_s += row.played_ms.unwrap_or(0.0) / 1000.0;
        if t.is_some() {
            r.rows.push(row);
        }
    }
    let mut plays: BTreeMap<String, usize> = BTreeMap::new();
    for item in plan {
        *plays.entry(item.id.clone()).or_default() += 1;
    }
    for (id, n) in &plays {
        let fetched = manifests.get(id).copied().unwrap_or(0);
        if fetched < *n {
            r.problems.push(format!(
                "{id}: {fetched} manifest requests in the emulator's log for {n} plays"
            ));
        }
        r.manifests.insert(id.clone(), (fetched, *n));
    }

    let n = r.rows.len();
    let warm = if plan.len() >= 2 * WARMUP_TRACKS {
        WARMUP_TRACKS
    } else {
        (plan.len() / 3).max(1)
    };
    r.slope_from = warm;
    if n > warm {
        let series = |f: fn(&SoakRow) -> u64| -> Vec<f64> {
            r.rows[warm - 1..].iter().map(|t| f(t) as f64).collect()
        };
        r.rss_slope_kib = robust_slope(&series(|t| t.rss_kb));
        r.rss_lsq_slope_kib = slope(&series(|t| t.rss_kb));
        r.heap_slope_kib = robust_slope(&series(|t| t.heap_kb));
        r.threads_warmup = min_max(r.rows[..warm].iter().map(|t| t.threads));
        r.threads_after = min_max(r.rows[warm..].iter().map(|t| t.threads));
    }
    if plan.len() < 2 * WARMUP_TRACKS {
        r.why = format!(
            "not judged: {} tracks (the bounds need {} or more)",
            plan.len(),
            2 * WARMUP_TRACKS
        );
    } else if let (Some(rss), Some(heap), Some((_, warm_hi)), Some((_, after_hi))) = (
        r.rss_slope_kib,
        r.heap_slope_kib,
        r.threads_warmup,
        r.threads_after,
    ) {
        let rss_flat = rss < RSS_SLOPE_BOUND_KIB;
        let heap_flat = heap < HEAP_SLOPE_BOUND_KIB;
        let threads_flat = after_hi <= warm_hi;
        r.flat = Some(rss_flat && heap_flat && threads_flat);
        let cmp = |ok: bool| if ok { "<" } else { "**≥**" };
        r.why = format!(
            "over tracks {warm}–{n}, RSS {rss:+.1} KiB/track ({} {RSS_SLOPE_BOUND_KIB:.0}), \
             heap {heap:+.1} KiB/track ({} {HEAP_SLOPE_BOUND_KIB:.0}); threads after track \
             {warm} at most {after_hi}, during the first {warm} at most {warm_hi} ({})",
            cmp(rss_flat),
            cmp(heap_flat),
            if threads_flat {
                "not growing"
            } else {
                "**growing**"
            }
        );
    } else {
        r.why = "not judged: the tracks did not all play".into();
    }
    r
}

fn first_difference(got: &[&str], want: &[&str]) -> String {
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(i) => format!("source {} is {}, the plan's is {}", i + 1, got[i], want[i]),
        None => format!("the first {} as planned", got.len().min(want.len())),
    }
}

/// One emulator process, one soak child.
pub(super) fn run_section(ctx: &Ctx, res: &mut Results) -> Result<()> {
    let opts = ctx.opts;
    let emu = ctx.start_emulator(res, &[])?;
    let durations = emulator::catalog_durations(&ctx.emulator_bin(), &opts.data_dir)?;
    let n = if opts.quick {
        SOAK_QUICK_TRACKS
    } else {
        SOAK_TRACKS
    };
    let plan = plan(n, opts.quick, &durations)?;
    let mut ids: Vec<&str> = plan.iter().map(|i| i.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    eprintln!(
        "amzmusic-bench: preparing the soak's tracks {} …",
        ids.join(", ")
    );
    emu.prepare_encrypted(&ids)?;
    emu.clear_log()?;
    let spec = SoakSpec {
        timeout_s: 60.0 + 30.0 * n as f64,
        plan: plan.clone(),
    };
    let started = super::date();
    let line = ctx.run_ours_child(
        &format!("soak-{n}-tracks"),
        "soak",
        &serde_json::to_string(&spec)?,
        Duration::from_secs_f64(spec.timeout_s + 30.0),
        &emu,
    );
    let mut manifests: BTreeMap<String, usize> = BTreeMap::new();
    let out: SoakOutput = match line.and_then(|l| serde_json::from_str(&l).context("soak JSON")) {
        Ok(o) => o,
        Err(e) => SoakOutput {
            error: Some(format!("{e:#}")),
            ..SoakOutput::default()
        },
    };
    for r in emu.requests()? {
        if r.method != "GET" {
            continue;
        }
        if let Some(rest) = r.path.strip_prefix("/cdn/") {
            if let Some((id, file)) = rest.split_once('/') {
                if file.starts_with("manifest") {
                    *manifests.entry(id.to_string()).or_default() += 1;
                }
            }
        }
    }
    let mut result = analyse(&plan, &out, &manifests);
    result.started = started;
    res.soak = Some(result);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::TrackRecord;

    #[test]
    fn slope_of_a_line_and_of_noise_around_flat() {
        assert_eq!(slope(&[1.0]), None);
        assert_eq!(robust_slope(&[1.0]), None);
        let line: Vec<f64> = (0..41).map(|i| 1000.0 + 3.0 * i as f64).collect();
        assert!((slope(&line).unwrap() - 3.0).abs() < 1e-9);
        assert!((robust_slope(&line).unwrap() - 3.0).abs() < 1e-9);
        let mut spiked = line.clone();
        spiked[38] += 30_000.0;
        assert!((robust_slope(&spiked).unwrap() - 3.0).abs() < 1e-9);
        assert!(slope(&spiked).unwrap() > 50.0);
        let zigzag: Vec<f64> = (0..40)
            .map(|i| if i % 2 == 0 { 1000.0 } else { 1100.0 })
            .collect();
        assert!(slope(&zigzag).unwrap().abs() < 5.0);
    }

    fn durations() -> BTreeMap<String, u64> {
        CYCLE
            .iter()
            .chain(QUICK_CYCLE.iter())
            .map(|(id, _, _)| (id.to_string(), 30_000))
            .collect()
    }

    /// A soak output in which every planned track played fully, RSS growing by `kib` per track.
    fn played(plan: &[SoakItem], kib: u64) -> SoakOutput {
        SoakOutput {
            tracks: plan
                .iter()
                .enumerate()
                .map(|(i, it)| TrackRecord {
                    samples_ns: it.duration_ms * 1_000_000,
                    duration_ns: it.duration_ms * 1_000_000 + 5_000,
                    first_pts_ns: Some(0),
                    rss_kb: 40_000 + kib * i as u64 + if i % 7 == 3 { 30_000 } else { 0 },
                    heap_kb: 10_000 + kib / 4 * i as u64,
                    threads: 30 + i % 2,
                    ..TrackRecord::default()
                })
                .collect(),
            sources: plan.iter().map(|i| i.id.clone()).collect(),
            eos: true,
            eos_events: 1,
            ..SoakOutput::default()
        }
    }

    fn manifests(plan: &[SoakItem]) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for i in plan {
            *m.entry(i.id.clone()).or_default() += 1;
        }
        m
    }

    #[test]
    fn a_full_flat_soak_passes_and_a_leaking_one_fails() {
        let plan = plan(SOAK_TRACKS, false, &durations()).unwrap();
        assert_eq!(plan.len(), 50);
        assert_eq!(plan[8].id, plan[0].id, "the plan cycles");
        let ok = analyse(&plan, &played(&plan, 0), &manifests(&plan));
        assert!(ok.passed(), "{:?} {}", ok.problems, ok.why);
        assert_eq!(ok.flat, Some(true));
        assert_eq!(ok.rss_after(50), Some(40_000));
        // A spike every seventh track (a download still in memory) moves the fit, not the
        // judged slope.
        assert!(ok.rss_lsq_slope_kib.unwrap().abs() > 1.0);
        assert_eq!(ok.rss_slope_kib, Some(0.0));
        let leak = analyse(&plan, &played(&plan, 300), &manifests(&plan));
        assert_eq!(leak.flat, Some(false), "{}", leak.why);
        assert!(!leak.passed());
        // The heap growing by a quarter of that (75 KiB/track) is a leak even with RSS under
        // its own bound.
        let mut heap = played(&plan, 0);
        for (i, t) in heap.tracks.iter_mut().enumerate() {
            t.heap_kb = 10_000 + 75 * i as u64;
        }
        let r = analyse(&plan, &heap, &manifests(&plan));
        assert_eq!(r.flat, Some(false), "{}", r.why);
        let mut threads = played(&plan, 0);
        threads.tracks[40].threads = 40;
        assert_eq!(
            analyse(&plan, &threads, &manifests(&plan)).flat,
            Some(false)
        );
    }

    #[test]
    fn a_cut_track_a_missing_track_or_an_early_eos_fails() {
        let plan = plan(SOAK_TRACKS, false, &durations()).unwrap();
        let mut cut = played(&plan, 0);
        cut.tracks[17].samples_ns -= 100_000_000;
        let r = analyse(&plan, &cut, &manifests(&plan));
        assert!(!r.passed());
        assert!(r.problems[0].contains("track 18"), "{:?}", r.problems);

        let mut short = played(&plan, 0);
        short.tracks.truncate(49);
        short.sources.truncate(49);
        let r = analyse(&plan, &short, &manifests(&plan));
        assert!(!r.passed());
        assert!(
            r.problems.iter().any(|p| p.contains("49 tracks")),
            "{:?}",
            r.problems
        );
        assert_eq!(r.flat, Some(true), "flatness is judged on what played");

        let mut eos = played(&plan, 0);
        eos.eos_events = 2;
        assert!(!analyse(&plan, &eos, &manifests(&plan)).passed());
        let mut unfetched = manifests(&plan);
        unfetched.insert("B0EMUHD001".into(), 1);
        assert!(!analyse(&plan, &played(&plan, 0), &unfetched).passed());
    }

    #[test]
    fn a_quick_soak_is_checked_but_not_judged_flat() {
        let plan = plan(SOAK_QUICK_TRACKS, true, &durations()).unwrap();
        let r = analyse(&plan, &played(&plan, 500), &manifests(&plan));
        assert_eq!(r.flat, None);
        assert!(r.passed(), "{:?}", r.problems);
        assert!(r.why.starts_with("not judged"));
    }
}
