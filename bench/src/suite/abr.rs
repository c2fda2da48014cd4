// SPDX-License-Identifier: MPL-2.0
//! The ABR quality-of-experience section: each network scenario played by both players on one
//! emulator process, which representation played per segment, and vinyl's timeline and score.

use anyhow::{Context, Result};
use std::collections::BTreeMap;

use super::runner::{Ctx, OurKind, Player};
use super::{Results, HD_TRACK};
use crate::emulator::{self, Emulator};
use crate::mpd::Ladder;
use crate::play::RunResult;
use crate::score::{self, Event, Sample, Score};

#[derive(Debug, Clone, Default)]
pub struct PlayerAbr {
    pub score: Option<Score>,
    pub error: Option<String>,
    /// Representations played, run-length encoded in segment order.
    pub played: String,
    pub ended: bool,
    pub timed_out: bool,
    pub buffering_dips: u32,
    pub elements: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AbrRow {
    pub scenario: String,
    pub ours: PlayerAbr,
    pub dash: PlayerAbr,
}

/// One emulator process per scenario (seeded), both players on it in turn.
pub(super) fn run_section(
    ctx: &Ctx,
    res: &mut Results,
    kind: OurKind,
    open: &Ladder,
    list: &Ladder,
) -> Result<()> {
    let opts = ctx.opts;
    for scenario in &opts.scenarios {
        let emu = ctx.start_emulator(res, &["--seed", &opts.seed.to_string()])?;
        emu.prepare(HD_TRACK)?;
        let ours = abr_one(ctx, &emu, Player::Ours, kind, scenario, open, list);
        let dash = abr_one(ctx, &emu, Player::Dash, kind, scenario, open, list);
        res.abr.push(AbrRow {
            scenario: scenario.clone(),
            ours,
            dash,
        });
    }
    Ok(())
}

fn abr_one(
    ctx: &Ctx,
    emu: &Emulator,
    player: Player,
    kind: OurKind,
    scenario: &str,
    open: &Ladder,
    list: &Ladder,
) -> PlayerAbr {
    let mut spec = ctx.spec(player, kind, HD_TRACK, emu);
    spec.timeline = true;
    if ctx.opts.quick {
        spec.max_audio_s = Some(5.0);
        spec.timeout_s = 30.0;
    }
    let mut out = PlayerAbr::default();
    let result = emu
        .clear_log()
        .and_then(|_| emu.shape_scenario(scenario, ctx.opts.seed))
        .and_then(|_| ctx.run(&format!("abr-{scenario}"), player, &spec, emu));
    let child = match result {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    let _ = emu.unshape();
    let Some(run) = child.runs.first() else {
        out.error = Some("no result".into());
        return out;
    };
    out.ended = run.eos;
    out.timed_out = run.timed_out;
    out.buffering_dips = run.buffering_dips;
    out.elements = run.elements.clone();
    if let Some(e) = &run.error {
        out.error = Some(e.clone());
    }
    let log = match emu.requests() {
        Ok(l) => l,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    let fetches = emulator::segment_fetches(&log, HD_TRACK, Some(list));
    // What played: what amzdashdemux says went downstream (a buffered segment fetched again
    // for an upgrade that came too late did not play), else the last fetch of each segment.
    let per_seg = match open.reps.iter().find(|r| !r.segments.is_empty()) {
        Some(grid) if !run.segments.is_empty() => run
            .segments
            .iter()
            .filter_map(|(start, rep)| Some((grid.segment_at(*start + 1e-6)?, rep.clone())))
            .collect(),
        _ => emulator::rep_per_segment(&fetches),
    };
    let played_segs: Vec<usize> = {
        let grid = open.reps.iter().find(|r| !r.segments.is_empty());
        let mut v: Vec<usize> = run
            .buffers
            .iter()
            .filter_map(|[_, m]| grid.and_then(|g| g.segment_at(*m)))
            .collect();
        v.dedup();
        v
    };
    out.played = run_length(
        &played_segs
            .iter()
            .map(|s| per_seg.get(s).cloned().unwrap_or_else(|| "?".into()))
            .collect::<Vec<_>>(),
    );
    match timeline(run, &per_seg, open) {
        Ok((tl, end, startup)) => {
            out.score = Some(score::score(&tl, end, startup, Some(open.top_bandwidth())));
            // The scored timeline beside the player's log, for a closer look.
            let dump = serde_json::json!({
                "timeline": tl,
                "end": end,
                "startup": startup,
                "stalls": run.stalls,
                "segments": per_seg,
                "fetches": fetches.iter().map(|f| (f.at_ms, &f.rep, f.segment)).collect::<Vec<_>>(),
            });
            let _ = std::fs::write(
                ctx.opts
                    .work_dir
                    .join(format!("abr-{scenario}-{}.json", player.name())),
                dump.to_string(),
            );
        }
        Err(e) if out.error.is_none() => out.error = Some(format!("{e:#}")),
        Err(_) => {}
    }
    out
}

fn run_length(items: &[String]) -> String {
    let mut out: Vec<(String, usize)> = Vec::new();
    for i in items {
        match out.last_mut() {
            Some((n, c)) if n == i => *c += 1,
            _ => out.push((i.clone(), 1)),
        }
    }
    out.iter()
        .map(|(n, c)| format!("{n}×{c}"))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Builds vinyl's timeline from what the sink rendered and which representation each
/// segment was fetched from. Returns the samples, the end time and the start-up time.
pub fn timeline(
    run: &RunResult,
    reps: &BTreeMap<usize, String>,
    ladder: &Ladder,
) -> Result<(Vec<Sample>, f64, f64)> {
    let grid = ladder
        .reps
        .iter()
        .find(|r| !r.segments.is_empty())
        .context("the manifest has no segment timeline")?;
    let bandwidth_at = |media: f64| -> Option<u64> {
        let seg = grid.segment_at(media)?;
        // The segment's own fetch, else the closest earlier one (a segment fetched whole
        // with its neighbour by a ranged request).
        let rep = reps
            .range(..=seg)
            .next_back()
            .or_else(|| reps.iter().next())
            .map(|(_, r)| r)?;
        ladder.rep(rep).map(|r| r.bandwidth)
    };
    let mut tl: Vec<Sample> = Vec::new();
    let mut playing: Option<u64> = None;
    let mut stalls = run.stalls.iter().peekable();
    for [wall, media] in &run.buffers {
        while let Some([due, rendered]) = stalls.peek() {
            if *rendered > *wall + 1e-9 {
                break;
            }
            if playing.is_some() {
                let last = tl.last().map_or(0.0, |s| s.time);
                tl.push(Sample {
                    time: due.max(last),
                    bandwidth: None,
                    event: Event::Waiting,
                });
                playing = None;
            }
            stalls.next();
        }
        let bw = bandwidth_at(*media).context("no fetched segment matches the audio played")?;
        match playing {
            None => tl.push(Sample {
                time: *wall,
                bandwidth: Some(bw),
                event: Event::Playing,
            }),
            Some(cur) if cur != bw => tl.push(Sample {
                time: *wall,
                bandwidth: Some(bw),
                event: Event::QualityChange,
            }),
            _ => {}
        }
        playing = Some(bw);
    }
    // Stalls after the last buffer: it ran dry and never resumed.
    for [due, _] in stalls {
        if playing.take().is_some() {
            let last = tl.last().map_or(0.0, |s| s.time);
            tl.push(Sample {
                time: due.max(last),
                bandwidth: None,
                event: Event::Waiting,
            });
        }
    }
    if run.eos {
        tl.push(Sample {
            time: run.end_s,
            bandwidth: None,
            event: Event::Ended,
        });
    }
    let startup = run.first_render_s.unwrap_or(run.end_s);
    Ok((tl, run.end_s, startup))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Ladder {
        Ladder::parse(
            r#"<MPD><Representation id="hi" bandwidth="1600"><SegmentTemplate timescale="1">
            <SegmentTimeline><S t="0" d="10" r="2"/></SegmentTimeline></SegmentTemplate></Representation>
            <Representation id="lo" bandwidth="400"><SegmentTemplate timescale="1">
            <SegmentTimeline><S t="0" d="10" r="2"/></SegmentTimeline></SegmentTemplate></Representation></MPD>"#,
        )
        .unwrap()
    }

    #[test]
    fn a_timeline_follows_segments_stalls_and_the_end() {
        let reps: BTreeMap<usize, String> = [(0, "lo"), (1, "hi"), (2, "hi")]
            .into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect();
        // Starts at 1 s, plays 0–10 s of media at "lo", then "hi"; stalls 2 s at media 15 s.
        let mut buffers = vec![];
        for i in 0..30 {
            let media = i as f64;
            let wall = 1.0 + media + if media >= 15.0 { 2.0 } else { 0.0 };
            buffers.push([wall, media]);
        }
        let run = RunResult {
            eos: true,
            first_render_s: Some(1.0),
            end_s: 33.0,
            buffers,
            stalls: vec![[16.0, 18.0]],
            ..RunResult::default()
        };
        let (tl, end, startup) = timeline(&run, &reps, &ladder()).unwrap();
        let ev: Vec<(f64, Option<u64>, Event)> =
            tl.iter().map(|s| (s.time, s.bandwidth, s.event)).collect();
        assert_eq!(
            ev,
            vec![
                (1.0, Some(400), Event::Playing),
                (11.0, Some(1600), Event::QualityChange),
                (16.0, None, Event::Waiting),
                (18.0, Some(1600), Event::Playing),
                (33.0, None, Event::Ended),
            ]
        );
        let sc = score::score(&tl, end, startup, Some(1600));
        assert_eq!(sc.rebuffers, 1);
        assert!((sc.stall_s - 2.0).abs() < 1e-9);
        // 10 s at √(1/4), 20 s at 1.
        assert!(
            (sc.quality - (10.0 * 0.5 + 20.0) / 30.0).abs() < 1e-9,
            "{sc:?}"
        );
    }

    #[test]
    fn running_dry_until_the_end_is_one_open_stall() {
        let reps: BTreeMap<usize, String> = [(0, "lo".to_string())].into_iter().collect();
        let run = RunResult {
            timed_out: true,
            first_render_s: Some(1.0),
            end_s: 120.0,
            buffers: (0..10).map(|i| [1.0 + i as f64, i as f64]).collect(),
            stalls: vec![[11.2, 120.0]],
            ..RunResult::default()
        };
        let (tl, end, startup) = timeline(&run, &reps, &ladder()).unwrap();
        assert_eq!(tl.last().unwrap().event, Event::Waiting);
        let sc = score::score(&tl, end, startup, Some(1600));
        assert_eq!(sc.rebuffers, 1);
        assert!((sc.playback_s - 10.2).abs() < 1e-9, "{sc:?}");
        assert!((sc.stall_s - 108.8).abs() < 1e-9, "{sc:?}");
    }

    #[test]
    fn a_timeline_without_any_matching_fetch_is_an_error() {
        let run = RunResult {
            buffers: vec![[1.0, 0.0]],
            ..RunResult::default()
        };
        assert!(timeline(&run, &BTreeMap::new(), &ladder()).is_err());
    }

    #[test]
    fn run_length_counts_repeats_in_order() {
        assert_eq!(
            run_length(&["a".into(), "a".into(), "b".into()]),
            "a×2 → b×1"
        );
    }
}
