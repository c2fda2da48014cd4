// SPDX-License-Identifier: MPL-2.0
//! The run plumbing every section shares: the players and how ours is built, the emulator
//! processes a suite starts, a measured child's spec, log and environment, and the probe that
//! picks our pipeline.

use anyhow::Result;
use std::path::PathBuf;

use super::{Options, Results};
use crate::emulator::Emulator;
use crate::play::{self, ChildOutput, PlaySpec};

/// vinyl's harness gives up on a run after two minutes.
const ABR_TIMEOUT_S: f64 = 120.0;
/// The audio a sound card holds ahead (audiobasesink's default `buffer-time`): a buffer later
/// than this at the sink is a gap the listener hears.
pub const SINK_BUFFER_MS: f64 = 200.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Player {
    Ours,
    Dash,
}

impl Player {
    pub fn name(self) -> &'static str {
        match self {
            Player::Ours => "ours",
            Player::Dash => "dashdemux2",
        }
    }
}

/// How our pipeline is built, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OurKind {
    Playbin,
    Explicit,
    /// The open mirror through amzdashdemux: no amazonmusicsrc, no decryption.
    Fallback,
}

impl OurKind {
    pub const ALL: [OurKind; 3] = [OurKind::Playbin, OurKind::Explicit, OurKind::Fallback];

    pub fn describe(self, track: &str, base_url: &str) -> String {
        match self.spec_parts(track, base_url) {
            (Some(uri), _) => format!("playbin3 uri={uri} audio-sink=fakesink"),
            (_, Some(l)) => l,
            _ => unreachable!(),
        }
    }

    fn spec_parts(self, track: &str, base_url: &str) -> (Option<String>, Option<String>) {
        const TAIL: &str = "decodebin3 ! audioconvert ! audioresample ! fakesink name=sink";
        match self {
            OurKind::Playbin => (Some(format!("amazonmusic://track/{track}")), None),
            OurKind::Explicit => (
                None,
                Some(format!(
                    "amazonmusicsrc track-id={track} ! amzdashdemux ! qtdemux ! widevinedecrypt ! {TAIL}"
                )),
            ),
            OurKind::Fallback => (
                None,
                Some(format!(
                    "souphttpsrc location={base_url}/open/{track}/manifest.mpd ! \
                     capsfilter caps=application/dash+xml,source=amazonmusicsrc ! amzdashdemux ! qtdemux ! {TAIL}"
                )),
            ),
        }
    }
}

/// What every measured run of a suite shares: its options, the environment of each child
/// (the plugins, a registry of its own) and the numbering of the player logs.
pub(super) struct Ctx<'a> {
    pub(super) opts: &'a Options,
    env_common: Vec<(String, String)>,
    log_n: std::cell::Cell<u32>,
}

impl<'a> Ctx<'a> {
    pub(super) fn new(opts: &'a Options) -> Self {
        Ctx {
            opts,
            env_common: vec![
                (
                    "GST_PLUGIN_PATH".into(),
                    opts.profile_dir.to_string_lossy().into_owned(),
                ),
                (
                    "GST_REGISTRY".into(),
                    opts.work_dir
                        .join("registry.bin")
                        .to_string_lossy()
                        .into_owned(),
                ),
            ],
            log_n: Default::default(),
        }
    }

    pub(super) fn emulator_bin(&self) -> PathBuf {
        self.opts.profile_dir.join("amzmusic-emulator")
    }

    pub(super) fn start_emulator(&self, res: &mut Results, extra: &[&str]) -> Result<Emulator> {
        let e = Emulator::start(&self.emulator_bin(), &self.opts.data_dir, extra)?;
        if !res.emulator_commands.contains(&e.command) {
            res.emulator_commands.push(e.command.clone());
        }
        Ok(e)
    }

    pub(super) fn spec(
        &self,
        player: Player,
        kind: OurKind,
        track: &str,
        emu: &Emulator,
    ) -> PlaySpec {
        let (uri, launch) = match player {
            Player::Ours => kind.spec_parts(track, &emu.base_url),
            Player::Dash => (Some(emu.open_manifest_url(track)), None),
        };
        PlaySpec {
            uri,
            launch,
            sync: true,
            runs: 1,
            until_first_buffer: false,
            max_audio_s: None,
            timeout_s: ABR_TIMEOUT_S,
            timeline: false,
            sink_buffer_ms: SINK_BUFFER_MS,
        }
    }

    pub(super) fn run(
        &self,
        what: &str,
        player: Player,
        spec: &PlaySpec,
        emu: &Emulator,
    ) -> Result<ChildOutput> {
        let n = self.log_n.get() + 1;
        self.log_n.set(n);
        let log = self
            .opts
            .work_dir
            .join(format!("{n:03}-{what}-{}.log", player.name()));
        let mut env = self.env_common.clone();
        if player == Player::Ours {
            env.extend(emu.env.iter().cloned());
        }
        eprintln!("amzmusic-bench: {what}: {} …", player.name());
        play::spawn(&self.opts.exe, spec, &env, &log)
    }

    /// Runs `amzmusic-bench SUBCOMMAND --spec SPEC` as our player (the emulator's env file
    /// applied), killed after `limit`: what it printed after `RESULT `.
    pub(super) fn run_ours_child(
        &self,
        what: &str,
        subcommand: &str,
        spec_json: &str,
        limit: std::time::Duration,
        emu: &Emulator,
    ) -> Result<String> {
        let n = self.log_n.get() + 1;
        self.log_n.set(n);
        let log = self.opts.work_dir.join(format!("{n:03}-{what}.log"));
        let mut env = self.env_common.clone();
        env.extend(emu.env.iter().cloned());
        eprintln!("amzmusic-bench: {what} (log: {}) …", log.display());
        play::spawn_child(&self.opts.exe, subcommand, spec_json, limit, &env, &log)
    }
}

/// Finds the best way to run our pipeline: a short unclocked playback of each, in order.
pub(super) fn probe_ours(
    ctx: &Ctx,
    res: &mut Results,
    emu: &Emulator,
    track: &str,
) -> Option<OurKind> {
    for kind in OurKind::ALL {
        let mut spec = ctx.spec(Player::Ours, kind, track, emu);
        spec.sync = false;
        spec.max_audio_s = Some(3.0);
        spec.timeout_s = if ctx.opts.quick { 10.0 } else { 20.0 };
        let r = ctx.run("probe", Player::Ours, &spec, emu);
        let verdict = match &r {
            Ok(o) => match o.runs.first() {
                Some(run) if run.error.is_none() && run.audio_s >= 2.9 => None,
                Some(run) => Some(run.error.clone().unwrap_or_else(|| {
                    format!(
                        "only {:.1} s of audio in {:.0} s",
                        run.audio_s, spec.timeout_s
                    )
                })),
                None => Some("no result".into()),
            },
            Err(e) => Some(format!("{e:#}")),
        };
        match verdict {
            None => return Some(kind),
            Some(why) => res.our_probe_notes.push(format!(
                "`{}` is not usable yet: {}",
                kind.describe(track, "<emulator>"),
                why.lines().next().unwrap_or("")
            )),
        }
    }
    None
}
