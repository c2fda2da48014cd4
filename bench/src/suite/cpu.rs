// SPDX-License-Identifier: MPL-2.0
//! The CPU and peak-RSS section: a track played as fast as each pipeline goes, unshaped (the
//! median of alternating runs, and the spread of their ratios), then the 60-minute track.

use anyhow::Result;
use std::collections::BTreeMap;

use super::runner::{Ctx, OurKind, Player};
use super::{Results, HD_TRACK, LONG_TRACK, UHD_TRACK};
use crate::emulator::{self, Emulator};
use crate::mpd::Ladder;
use crate::play::ChildOutput;

#[derive(Debug, Clone, Default)]
pub struct CpuCell {
    pub cpu_s: f64,
    pub audio_s: f64,
    pub peak_rss_kb: u64,
    pub fetched: String,
    pub error: Option<String>,
}

impl CpuCell {
    pub fn cpu_per_audio_min(&self) -> Option<f64> {
        (self.error.is_none() && self.audio_s > 0.0).then(|| self.cpu_s / (self.audio_s / 60.0))
    }
}

#[derive(Debug, Clone)]
pub struct CpuRow {
    pub track: String,
    pub limit_s: Option<f64>,
    pub ours: CpuCell,
    pub dash: CpuCell,
    /// Ours ÷ dashdemux2 in CPU per audio minute, for each alternating pair of runs that both
    /// measured (empty for a row of single runs): how far the ratio moves between runs.
    pub pair_ratios: Vec<f64>,
}

impl CpuRow {
    /// The lowest and highest ratio over the pairs of runs, when there were several.
    pub fn ratio_range(&self) -> Option<(f64, f64)> {
        (self.pair_ratios.len() > 1).then(|| {
            self.pair_ratios
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
                    (lo.min(*r), hi.max(*r))
                })
        })
    }
}

/// Runs per player for the CPU row (the median is reported).
pub const CPU_REPEATS: usize = 5;

/// One unshaped emulator process: the CPU row, then (unless skipped) the long track's rows.
pub(super) fn run_section(ctx: &Ctx, res: &mut Results, kind: OurKind) -> Result<()> {
    let opts = ctx.opts;
    let emu = ctx.start_emulator(res, &[])?;
    // A smoke run spares the UHD track's generation: the HD track is ready by now.
    let track = if opts.quick { HD_TRACK } else { UHD_TRACK };
    emu.prepare(track)?;
    let track_list =
        emulator::export_list_manifest(&ctx.emulator_bin(), &opts.data_dir, track).ok();
    let limit = opts.quick.then_some(20.0);
    // A 90 s track decodes in under a second of CPU: one run each moved the ratio from
    // 0.77x to 1.16x between two runs of the same code. The players alternate, and each
    // cell is the median run.
    let repeats = if opts.quick { 1 } else { CPU_REPEATS };
    let (mut ours, mut dash) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        ours.push(fast_decode(
            ctx,
            &emu,
            Player::Ours,
            kind,
            track,
            limit,
            track_list.as_ref(),
        ));
        dash.push(fast_decode(
            ctx,
            &emu,
            Player::Dash,
            kind,
            track,
            limit,
            None,
        ));
    }
    let pair_ratios = pair_ratios(&ours, &dash);
    let (ours, dash) = (median_cell(ours), median_cell(dash));
    res.cpu.push(CpuRow {
        track: track.into(),
        limit_s: limit,
        ours,
        dash,
        pair_ratios,
    });
    if opts.skip_long {
        res.long_skipped = Some(if opts.quick {
            "skipped in --quick".into()
        } else {
            "skipped (--skip-long)".into()
        });
    } else {
        emu.prepare(LONG_TRACK)?;
        let long_list =
            emulator::export_list_manifest(&ctx.emulator_bin(), &opts.data_dir, LONG_TRACK).ok();
        for limit in [Some(90.0), None] {
            let ours = fast_decode(
                ctx,
                &emu,
                Player::Ours,
                kind,
                LONG_TRACK,
                limit,
                long_list.as_ref(),
            );
            let dash = fast_decode(ctx, &emu, Player::Dash, kind, LONG_TRACK, limit, None);
            res.long.push(CpuRow {
                track: LONG_TRACK.into(),
                limit_s: limit,
                ours,
                dash,
                pair_ratios: Vec::new(),
            });
        }
    }
    Ok(())
}

