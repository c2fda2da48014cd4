//! The harness in its quickest form (one short scenario, both players, every section shortened)
//! must still write a well-formed report with measured numbers, so it never rots.

use std::process::Command;
use std::time::{Duration, Instant};

fn section<'a>(md: &'a str, heading: &str) -> &'a str {
    let start = md
        .find(heading)
        .unwrap_or_else(|| panic!("the report has no {heading:?} section:\n{md}"));
    let rest = &md[start + heading.len()..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

fn row<'a>(text: &'a str, starts: &str) -> Vec<&'a str> {
    let line = text
        .lines()
        .find(|l| l.starts_with(starts))
        .unwrap_or_else(|| panic!("no row starting {starts:?} in:\n{text}"));
    line.split('|').map(str::trim).collect()
}

fn number(cell: &str, what: &str) -> f64 {
    cell.trim_end_matches('×')
        .parse()
        .unwrap_or_else(|_| panic!("{what}: {cell:?} is not a number"))
}

#[test]
fn quick_run_writes_a_report_with_numbers_for_both_players() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("BENCHMARKS.md");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_amzmusic-bench"))
        .args(["--quick", "--no-criterion", "--out"])
        .arg(&out)
        .spawn()
        .expect("amzmusic-bench runs");
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(110) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("amzmusic-bench --quick took more than 110 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "amzmusic-bench --quick failed: {status}");
    let md = std::fs::read_to_string(&out).expect("the report was written");

    let machine = section(&md, "## Machine");
    assert!(number(row(machine, "| cores")[2], "cores") >= 1.0);
    assert!(row(machine, "| GStreamer")[2].starts_with("1."));
    assert!(section(&md, "## Commands").contains("amzmusic-bench --quick"));

    // dashdemux2 is GStreamer's own: it must always produce a score in [0, 1].
    let abr = section(&md, "## ABR quality of experience");
    let dash = row(abr, "| stable-high | dashdemux2 |");
    for (i, what) in [
        (3, "score"),
        (4, "quality"),
        (5, "rebuffer"),
        (6, "stall"),
        (7, "startup"),
    ] {
        let v = number(dash[i], what);
        assert!((0.0..=1.0).contains(&v), "dashdemux2 {what} {v}");
    }
    assert!(number(dash[3], "score") > 0.0, "dashdemux2 never played");
    // Ours: a score, or the reason there is none.
    let ours = row(abr, "| stable-high | ours |");
    assert!(
        ours[3].parse::<f64>().is_ok() || ours[14].contains("error"),
        "our row has neither a score nor an error: {ours:?}"
    );

    let ttfa = section(&md, "## Time to first audio");
    let cold = row(ttfa, "| 20 ms | cold |");
    assert!(number(cold[4], "dashdemux2 time to first audio") > 0.0);
    let cpu = section(&md, "## CPU and peak RSS");
    let dash_cpu = cpu
        .lines()
        .find(|l| l.contains("| dashdemux2 |"))
        .expect("a dashdemux2 CPU row");
    let cells: Vec<&str> = dash_cpu.split('|').map(str::trim).collect();
    assert!(number(cells[4], "CPU s") > 0.0);
    assert!(number(cells[7], "peak RSS") > 1.0);
    for scheme in ["| cenc |", "| cbcs |"] {
        let d = row(section(&md, "## Decryption throughput"), scheme);
        assert!(number(d[3], "in-process MB/s") > 0.0);
    }
    assert!(section(&md, "## Targets").contains("| met |") || md.contains("**missed**"));
    assert!(amzmusic_bench::report::numeric_cells(&md) >= 30, "{md}");
}
