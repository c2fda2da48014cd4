//! The benchmark suite: for each measurement, an emulator process, our pipeline and playbin3 +
//! dashdemux2 on the open mirror under the same shaping, and the figures BENCHMARKS.md shows.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::emulator::{self, Emulator};
use crate::mpd::Ladder;
use crate::play::{self, ChildOutput, PlaySpec, RunResult};
use crate::score::{self, Event, Sample, Score};

pub const HD_TRACK: &str = "B0EMUHD001";
pub const UHD_TRACK: &str = "B0EMUUHD01";
pub const LONG_TRACK: &str = "B0EMULNG01";
pub const SCENARIOS: [&str; 5] = [
    "stable-high",
    "stable-low",
    "wifi-to-4g",
    "outage",
    "noisy-mobile",
];
/// vinyl's harness gives up on a run after two minutes.
const ABR_TIMEOUT_S: f64 = 120.0;
/// The audio a sound card holds ahead (audiobasesink's default `buffer-time`): a buffer later
/// than this at the sink is a gap the listener hears.
pub const SINK_BUFFER_MS: f64 = 200.0;
/// Bandwidth of the time-to-first-audio link (stable-high's), kb/s.
pub const TTFA_KBPS: u64 = 10_000;

#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub seed: u32,
    pub scenarios: Vec<String>,
    /// target/<profile>: the plugins and amzmusic-emulator.
    pub profile_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Player logs.
    pub work_dir: PathBuf,
    pub repo: PathBuf,
    pub ttfa_repeats: u32,
    pub rtts_ms: Vec<u64>,
    /// Run the criterion bench through cargo (full runs).
    pub criterion: bool,
    pub skip_long: bool,
    /// Which of `SECTIONS` to run.
    pub sections: Vec<String>,
    pub command_line: String,
    pub exe: PathBuf,
}

pub const SECTIONS: [&str; 4] = ["abr", "ttfa", "cpu", "decrypt"];

impl Options {
    fn runs(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }
}

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

#[derive(Debug, Clone)]
pub struct DecryptRow {
    pub scheme: &'static str,
    pub in_process_mbs: Option<f64>,
    pub criterion_mbs: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Results {
    pub machine: crate::machine::Machine,
    pub started: String,
    pub finished: String,
    pub our_kind: Option<OurKind>,
    pub our_pipeline: String,
    pub our_probe_notes: Vec<String>,
    pub dash_pipeline: String,
    pub emulator_commands: Vec<String>,
    pub top_bandwidth: u64,
    pub abr: Vec<AbrRow>,
    pub ttfa: Vec<TtfaRow>,
    /// The UHD track as fast as possible.
    pub cpu: Vec<CpuRow>,
    /// The 60-minute track: first 90 s, then whole.
    pub long: Vec<CpuRow>,
    pub long_skipped: Option<String>,
    pub decrypt: Vec<DecryptRow>,
    pub criterion_command: Option<String>,
    pub opts: Options,
}

struct Ctx<'a> {
    opts: &'a Options,
    env_common: Vec<(String, String)>,
    log_n: std::cell::Cell<u32>,
}

