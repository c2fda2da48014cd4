// SPDX-License-Identifier: MPL-2.0
//! The time-to-first-audio section: on a constant link per round trip, each player's cold start
//! (a new process) and warm start (the same process again), the median of the repeats.

use anyhow::Result;

use super::runner::{Ctx, OurKind, Player};
use super::{Results, HD_TRACK};

/// Bandwidth of the time-to-first-audio link (stable-high's), kb/s.
pub const TTFA_KBPS: u64 = 10_000;

#[derive(Debug, Clone, Default)]
pub struct TtfaCell {
    pub cold: Vec<f64>,
    pub warm: Vec<f64>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TtfaRow {
    pub rtt_ms: u64,
    pub ours: TtfaCell,
    pub dash: TtfaCell,
}

impl TtfaCell {
    pub fn cold_median(&self) -> Option<f64> {
        median(&self.cold)
    }
    pub fn warm_median(&self) -> Option<f64> {
        median(&self.warm)
    }
}

/// One emulator process, shaped per round trip; each repeat runs both players in turn.
pub(super) fn run_section(ctx: &Ctx, res: &mut Results, kind: OurKind) -> Result<()> {
    let opts = ctx.opts;
    let emu = ctx.start_emulator(res, &[])?;
    emu.prepare(HD_TRACK)?;
    for &rtt in &opts.rtts_ms {
        let mut row = TtfaRow {
            rtt_ms: rtt,
            ours: TtfaCell::default(),
            dash: TtfaCell::default(),
        };
        for _ in 0..opts.ttfa_repeats {
            for player in [Player::Ours, Player::Dash] {
                let mut spec = ctx.spec(player, kind, HD_TRACK, &emu);
                spec.runs = 2;
                spec.until_first_buffer = true;
                spec.timeout_s = 30.0;
                let cell = match player {
                    Player::Ours => &mut row.ours,
                    Player::Dash => &mut row.dash,
                };
                let r = emu
                    .shape_link(TTFA_KBPS, rtt)
                    .and_then(|_| ctx.run(&format!("ttfa-{rtt}ms"), player, &spec, &emu));
                match r {
                    Ok(out) => {
                        for (i, run) in out.runs.iter().enumerate() {
                            match (run.first_buffer_s, &run.error) {
                                (Some(t), None) if i == 0 => cell.cold.push(t),
                                (Some(t), None) => cell.warm.push(t),
                                (_, Some(e)) => cell.errors.push(e.clone()),
                                (None, None) => cell.errors.push("no audio".into()),
                            }
                        }
                    }
                    Err(e) => cell.errors.push(format!("{e:#}")),
                }
            }
        }
        let _ = emu.unshape();
        res.ttfa.push(row);
    }
    Ok(())
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0]), Some(1.5));
        assert_eq!(median(&[]), None);
    }
}
