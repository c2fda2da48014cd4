// SPDX-License-Identifier: MPL-2.0
//! The benchmark suite: for each measurement, an emulator process, our pipeline and playbin3 +
//! dashdemux2 on the open mirror under the same shaping, and the figures BENCHMARKS.md shows.
//!
//! One module per section (`abr`, `ttfa`, `cpu`, `decrypt`, `soak`), and `runner`, the run
//! plumbing they share; this one holds the options, the results and the order of a run.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::emulator;
use crate::mpd::Ladder;

mod abr;
mod cpu;
mod decrypt;
mod runner;
mod soak;
mod ttfa;

pub use abr::{timeline, AbrRow, PlayerAbr};
pub use cpu::{CpuCell, CpuRow, CPU_REPEATS};
pub use decrypt::{CdmRow, DecryptRow};
pub use runner::{OurKind, Player, SINK_BUFFER_MS};
pub use soak::{
    SoakResult, SoakRow, DURATION_TOLERANCE_MS, HEAP_SLOPE_BOUND_KIB, RSS_SLOPE_BOUND_KIB,
    SOAK_QUICK_TRACKS, SOAK_TRACKS, WARMUP_TRACKS,
};
pub use ttfa::{TtfaCell, TtfaRow, TTFA_KBPS};

use runner::{probe_ours, Ctx};

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

#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub seed: u32,
    pub scenarios: Vec<String>,
    /// `target/<profile>`: the plugins and amzmusic-emulator.
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

pub const SECTIONS: [&str; 5] = ["abr", "ttfa", "cpu", "decrypt", "soak"];

impl Options {
    fn runs(&self, section: &str) -> bool {
        self.sections.iter().any(|s| s == section)
    }
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
    /// The same through each CDM backend (in process, ocdm:, chromium:).
    pub decrypt_cdm: Vec<decrypt::CdmRow>,
    pub criterion_command: Option<String>,
    /// 50 tracks through one playbin3 (`soak`).
    pub soak: Option<SoakResult>,
    pub opts: Options,
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
    let ctx = Ctx::new(&opts);
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
        decrypt_cdm: vec![],
        criterion_command: None,
        soak: None,
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
    if opts.runs("abr") {
        abr::run_section(&ctx, &mut res, kind, &open, &list)?;
    }
    // Time to first audio, cold (a new process) then warm (the same process again).
    if opts.runs("ttfa") {
        ttfa::run_section(&ctx, &mut res, kind)?;
    }
    // CPU and memory as fast as the pipeline goes, unshaped.
    if opts.runs("cpu") {
        cpu::run_section(&ctx, &mut res, kind)?;
    }
    // Decryption throughput.
    if opts.runs("decrypt") {
        res.decrypt = decrypt::decrypt_rows(&opts, &mut res.criterion_command);
        res.decrypt_cdm = decrypt::cdm_rows(&opts);
    }
    // Tracks back to back in one process: RSS and threads stay flat.
    if opts.runs("soak") {
        soak::run_section(&ctx, &mut res)?;
    }
    res.finished = date();
    Ok(res)
}

/// `target/<profile>` of a binary living in it or in its `deps/`.
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