impl Ctx<'_> {
    fn emulator_bin(&self) -> PathBuf {
        self.opts.profile_dir.join("amzmusic-emulator")
    }

    fn start_emulator(&self, res: &mut Results, extra: &[&str]) -> Result<Emulator> {
        let e = Emulator::start(&self.emulator_bin(), &self.opts.data_dir, extra)?;
        if !res.emulator_commands.contains(&e.command) {
            res.emulator_commands.push(e.command.clone());
        }
        Ok(e)
    }

    fn spec(&self, player: Player, kind: OurKind, track: &str, emu: &Emulator) -> PlaySpec {
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

    fn run(
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

/// Finds the best way to run our pipeline: a short unclocked playback of each, in order.
fn probe_ours(ctx: &Ctx, res: &mut Results, emu: &Emulator, track: &str) -> Option<OurKind> {
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

impl TtfaCell {
    pub fn cold_median(&self) -> Option<f64> {
        median(&self.cold)
    }
    pub fn warm_median(&self) -> Option<f64> {
        median(&self.warm)
    }
}

/// Runs per player for the CPU row (the median is reported).
pub const CPU_REPEATS: usize = 5;

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

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn run(opts: Options) -> Result<Results> {
    gst::init()?;
    let (maj, min, mic, _) = gst::version();
    let machine = crate::machine::Machine::probe(&format!("{maj}.{min}.{mic}"), &opts.repo);
    std::fs::create_dir_all(&opts.work_dir)?;
    // This run's player logs only.
    for e in std::fs::read_dir(&opts.work_dir)?.flatten() {
        if e.path().extension().is_some_and(|x| x == "log") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let ctx = Ctx {
        opts: &opts,
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
    };
    let mut res = Results {
        machine,
        started: date(),
        finished: String::new(),
        our_kind: None,
        our_pipeline: String::new(),
        our_probe_notes: vec![],
        dash_pipeline:
            "playbin3 uri=<emulator>/open/<track>/manifest.mpd audio-sink=fakesink (dashdemux2)"
                .into(),
        emulator_commands: vec![],
        top_bandwidth: 0,
        abr: vec![],
        ttfa: vec![],
        cpu: vec![],
        long: vec![],
        long_skipped: None,
        decrypt: vec![],
        criterion_command: None,
        opts: opts.clone(),
    };

    // Content and manifests, generated before anything is timed.
    let (open, list, kind) = {
        let emu = ctx.start_emulator(&mut res, &[])?;
        let mut tracks = vec![HD_TRACK];
        if !opts.quick && opts.runs("cpu") {
            tracks.push(UHD_TRACK);
        }
        if !opts.skip_long && opts.runs("cpu") {
            tracks.push(LONG_TRACK);
        }
        for t in tracks {
            eprintln!("amzmusic-bench: preparing {t} …");
            emu.prepare(t).with_context(|| format!("preparing {t}"))?;
        }
        let open = Ladder::parse(&emu.get(&format!("/open/{HD_TRACK}/manifest.mpd"))?)?;
        let list = emulator::export_list_manifest(&ctx.emulator_bin(), &opts.data_dir, HD_TRACK)?;
        let kind = probe_ours(&ctx, &mut res, &emu, HD_TRACK);
        (open, list, kind)
    };
    res.top_bandwidth = open.top_bandwidth();
    res.our_kind = kind;
    let kind = match kind {
        Some(k) => {
            res.our_pipeline = k.describe("<track>", "<emulator>");
            k
        }
        None => {
            res.our_pipeline = "none of our pipelines played (see the notes)".into();
            OurKind::Fallback
        }
    };

    // ABR QoE, one emulator process per scenario.
    for scenario in opts.scenarios.iter().filter(|_| opts.runs("abr")) {
        let emu = ctx.start_emulator(&mut res, &["--seed", &opts.seed.to_string()])?;
        emu.prepare(HD_TRACK)?;
        let ours = abr_one(&ctx, &emu, Player::Ours, kind, scenario, &open, &list);
        let dash = abr_one(&ctx, &emu, Player::Dash, kind, scenario, &open, &list);
        res.abr.push(AbrRow {
            scenario: scenario.clone(),
            ours,
            dash,
        });
    }

    // Time to first audio, cold (a new process) then warm (the same process again).
    if opts.runs("ttfa") {
        let emu = ctx.start_emulator(&mut res, &[])?;
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
    }

    // CPU and memory as fast as the pipeline goes, unshaped.
    if opts.runs("cpu") {
        let emu = ctx.start_emulator(&mut res, &[])?;
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
                &ctx,
                &emu,
                Player::Ours,
                kind,
                track,
                limit,
                track_list.as_ref(),
            ));
            dash.push(fast_decode(
                &ctx,
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
                emulator::export_list_manifest(&ctx.emulator_bin(), &opts.data_dir, LONG_TRACK)
                    .ok();
            for limit in [Some(90.0), None] {
                let ours = fast_decode(
                    &ctx,
                    &emu,
                    Player::Ours,
                    kind,
                    LONG_TRACK,
                    limit,
                    long_list.as_ref(),
                );
                let dash = fast_decode(&ctx, &emu, Player::Dash, kind, LONG_TRACK, limit, None);
                res.long.push(CpuRow {
                    track: LONG_TRACK.into(),
                    limit_s: limit,
                    ours,
                    dash,
                    pair_ratios: Vec::new(),
                });
            }
        }
    }

    // Decryption throughput.
    if opts.runs("decrypt") {
        res.decrypt = decrypt_rows(&opts, &mut res.criterion_command);
    }
    res.finished = date();
    Ok(res)
}

fn decrypt_rows(opts: &Options, command: &mut Option<String>) -> Vec<DecryptRow> {
    use gstwidevinestub::cenc::Scheme;
    let budget = Duration::from_millis(if opts.quick { 100 } else { 2000 });
    let mut criterion: BTreeMap<&str, Result<f64, String>> = BTreeMap::new();
    if opts.criterion {
        let cmd = "cargo bench -p gst-plugin-widevine-stub --bench decrypt";
        *command = Some(cmd.into());
        eprintln!("amzmusic-bench: {cmd} …");
        let st =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "bench",
                    "-p",
                    "gst-plugin-widevine-stub",
                    "--bench",
                    "decrypt",
                ])
                .current_dir(&opts.repo)
                .status();
        let cdir = opts.repo.join("target").join("criterion");
        for id in ["cenc", "cbcs"] {
            let r = match &st {
                Ok(s) if s.success() => {
                    crate::decrypt::criterion_result(&cdir, &format!("decrypt/{id}"))
                        .map_err(|e| format!("{e:#}"))
                }
                Ok(s) => Err(format!("cargo bench failed: {s}")),
                Err(e) => Err(format!("cannot run cargo: {e}")),
            };
            criterion.insert(id, r);
        }
    }
    [("cenc", Scheme::Cenc), ("cbcs", Scheme::Cbcs)]
        .into_iter()
        .map(|(name, scheme)| {
            let m = crate::decrypt::measure(scheme, budget);
            let c = criterion.remove(name);
            DecryptRow {
                scheme: name,
                in_process_mbs: m.as_ref().ok().map(|t| t.mb_per_s),
                criterion_mbs: c.as_ref().and_then(|r| r.as_ref().ok().copied()),
                error: m
                    .err()
                    .map(|e| format!("{e:#}"))
                    .or_else(|| c.and_then(|r| r.err())),
            }
        })
        .collect()
}

/// target/<profile> of a binary living in it or in its deps/.
pub fn profile_dir_of(exe: &Path) -> Result<PathBuf> {
    let dir = exe.parent().context("exe without a directory")?;
    let dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().context("deps without a parent")?
    } else {
        dir
    };
    if !dir.join("amzmusic-emulator").exists() {
        bail!(
            "no amzmusic-emulator beside {} : run `cargo build -p amzmusic-emulator -p gst-plugin-amazonmusic -p gst-plugin-amzdash -p gst-plugin-widevine-stub` (same profile) first",
            dir.display()
        );
    }
    Ok(dir.to_path_buf())
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

    #[test]
    fn helpers() {
        assert_eq!(
            run_length(&["a".into(), "a".into(), "b".into()]),
            "a×2 → b×1"
        );
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0]), Some(1.5));
        assert_eq!(median(&[]), None);
    }
}
