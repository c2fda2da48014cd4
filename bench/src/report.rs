//! BENCHMARKS.md from a suite's results: the machine, the commands, the method, each figure for
//! both players with the ratio, and each target of issue 7 met or missed (and why).

use std::fmt::Write;

use crate::score::{vinyl_score, Score};
use crate::suite::{
    CpuCell, CpuRow, PlayerAbr, Results, SoakResult, TtfaCell, DURATION_TOLERANCE_MS,
    HEAP_SLOPE_BOUND_KIB, RSS_SLOPE_BOUND_KIB, SINK_BUFFER_MS, TTFA_KBPS,
};

fn f3(v: f64) -> String {
    format!("{v:.3}")
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn short(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").replace('|', "/");
    if line.chars().count() > 160 {
        format!("{}…", line.chars().take(160).collect::<String>())
    } else {
        line
    }
}

fn abr_cells(p: &PlayerAbr) -> [String; 10] {
    match &p.score {
        Some(s) => [
            f3(s.total),
            f3(s.quality),
            f3(s.rebuffer),
            f3(s.stall),
            f3(s.startup),
            s.rebuffers.to_string(),
            format!("{:.1}", s.stall_s),
            format!("{:.2}", s.startup_s),
            format!("{:.0}", s.avg_bitrate / 1000.0),
            format!("{:.1}", s.playback_s),
        ],
        None => std::array::from_fn(|_| "—".to_string()),
    }
}

fn status(p: &PlayerAbr) -> String {
    let mut v = vec![];
    if p.ended {
        v.push("ended".to_string());
    } else if p.timed_out {
        v.push("timed out".to_string());
    } else if p.error.is_none() {
        v.push("stopped (quick)".to_string());
    }
    if let Some(e) = &p.error {
        v.push(format!("error: {}", short(e)));
    }
    v.join("; ")
}

fn cpu_cells(c: &CpuCell) -> String {
    match &c.error {
        Some(e) => format!("error: {} | | | ", short(e)),
        None => format!(
            "{:.2} | {:.1} | {} | {:.1}",
            c.cpu_s,
            c.audio_s,
            opt(c.cpu_per_audio_min(), 3),
            mib(c.peak_rss_kb)
        ),
    }
}

struct Target {
    what: String,
    met: Option<bool>,
    why: String,
}

fn verdict(t: &Target) -> &'static str {
    match t.met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// Which score component lost the most, weighted: the reason a score is lower.
fn weakest(ours: &Score, theirs: Option<&Score>) -> String {
    let comps = |s: &Score| {
        [
            ("quality", 0.4 * s.quality),
            ("rebuffer", 0.3 * s.rebuffer),
            ("stall", 0.1 * s.stall),
            ("startup", 0.2 * s.startup),
        ]
    };
    match theirs {
        Some(t) => {
            let (name, d) = comps(ours)
                .iter()
                .zip(comps(t))
                .map(|((n, a), (_, b))| (*n, b - a))
                .fold(("", f64::MIN), |acc, x| if x.1 > acc.1 { x } else { acc });
            format!("the {name} component costs {d:.3} against dashdemux2")
        }
        None => {
            let full = [0.4, 0.3, 0.1, 0.2];
            let (name, d) = comps(ours)
                .iter()
                .zip(full)
                .map(|((n, a), f)| (*n, f - a))
                .fold(("", f64::MIN), |acc, x| if x.1 > acc.1 { x } else { acc });
            format!("the {name} component loses {d:.3} of its weight")
        }
    }
}

fn targets(r: &Results) -> Vec<Target> {
    let mut t = vec![];
    for row in &r.abr {
        let (o, d) = (row.ours.score.as_ref(), row.dash.score.as_ref());
        let why_err = || {
            row.ours
                .error
                .as_deref()
                .map(|e| format!("our run failed: {}", short(e)))
                .unwrap_or_else(|| "no score".into())
        };
        t.push(Target {
            what: format!("ABR score ≥ dashdemux2's in {}", row.scenario),
            met: match (o, d) {
                (Some(a), Some(b)) => Some(a.total >= b.total),
                (None, Some(_)) => Some(false),
                _ => None,
            },
            why: match (o, d) {
                (Some(a), Some(b)) if a.total < b.total => weakest(a, Some(b)),
                (Some(a), Some(b)) => format!("{:.3} vs {:.3}", a.total, b.total),
                (None, _) => why_err(),
                (Some(_), None) => format!(
                    "dashdemux2 has no score: {}",
                    row.dash.error.as_deref().map(short).unwrap_or_default()
                ),
            },
        });
        if let Some(v) = vinyl_score(&row.scenario) {
            t.push(Target {
                what: format!("ABR score > vinyl's published {v:.3} in {}", row.scenario),
                met: o.map(|a| a.total > v).or(Some(false)),
                why: match o {
                    Some(a) if a.total <= v => weakest(a, None),
                    Some(a) => format!("{:.3}", a.total),
                    None => why_err(),
                },
            });
        }
        if ["stable-high", "stable-low", "wifi-to-4g"].contains(&row.scenario.as_str()) {
            t.push(Target {
                what: format!("zero rebuffers in {}", row.scenario),
                met: o.map(|a| a.rebuffers == 0).or(Some(false)),
                why: match o {
                    Some(a) => format!("{} rebuffers, {:.1} s stalled", a.rebuffers, a.stall_s),
                    None => why_err(),
                },
            });
        }
    }
    for row in &r.ttfa {
        for (label, o, d) in [
            ("cold", row.ours.cold_median(), row.dash.cold_median()),
            ("warm", row.ours.warm_median(), row.dash.warm_median()),
        ] {
            t.push(Target {
                what: format!(
                    "time to first audio ≤ dashdemux2's, {label}, {} ms RTT",
                    row.rtt_ms
                ),
                met: match (o, d) {
                    (Some(a), Some(b)) => Some(a <= b),
                    (None, Some(_)) => Some(false),
                    _ => None,
                },
                why: match (o, d) {
                    (Some(a), Some(b)) => format!(
                        "{a:.3} s vs {b:.3} s ({:.1} round trips of difference)",
                        (a - b) * 1000.0 / row.rtt_ms as f64
                    ),
                    _ => row
                        .ours
                        .errors
                        .first()
                        .map(|e| short(e))
                        .unwrap_or_else(|| "no figure".into()),
                },
            });
        }
    }
    for row in &r.cpu {
        let (o, d) = (row.ours.cpu_per_audio_min(), row.dash.cpu_per_audio_min());
        t.push(Target {
            what: format!("CPU per audio minute ≤ 1.1× dashdemux2's ({})", row.track),
            met: match (o, d) {
                (Some(a), Some(b)) => Some(a <= 1.1 * b),
                (None, Some(_)) => Some(false),
                _ => None,
            },
            why: match (o, d) {
                (Some(a), Some(b)) => format!(
                    "{a:.3} s vs {b:.3} s per audio minute ({:.2}×{}); fetched: ours {}, dashdemux2 {}",
                    a / b,
                    row.ratio_range()
                        .map(|(lo, hi)| format!(
                            "; {lo:.2}–{hi:.2}× over the {} pairs of runs",
                            row.pair_ratios.len()
                        ))
                        .unwrap_or_default(),
                    row.ours.fetched,
                    row.dash.fetched
                ),
                _ => row
                    .ours
                    .error
                    .as_deref()
                    .map(short)
                    .unwrap_or_else(|| "no figure".into()),
            },
        });
    }
    for d in &r.decrypt {
        let v = d.criterion_mbs.or(d.in_process_mbs);
        t.push(Target {
            what: format!("{} decryption ≥ 1 GB/s per core", d.scheme),
            met: v.map(|x| x >= 1000.0),
            why: v
                .map(|x| format!("{x:.0} MB/s"))
                .unwrap_or_else(|| d.error.clone().unwrap_or_default()),
        });
    }
    for c in r.decrypt_cdm.iter().filter(|c| c.backend.contains("FFI")) {
        t.push(Target {
            what: format!(
                "{} through {} within 10 % of in-process (16 KiB samples)",
                c.scheme, c.backend
            ),
            met: c.vs_in_process.map(|x| x >= 0.9),
            why: match (c.mbs, c.vs_in_process) {
                (Some(m), Some(x)) => format!("{m:.0} MB/s, {x:.2}× in-process"),
                _ => c.error.clone().unwrap_or_else(|| "no figure".into()),
            },
        });
    }
    if let Some(soak) = &r.soak {
        t.push(Target {
            what: format!(
                "{} tracks in one process, each played to its end (soak)",
                soak.planned
            ),
            met: Some(soak.problems.is_empty()),
            why: soak
                .problems
                .first()
                .map(|p| short(p))
                .unwrap_or_else(|| format!("{} of {}", soak.rows.len(), soak.planned)),
        });
        t.push(Target {
            what: "RSS and threads flat over the soak".into(),
            met: soak.flat,
            why: soak.why.clone(),
        });
    }
    if let [short_run, full] = r.long.as_slice() {
        for (name, a, b) in [
            ("ours", &short_run.ours, &full.ours),
            ("dashdemux2", &short_run.dash, &full.dash),
        ] {
            let ok = a.error.is_none() && b.error.is_none() && a.peak_rss_kb > 0;
            let change = ok.then(|| b.peak_rss_kb as f64 / a.peak_rss_kb as f64 - 1.0);
            t.push(Target {
                what: format!("peak RSS flat (±10 %) from 90 s to 60 min ({name})"),
                met: change.map(|c| c.abs() <= 0.10),
                why: match change {
                    Some(c) => format!(
                        "{:.1} MiB → {:.1} MiB ({:+.1} %)",
                        mib(a.peak_rss_kb),
                        mib(b.peak_rss_kb),
                        c * 100.0
                    ),
                    None => a
                        .error
                        .clone()
                        .or_else(|| b.error.clone())
                        .map(|e| short(&e))
                        .unwrap_or_default(),
                },
            });
        }
    }
    t
}

fn ttfa_cell(c: &TtfaCell, cold: bool) -> Option<f64> {
    if cold {
        c.cold_median()
    } else {
        c.warm_median()
    }
}

fn cpu_table(out: &mut String, rows: &[CpuRow]) {
    let _ = writeln!(
        out,
        "| track | audio limit | player | CPU s | audio s | CPU s per audio min | peak RSS MiB | segments fetched |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for row in rows {
        let limit = row
            .limit_s
            .map(|l| format!("first {l:.0} s"))
            .unwrap_or_else(|| "whole track".into());
        for (name, c) in [("ours", &row.ours), ("dashdemux2", &row.dash)] {
            let _ = writeln!(
                out,
                "| {} | {limit} | {name} | {} | {} |",
                row.track,
                cpu_cells(c),
                c.fetched
            );
        }
        let _ = writeln!(
            out,
            "| {} | {limit} | **ratio ours/dashdemux2** | | | {}{} | {} | |",
            row.track,
            ratio(row.ours.cpu_per_audio_min(), row.dash.cpu_per_audio_min()),
            row.ratio_range()
                .map(|(lo, hi)| format!(" (pairs of runs: {lo:.2}–{hi:.2}×)"))
                .unwrap_or_default(),
            ratio(
                (row.ours.peak_rss_kb > 0).then_some(row.ours.peak_rss_kb as f64),
                (row.dash.peak_rss_kb > 0).then_some(row.dash.peak_rss_kb as f64)
            ),
        );
    }
}

/// The line in BENCHMARKS.md after which the text is written by hand: a new report keeps it.
pub const KEPT_MARKER: &str = "<!-- amzmusic-bench keeps everything below this line -->";

/// The new report `md`, followed by what the old file `old` holds from [`KEPT_MARKER`] on.
pub fn with_kept_notes(md: String, old: Option<&str>) -> String {
    match old.and_then(|o| o.find(KEPT_MARKER).map(|i| &o[i..])) {
        Some(kept) => format!("{}\n\n{kept}", md.trim_end()),
        None => md,
    }
}

pub fn markdown(r: &Results) -> String {
    let mut o = String::new();
    let m = &r.machine;
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Written by `amzmusic-bench`{} from {} to {}. Every figure below was measured in that run \
         (up to the hand-written part the bench keeps, if any); nothing is copied from elsewhere \
         except vinyl's published scores, which are labelled.\n",
        if r.opts.quick {
            " **--quick (smoke run: shortened measurements, not comparable figures)**"
        } else {
            ""
        },
        r.started,
        r.finished
    );
    let _ = writeln!(o, "## Machine\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| CPU | {} |", m.cpu);
    let _ = writeln!(o, "| cores | {} |", m.cores);
    let _ = writeln!(o, "| memory | {:.1} GiB |", m.memory_gib);
    let _ = writeln!(o, "| kernel | {} |", m.kernel);
    let _ = writeln!(o, "| OS | {} |", m.os);
    let _ = writeln!(o, "| GStreamer | {} |", m.gstreamer);
    let _ = writeln!(o, "| Rust | {} |", m.rustc);
    let _ = writeln!(o, "| commit | {} |", m.commit);
    let profile = r.opts.profile_dir.file_name().unwrap_or_default();
    let _ = writeln!(
        o,
        "| plugins | {} ({} build) |\n",
        r.opts.profile_dir.display(),
        profile.to_string_lossy()
    );

    let _ = writeln!(o, "## Commands\n");
    let _ = writeln!(o, "```sh\n{}\n```\n", r.opts.command_line);
    let _ = writeln!(
        o,
        "Each player runs in its own process (`amzmusic-bench play --spec …`), with \
         `GST_PLUGIN_PATH={}`; ours also gets the emulator's `AMAZONMUSIC_*` env file.\n",
        r.opts.profile_dir.display()
    );
    let _ = writeln!(o, "- our pipeline: `{}`", r.our_pipeline);
    for n in &r.our_probe_notes {
        let _ = writeln!(o, "  - {n}");
    }
    if r.our_kind == Some(crate::suite::OurKind::Fallback) {
        let _ = writeln!(
            o,
            "  - **fallback**: amazonmusicsrc is not usable yet, so our figures come from \
             amzdashdemux on the open (clear) mirror: no music API, no license, no decryption."
        );
    }
    let _ = writeln!(o, "- dashdemux2: `{}`", r.dash_pipeline);
    let _ = writeln!(o, "- emulator processes:");
    for c in &r.emulator_commands {
        let _ = writeln!(o, "  - `{c}`");
    }
    if let Some(c) = &r.criterion_command {
        let _ = writeln!(
            o,
            "- decryption: `{c}` (criterion, results read from `target/criterion/decrypt/`)"
        );
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "## Method\n");
    let _ = writeln!(
        o,
        "Both players are measured identically, at a clocked `fakesink` (`sync=true`) that \
         stands for the sound card, from a child process that starts at the PLAYING request:\n\n\
         - **startup**: PLAYING request → first buffer the sink renders in PLAYING (vinyl: `play()` → first `playing`).\n\
         - **which representation plays**: the sink's buffer timestamps say which segment is playing. For \
           ours, amzdashdemux's `amzdashdemux-segment` message says which representation that segment went \
           downstream from (a buffered segment may be fetched again better, and an upgrade that came too late \
           is dropped: its fetch did not play). For dashdemux2, the emulator's request log \
           (`GET /_emulator/requests`) says which representation the segment was last fetched from (template \
           URLs name the segment). Its `bandwidth` (open mirror manifest, top rung {} b/s) is the bitrate.\n\
         - **rebuffer / stall**: the sink stands for a sound card holding {SINK_BUFFER_MS:.0} ms ahead \
           (audiobasesink's default `buffer-time`): a buffer that reaches it more than that after it was due \
           means the pipeline ran dry, and the listener hears a gap from due + {SINK_BUFFER_MS:.0} ms until it \
           came. That gap is one rebuffer and its length the stall; the sink's `ts-offset` then grows by the gap, \
           as a sound card resuming would, so the rest stays in real time. Buffering messages are not acted on \
           (no pause), for both players alike; the dips below 100 % after the start are listed.\n\
         - **score**: vinyl's `abrScore.ts`: 0.4·quality + 0.3·rebuffer + 0.1·stall + 0.2·startup, quality = \
           time-weighted mean of √(bandwidth / top bandwidth), rebuffer = 1/(1+rebuffers), stall = \
           1/(1+0.25·stall s), startup = 1/(1+0.5·startup s). A run ends at EOS or after 120 s (vinyl's timeout).\n\
         - **network**: the emulator's scenario (seed {}) shapes every response of the emulator process; its \
           clock restarts just before each player's run (`POST /_emulator/shaping`), so both see the same \
           conditions from their first request.\n\
         - **time to first audio**: PLAYING request → first buffer at the sink pad, on a {TTFA_KBPS} kb/s link \
           with the given round trip added to every request (API, license, manifest and segments alike). Cold: \
           the first playback of a fresh process (token in the environment, nothing else cached). Warm: a second \
           playback in the same process right after. Median of {} processes per cell.\n\
         - **CPU and memory**: the track played as fast as the pipeline goes (`sync=false`), unshaped; CPU is \
           the process's user+system time (getrusage) from PLAYING to EOS, per minute of audio that reached \
           the sink; peak RSS is the process's `ru_maxrss`. The CPU row is the median of {} runs per player, \
           alternating (one run is under a second of CPU, and single runs varied by 1.5x), and its ratio \
           row also gives the lowest and highest ratio over the alternating pairs of runs; the long \
           track is one run each.\n\
         - **decryption**: widevinedecrypt's `cenc::decrypt_in_place` on 16 KiB samples, one thread; cenc is \
           AES-128-CTR over the whole sample, cbcs is the 1:9 pattern the emulator packages, so MB/s counts \
           sample bytes.\n",
        r.top_bandwidth,
        r.opts.seed,
        r.opts.ttfa_repeats,
        if r.opts.quick { 1 } else { crate::suite::CPU_REPEATS }
    );

    let _ = writeln!(
        o,
        "## ABR quality of experience ({})\n",
        crate::suite::HD_TRACK
    );
    let _ = writeln!(
        o,
        "| scenario | player | score | quality | rebuffer | stall | startup | rebuffers | stall s | startup s | avg kb/s | played s | representations played (per segment) | run |"
    );
    let _ = writeln!(
        o,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for row in &r.abr {
        for (name, p) in [("ours", &row.ours), ("dashdemux2", &row.dash)] {
            let c = abr_cells(p);
            let _ = writeln!(
                o,
                "| {} | {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
                row.scenario,
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                c[6],
                c[7],
                c[8],
                c[9],
                p.played,
                status(p),
                if p.buffering_dips > 0 {
                    format!("; {} buffering dips", p.buffering_dips)
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(
            o,
            "| {} | **ratio ours/dashdemux2** | {} | | | | | | | | | | | vinyl published: {} |",
            row.scenario,
            ratio(
                row.ours.score.map(|s| s.total),
                row.dash.score.map(|s| s.total)
            ),
            vinyl_score(&row.scenario)
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "—".into())
        );
    }
    let _ = writeln!(o);
    let els: Vec<String> = r
        .abr
        .iter()
        .flat_map(|row| {
            [
                format!("ours: {}", row.ours.elements.join(", ")),
                format!("dashdemux2: {}", row.dash.elements.join(", ")),
            ]
        })
        .take(2)
        .collect();
    if !els.is_empty() {
        let _ = writeln!(
            o,
            "Demuxers and decryptors the pipelines plugged: {}.\n",
            els.join("; ")
        );
    }

    let _ = writeln!(o, "## Time to first audio ({})\n", crate::suite::HD_TRACK);
    let _ = writeln!(
        o,
        "| RTT | start | ours s | dashdemux2 s | ratio | samples (ours / dashdemux2) |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    for row in &r.ttfa {
        for cold in [true, false] {
            let (a, b) = (ttfa_cell(&row.ours, cold), ttfa_cell(&row.dash, cold));
            let n = |c: &TtfaCell| if cold { c.cold.len() } else { c.warm.len() };
            let _ = writeln!(
                o,
                "| {} ms | {} | {} | {} | {} | {} / {} |",
                row.rtt_ms,
                if cold { "cold" } else { "warm" },
                opt(a, 3),
                opt(b, 3),
                ratio(a, b),
                n(&row.ours),
                n(&row.dash)
            );
        }
        for (name, c) in [("ours", &row.ours), ("dashdemux2", &row.dash)] {
            if let Some(e) = c.errors.first() {
                let _ = writeln!(
                    o,
                    "\n{name} at {} ms: {} failure(s), first: {}",
                    row.rtt_ms,
                    c.errors.len(),
                    short(e)
                );
            }
        }
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "## CPU and peak RSS, played as fast as possible\n");
    if r.cpu.is_empty() {
        let _ = writeln!(o, "Not measured in this run.\n");
    } else {
        cpu_table(&mut o, &r.cpu);
        let _ = writeln!(o);
    }

    let _ = writeln!(
        o,
        "## Memory across the 60-minute track ({})\n",
        crate::suite::LONG_TRACK
    );
    match &r.long_skipped {
        Some(why) => {
            let _ = writeln!(o, "Not measured: {why}.\n");
        }
        None if r.long.is_empty() => {
            let _ = writeln!(o, "Not measured in this run.\n");
        }
        None => {
            cpu_table(&mut o, &r.long);
            let _ = writeln!(o);
        }
    }

    let _ = writeln!(o, "## Decryption throughput (one core)\n");
    let _ = writeln!(o, "| scheme | criterion MB/s | in-process MB/s | |");
    let _ = writeln!(o, "|---|---|---|---|");
    for d in &r.decrypt {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            d.scheme,
            opt(d.criterion_mbs, 0),
            opt(d.in_process_mbs, 0),
            d.error.as_deref().map(short).unwrap_or_default()
        );
    }
    let _ = writeln!(o);
    if !r.decrypt_cdm.is_empty() {
        let _ = writeln!(
            o,
            "Through widevinedecrypt's `Cdm` trait, one `decrypt` call per 16 KiB sample after a \
             Clear Key license: its in-process Clear Key CDM and the workspace's test modules \
             loaded at run time (`ocdm:`, `chromium:`), beside the in-process figure above.\n"
        );
        let _ = writeln!(o, "| scheme | backend | MB/s | ÷ in-process | |");
        let _ = writeln!(o, "|---|---|---|---|---|");
        for c in &r.decrypt_cdm {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                c.scheme,
                c.backend,
                opt(c.mbs, 0),
                c.vs_in_process
                    .map(|x| format!("{x:.2}×"))
                    .unwrap_or_default(),
                c.error.as_deref().map(short).unwrap_or_default()
            );
        }
        let _ = writeln!(o);
    }

    if let Some(soak) = &r.soak {
        o.push_str(&soak_section(soak, r, false));
    }

    let _ = writeln!(o, "## Targets (issue 7)\n");
    let _ = writeln!(o, "| target | verdict | figures / why |");
    let _ = writeln!(o, "|---|---|---|");
    for t in targets(r) {
        let _ = writeln!(o, "| {} | {} | {} |", t.what, verdict(&t), t.why);
    }
    let _ = writeln!(o);
    o
}

/// The heading every soak section starts with (what [`splice_soak`] replaces).
pub const SOAK_HEADING: &str = "## Soak:";

fn mib_opt(kb: Option<u64>) -> String {
    kb.map(|k| format!("{:.1}", mib(k)))
        .unwrap_or_else(|| "—".into())
}

/// The soak's section, self-contained (its own date, commit, command and build), so that a run
/// of the soak alone can replace it in a report another run wrote (`spliced`: it says so).
pub fn soak_section(s: &SoakResult, r: &Results, spliced: bool) -> String {
    let mut o = String::new();
    let profile = r.opts.profile_dir.file_name().unwrap_or_default();
    let _ = writeln!(
        o,
        "{SOAK_HEADING} {} tracks through one playbin3 in one process\n",
        s.planned
    );
    let mut cycle: Vec<String> = Vec::new();
    for row in &s.rows {
        let label = format!("{} ({})", row.id, row.quality);
        if cycle.contains(&label) {
            break;
        }
        cycle.push(label);
    }
    let _ = writeln!(
        o,
        "{}Measured by `{}` from {}, commit {}, {} build{} (plugins in `{}`). One `amzmusic-bench soak` \
         process plays the tracks back to back through one `playbin3` (`about-to-finish` sets the \
         next `amazonmusic://track/<id>`) into `fakesink sync=false`, so faster than real time, \
         cycling through {} (quality as amazonmusicsrc's `quality`; `auto` is the best the decoders \
         play). After each track (at the next track's `stream-start` event at the sink, the last at \
         EOS) it reads its VmRSS (`/proc/self/status`), the bytes malloc has handed out and not had \
         back (`mallinfo2`, every arena: the live heap) and its threads (`/proc/self/task`). Each \
         track must have played to its end: its samples and its buffers' durations at the sink \
         within {DURATION_TOLERANCE_MS:.0} ms of the catalogue's duration, from 0; one EOS, after \
         the last track; each track's manifest fetched once per play (the emulator's request log). \
         Flat means, over tracks {}–{} (the first tracks start what lives as long as the process): \
         a heap slope under {HEAP_SLOPE_BOUND_KIB:.0} KiB per track (a leak), an RSS slope under \
         {RSS_SLOPE_BOUND_KIB:.0} KiB per track (the allocator keeps freed pages per arena and \
         fills more arenas as new threads come: \"The soak's memory\" in the hand-written part), and no more threads after the \
         warm-up than during it. Slopes are Theil–Sen (the median of the slopes between every two \
         tracks), since a track that ends while the next one's downloads are still in memory reads \
         up to 35 MiB high; the least-squares RSS slope is shown beside.\n",
        if spliced {
            "**A run of its own**, not the run the header names (a run of the soak alone \
             replaces only this section). "
        } else {
            ""
        },
        r.opts.command_line,
        s.started,
        r.machine.commit,
        profile.to_string_lossy(),
        if profile == "debug" {
            " (**debug build**: the plugins' own code is slower than in release; RSS includes \
             debug-build overheads)"
        } else {
            ""
        },
        r.opts.profile_dir.display(),
        cycle.join(", "),
        s.slope_from,
        s.planned,
    );
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(
        o,
        "| tracks played to their end | {} of {} |",
        s.rows.len()
            - s.rows
                .iter()
                .enumerate()
                .filter(|(i, _)| s
                    .problems
                    .iter()
                    .any(|p| p.starts_with(&format!("track {} ", i + 1))))
                .count(),
        s.planned
    );
    let _ = writeln!(
        o,
        "| audio played | {:.1} s ({:.1} min) |",
        s.audio_s,
        s.audio_s / 60.0
    );
    let _ = writeln!(
        o,
        "| wall time | {:.1} s ({:.1}× real time) |",
        s.wall_s,
        if s.wall_s > 0.0 {
            s.audio_s / s.wall_s
        } else {
            0.0
        }
    );
    let marks: Vec<usize> = [1, 10, 25, 50]
        .into_iter()
        .filter(|n| *n <= s.planned)
        .collect();
    let _ = writeln!(
        o,
        "| RSS after track {} | {} MiB |",
        marks
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" / "),
        marks
            .iter()
            .map(|n| mib_opt(s.rss_after(*n)))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let _ = writeln!(
        o,
        "| RSS max after a track | {} MiB |",
        mib_opt(s.max_rss_kb())
    );
    let _ = writeln!(
        o,
        "| peak RSS (ru_maxrss) | {:.1} MiB |",
        mib(s.peak_rss_kb)
    );
    let _ = writeln!(
        o,
        "| RSS slope, tracks {}–{} | {} KiB/track (bound {RSS_SLOPE_BOUND_KIB:.0}; least squares: {}) |",
        s.slope_from,
        s.rows.len(),
        opt(s.rss_slope_kib, 1),
        opt(s.rss_lsq_slope_kib, 1)
    );
    let _ = writeln!(
        o,
        "| heap in use after track {} | {} MiB |",
        marks
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(" / "),
        marks
            .iter()
            .map(|n| mib_opt(s.rows.get(n - 1).map(|r| r.heap_kb)))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    let _ = writeln!(
        o,
        "| heap slope, tracks {}–{} | {} KiB/track (bound {HEAP_SLOPE_BOUND_KIB:.0}) |",
        s.slope_from,
        s.rows.len(),
        opt(s.heap_slope_kib, 1)
    );
    let range = |r: Option<(usize, usize)>| {
        r.map(|(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}–{hi}")
            }
        })
        .unwrap_or_else(|| "—".into())
    };
    let _ = writeln!(
        o,
        "| threads after each track | {} (tracks 1–{}: {}; after: {}) |",
        range(s.threads_range()),
        s.slope_from,
        range(s.threads_warmup),
        range(s.threads_after)
    );
    let _ = writeln!(
        o,
        "| threads before the pipeline / 1 s after NULL | {} / {} |",
        s.start_threads, s.null_threads
    );
    let _ = writeln!(
        o,
        "| RSS / heap before the pipeline, 1 s after NULL | {:.1} / {:.1} MiB, {:.1} / {:.1} MiB |",
        mib(s.start_rss_kb),
        mib(s.start_heap_kb),
        mib(s.null_rss_kb),
        mib(s.null_heap_kb)
    );
    let _ = writeln!(
        o,
        "| verdict | {} |\n",
        match (s.flat, s.problems.is_empty()) {
            (_, false) => format!("**failed**: {}", short(&s.problems.join("; "))),
            (Some(true), true) => format!("flat: {}", s.why),
            (Some(false), true) => format!("**not flat**: {}", s.why),
            (None, true) => format!("every track played; flatness {}", s.why),
        }
    );
    if s.problems.len() > 1 {
        let _ = writeln!(o, "Problems:\n");
        for p in &s.problems {
            let _ = writeln!(o, "- {}", short(p));
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "<details><summary>Every track</summary>\n");
    let _ = writeln!(
        o,
        "| # | track | quality | at the sink | samples s | buffers s | catalogue s | ended at s | RSS MiB | RSS low MiB | heap MiB | threads |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, t) in s.rows.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {:.3} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            i + 1,
            t.id,
            t.quality,
            t.formats,
            opt(t.played_ms.map(|m| m / 1000.0), 3),
            opt(t.duration_ms.map(|m| m / 1000.0), 3),
            t.expected_ms as f64 / 1000.0,
            t.ended_s,
            mib(t.rss_kb),
            mib(t.rss_min_kb),
            mib(t.heap_kb),
            t.threads
        );
    }
    let _ = writeln!(o, "\n</details>\n");
    o
}