/// Ours ÷ dashdemux2 for each pair of runs made one after the other, where both measured.
fn pair_ratios(ours: &[CpuCell], dash: &[CpuCell]) -> Vec<f64> {
    ours.iter()
        .zip(dash)
        .filter_map(|(o, d)| Some(o.cpu_per_audio_min()? / d.cpu_per_audio_min()?))
        .collect()
}

/// The run with the median CPU per audio minute; the first failed run if any failed.
fn median_cell(mut cells: Vec<CpuCell>) -> CpuCell {
    if let Some(i) = cells.iter().position(|c| c.cpu_per_audio_min().is_none()) {
        return cells.swap_remove(i);
    }
    cells.sort_by(|a, b| {
        let (a, b) = (a.cpu_per_audio_min(), b.cpu_per_audio_min());
        a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
    });
    let mid = cells.len() / 2;
    cells.swap_remove(mid)
}

fn fast_decode(
    ctx: &Ctx,
    emu: &Emulator,
    player: Player,
    kind: OurKind,
    track: &str,
    limit_s: Option<f64>,
    list: Option<&Ladder>,
) -> CpuCell {
    let mut spec = ctx.spec(player, kind, track, emu);
    spec.sync = false;
    spec.max_audio_s = limit_s;
    spec.timeout_s = 900.0;
    let mut cell = CpuCell::default();
    let r = emu
        .clear_log()
        .and_then(|_| ctx.run(&format!("fast-{track}"), player, &spec, emu));
    match r {
        Ok(out) => {
            cell.error = first_error(&out);
            if let Some(run) = out.runs.first() {
                cell.cpu_s = run.cpu_s;
                cell.audio_s = run.audio_s;
                if cell.error.is_none() && !run.eos && limit_s.is_none() {
                    cell.error = Some(if run.timed_out {
                        "timed out".into()
                    } else {
                        "stopped before the end".into()
                    });
                }
            }
            cell.peak_rss_kb = out.peak_rss_kb;
        }
        Err(e) => cell.error = Some(format!("{e:#}")),
    }
    if let Ok(log) = emu.requests() {
        cell.fetched = fetched_summary(&emulator::segment_fetches(&log, track, list));
    }
    cell
}

fn fetched_summary(fetches: &[emulator::Fetch]) -> String {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for f in fetches {
        *count.entry(f.rep.as_str()).or_default() += 1;
    }
    count
        .iter()
        .map(|(r, n)| format!("{r}×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn first_error(out: &ChildOutput) -> Option<String> {
    out.runs.iter().find_map(|r| r.error.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_pairs_give_the_ratio_range() {
        let cell = |cpu_s: f64, error: Option<&str>| CpuCell {
            cpu_s,
            audio_s: 60.0,
            error: error.map(String::from),
            ..Default::default()
        };
        let ours = [cell(1.0, None), cell(1.2, None), cell(0.9, Some("failed"))];
        let dash = [cell(1.0, None), cell(1.0, None), cell(1.0, None)];
        let ratios = pair_ratios(&ours, &dash);
        assert_eq!(ratios.len(), 2, "a failed run makes no pair");
        let row = CpuRow {
            track: "t".into(),
            limit_s: None,
            ours: median_cell(ours.to_vec()),
            dash: median_cell(dash.to_vec()),
            pair_ratios: ratios,
        };
        let (lo, hi) = row.ratio_range().unwrap();
        assert!(
            (lo - 1.0).abs() < 1e-9 && (hi - 1.2).abs() < 1e-9,
            "{lo} {hi}"
        );
        let single = CpuRow {
            pair_ratios: vec![1.1],
            ..row
        };
        assert_eq!(single.ratio_range(), None);
    }
}
