//! `amzmusic-bench`: runs the whole benchmark suite (or `--quick`, a smoke run) and writes
//! BENCHMARKS.md; `amzmusic-bench play --spec JSON` is the measured child process.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

use amzmusic_bench::suite::{self, Options, SCENARIOS};
use amzmusic_bench::{play, report, soak};

#[derive(Parser)]
#[command(
    name = "amzmusic-bench",
    version,
    about = "Benchmarks our pipeline beside playbin3 + dashdemux2 and writes BENCHMARKS.md"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Smoke run: one short scenario, both players, shortened measurements (about 30 s).
    #[arg(long)]
    quick: bool,
    /// Where to write the report (default: BENCHMARKS.md at the repository root; with
    /// --quick, BENCHMARKS-quick.md beside the binary).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the network scenarios (vinyl's published scores use 1).
    #[arg(long, default_value_t = 1)]
    seed: u32,
    /// Only these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',')]
    scenarios: Option<Vec<String>>,
    /// Time-to-first-audio processes per player and round trip.
    #[arg(long)]
    ttfa_repeats: Option<u32>,
    /// Skip the 60-minute track.
    #[arg(long)]
    skip_long: bool,
    /// Only these sections (comma-separated): abr, ttfa, cpu, decrypt, soak. A run of the soak
    /// alone into an existing report replaces only its soak section.
    #[arg(long, value_delimiter = ',')]
    sections: Option<Vec<String>>,
    /// Measure decryption in process only, without `cargo bench`.
    #[arg(long)]
    no_criterion: bool,
    /// Where the emulator caches its content.
    #[arg(long, env = "AMZMUSIC_EMULATOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Internal: one measured playback, printing `RESULT <json>`.
    #[command(hide = true)]
    Play {
        #[arg(long)]
        spec: String,
    },
    /// Internal: tracks back to back through one playbin3, printing `RESULT <json>`.
    #[command(hide = true)]
    Soak {
        #[arg(long)]
        spec: String,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match &cli.cmd {
        Some(Cmd::Play { spec }) => return play::child_main(spec),
        Some(Cmd::Soak { spec }) => return soak::child_main(spec),
        None => {}
    }
    let exe = std::env::current_exe()?;
    let profile_dir = suite::profile_dir_of(&exe)?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("bench/ has a parent")?
        .to_path_buf();
    let scenarios = match (&cli.scenarios, cli.quick) {
        (Some(s), _) => s.clone(),
        (None, true) => vec!["stable-high".to_string()],
        (None, false) => SCENARIOS.iter().map(|s| s.to_string()).collect(),
    };
    if let Some(bad) = scenarios.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        bail!("unknown scenario {bad:?}; known: {}", SCENARIOS.join(", "));
    }
    if let Some(bad) = cli
        .sections
        .iter()
        .flatten()
        .find(|s| !suite::SECTIONS.contains(&s.as_str()))
    {
        bail!(
            "unknown section {bad:?}; known: {}",
            suite::SECTIONS.join(", ")
        );
    }
    let out = cli.out.clone().unwrap_or_else(|| {
        if cli.quick {
            profile_dir.join("BENCHMARKS-quick.md")
        } else {
            repo.join("BENCHMARKS.md")
        }
    });
    let opts = Options {
        quick: cli.quick,
        seed: cli.seed,
        scenarios,
        data_dir: cli
            .data_dir
            .clone()
            .unwrap_or_else(|| profile_dir.join("emulator-test-data")),
        work_dir: profile_dir.join("amzmusic-bench-logs"),
        profile_dir,
        repo,
        ttfa_repeats: cli.ttfa_repeats.unwrap_or(if cli.quick { 1 } else { 3 }),
        rtts_ms: if cli.quick { vec![20] } else { vec![20, 80] },
        criterion: !cli.quick && !cli.no_criterion,
        skip_long: cli.quick || cli.skip_long,
        sections: cli
            .sections
            .clone()
            .unwrap_or_else(|| suite::SECTIONS.iter().map(|s| s.to_string()).collect()),
        command_line: std::env::args()
            .enumerate()
            .map(|(i, a)| {
                if i == 0 {
                    "amzmusic-bench".to_string()
                } else {
                    a
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        exe,
    };
    let only_soak = opts.sections.iter().all(|s| s == "soak");
    let results = suite::run(opts)?;
    let old = std::fs::read_to_string(&out).ok();
    let md = match (&old, &results.soak) {
        // The soak alone: the rest of the report stays as the run that wrote it left it.
        (Some(old), Some(soak)) if only_soak => {
            report::splice_soak(old, &report::soak_section(soak, &results, true))
        }
        _ => report::with_kept_notes(report::markdown(&results), old.as_deref()),
    };
    std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    if let Some(s) = results.soak.as_ref().filter(|s| !s.passed()) {
        let mut why = s.problems.clone();
        if s.flat == Some(false) {
            why.push(format!("not flat: {}", s.why));
        }
        bail!("the soak failed: {}", why.join("; "));
    }
    Ok(())
}