/// `old` with its soak section (from [`SOAK_HEADING`] to the next `## ` heading or the kept
/// part) replaced by `section`; without one, `section` goes before the targets, else before
/// the kept part, else at the end.
pub fn splice_soak(old: &str, section: &str) -> String {
    let section = format!("{}\n\n", section.trim_end());
    let line_start = |at: &str| {
        old.match_indices(at)
            .map(|(i, _)| i)
            .find(|i| *i == 0 || old.as_bytes()[i - 1] == b'\n')
    };
    if let Some(start) = line_start(SOAK_HEADING) {
        let rest = &old[start + SOAK_HEADING.len()..];
        let end = [rest.find("\n## "), rest.find(KEPT_MARKER)]
            .into_iter()
            .flatten()
            .min()
            .map(|i| {
                let i = start + SOAK_HEADING.len() + i;
                if old.as_bytes()[i] == b'\n' {
                    i + 1
                } else {
                    i
                }
            })
            .unwrap_or(old.len());
        return format!("{}{section}{}", &old[..start], &old[end..]);
    }
    match line_start("## Targets").or_else(|| line_start(KEPT_MARKER)) {
        Some(at) => format!("{}{section}{}", &old[..at], &old[at..]),
        None => format!("{}\n\n{section}", old.trim_end()),
    }
}

