//! Embedding from C and Python: `examples/c/play.c` (gst_element_factory_make and
//! gst_parse_launch) is compiled with cc + pkg-config and run, and `examples/python/play.py`
//! (Gst.parse_launch through python3-gi) is run, each against a real emulator process whose
//! --env-file is applied to the program's environment; each plays the HD track to its end
//! (across the encrypted boundary) and exits 0.

use amzmusic_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn env() -> &'static EmulatorEnv {
    static E: OnceLock<EmulatorEnv> = OnceLock::new();
    E.get_or_init(|| EmulatorEnv::start(&[]).expect("emulator"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `program` under coreutils' `timeout` (a hung example fails the test instead of hanging it),
/// with the emulator's exports and this workspace's plugins in its environment.
fn example(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("timeout");
    c.args(["--kill-after=5", "60"]).arg(program);
    for (k, v) in &env().vars {
        c.env(k, v);
    }
    c.env("GST_PLUGIN_PATH", target_profile_dir());
    c
}

fn check(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what} failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The program said it reached the end of the 60 s track.
fn assert_played_to_the_end(what: &str, stdout: &str) {
    assert!(
        stdout.contains("played B0EMUHD001 to the end"),
        "{what}: {stdout}"
    );
}

#[test]
fn c_example_builds_and_plays_with_factory_make_and_parse_launch() {
    let tmp = temp_dir("embed-c");
    let exe = tmp.path().join("play");
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "gstreamer-1.0"])
        .output()
        .expect("pkg-config (scripts/setup.sh installs it)");
    assert!(
        flags.status.success(),
        "pkg-config gstreamer-1.0: libgstreamer1.0-dev missing"
    );
    let flags = String::from_utf8(flags.stdout).unwrap();
    let out = Command::new("cc")
        .args(["-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(repo().join("examples/c/play.c"))
        .args(flags.split_whitespace())
        .output()
        .expect("cc (build-essential)");
    check("cc examples/c/play.c", &out);
    for mode in [&[][..], &["--parse"][..]] {
        let mut c = example(&exe);
        c.arg("B0EMUHD001").args(mode);
        let stdout = check(&format!("play {mode:?}"), &c.output().unwrap());
        assert_played_to_the_end(&format!("C {mode:?}"), &stdout);
    }
}

#[test]
fn python_example_plays_to_a_wav_file() {
    // python3-gi is Debian's, for Debian's interpreter (a pyenv python3 first on PATH lacks it).
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import gi; gi.require_version('Gst', '1.0')"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("python3-gi with GStreamer 1.0 typelibs (scripts/setup.sh installs them)");
    let tmp = temp_dir("embed-py");
    let wav = tmp.path().join("out.wav");
    let mut c = example(python);
    c.arg(repo().join("examples/python/play.py"))
        .arg("B0EMUHD001")
        .arg("--wav")
        .arg(&wav);
    let stdout = check("play.py", &c.output().unwrap());
    assert_played_to_the_end("Python", &stdout);
    // 60 s of 48 kHz 24-bit stereo in the data chunk; a 44.1 kHz representation (which one
    // plays is the ABR's choice) resampled to 48 kHz may round to one more frame.
    let file = std::fs::read(&wav).unwrap();
    let chunks = riff_chunks(&file);
    let data = chunks
        .iter()
        .find(|(id, _)| id == b"data")
        .map(|(_, body)| body.len() as u64)
        .unwrap_or_else(|| panic!("{}: no data chunk", wav.display()));
    let want: u64 = 60 * 48_000 * 6;
    assert!(
        data.abs_diff(want) <= 6,
        "{}: {data} bytes of samples, want {want} (±1 frame)",
        wav.display()
    );
    // The track's tags reached the file (wavenc's LIST/INFO chunk: INAM is the title).
    let info = chunks
        .iter()
        .find(|(id, body)| id == b"LIST" && body.starts_with(b"INFO"))
        .map(|(_, body)| body.clone())
        .unwrap_or_default();
    assert!(
        info.windows(14).any(|w| w == b"Harbour Lights"),
        "{}: no title in the WAV's INFO chunk",
        wav.display()
    );
}

/// The chunks of a RIFF/WAVE file after its 12-byte header: (id, body).
fn riff_chunks(file: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    assert!(file.len() >= 12 && &file[..4] == b"RIFF" && &file[8..12] == b"WAVE");
    let mut out = Vec::new();
    let mut at = 12;
    while at + 8 <= file.len() {
        let id: [u8; 4] = file[at..at + 4].try_into().unwrap();
        let size = u32::from_le_bytes(file[at + 4..at + 8].try_into().unwrap()) as usize;
        let end = (at + 8 + size).min(file.len());
        out.push((id, file[at + 8..end].to_vec()));
        at = at + 8 + size + (size & 1);
    }
    out
}