/// How many numeric table cells a report holds (the smoke test's well-formedness check).
pub fn numeric_cells(md: &str) -> usize {
    md.lines()
        .filter(|l| l.starts_with('|'))
        .flat_map(|l| l.split('|'))
        .filter(|c| {
            let c = c.trim().trim_end_matches('×');
            !c.is_empty() && c.parse::<f64>().is_ok()
        })
        .count()
}

#[cfg(test)]
mod kept_notes_tests {
    use super::*;

    #[test]
    fn a_soak_section_replaces_the_old_one_or_goes_before_the_targets() {
        let new = "## Soak: 50 tracks\nnew\n";
        let with_old = format!(
            "# B\n## CPU\nx\n\n## Soak: 50 tracks\nold\n\n## Targets (issue 7)\nt\n\n{KEPT_MARKER}\nkept\n"
        );
        assert_eq!(
            splice_soak(&with_old, new),
            format!(
                "# B\n## CPU\nx\n\n## Soak: 50 tracks\nnew\n\n## Targets (issue 7)\nt\n\n{KEPT_MARKER}\nkept\n"
            )
        );
        let without = format!("# B\n## CPU\nx\n\n## Targets (issue 7)\nt\n\n{KEPT_MARKER}\nkept\n");
        assert_eq!(splice_soak(&without, new), with_old.replace("old", "new"));
        let last = format!("# B\n## Soak: 6 tracks\nold\n\n{KEPT_MARKER}\nkept\n");
        assert_eq!(
            splice_soak(&last, new),
            format!("# B\n## Soak: 50 tracks\nnew\n\n{KEPT_MARKER}\nkept\n")
        );
        assert_eq!(
            splice_soak("# B\n", new),
            "# B\n\n## Soak: 50 tracks\nnew\n\n"
        );
    }

    #[test]
    fn a_new_report_keeps_the_hand_written_part_only() {
        let old = format!("# Benchmarks\nold figures\n\n{KEPT_MARKER}\n## Notes\nby hand\n");
        let new = with_kept_notes("# Benchmarks\nnew figures\n".into(), Some(&old));
        assert_eq!(
            new,
            format!("# Benchmarks\nnew figures\n\n{KEPT_MARKER}\n## Notes\nby hand\n")
        );
        assert_eq!(with_kept_notes("x\n".into(), Some("no marker")), "x\n");
        assert_eq!(with_kept_notes("x\n".into(), None), "x\n");
    }
}
