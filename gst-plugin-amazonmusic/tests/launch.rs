// SPDX-License-Identifier: MPL-2.0
//! `gst-launch-1.0 -t amazonmusicsrc track-id=… ! fakesink` configured by the environment alone
//! (the emulator's --env-file exports) prints the track's tags. Runs the built plugin from
//! target/debug: `cargo build -p gst-plugin-amazonmusic` first.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::*;

#[test]
fn gst_launch_shows_the_tags_with_only_the_environment() {
    let dir = temp_dir();
    let env_file = dir.path().join("amz.env");
    let _emu = Emulator::start(&["--env-file", env_file.to_str().unwrap()]).unwrap();
    let plugin_dir = amzmusic_tests::target_profile_dir();
    if !plugin_dir.join("libgstamazonmusic.so").exists() {
        let msg = "target/debug/libgstamazonmusic.so is not built (cargo build -p gst-plugin-amazonmusic)";
        assert!(std::env::var_os("CI").is_none(), "{msg}");
        eprintln!("SKIP: {msg}");
        return;
    }
    let text = std::fs::read_to_string(&env_file).unwrap();
    let vars: HashMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    assert!(vars.contains_key("AMAZONMUSIC_API_ENDPOINT"), "{text}");
    let out = Command::new("gst-launch-1.0")
        .args([
            "-t",
            "amazonmusicsrc",
            "track-id=B0EMUHD001",
            "!",
            "fakesink",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("GST_PLUGIN_PATH", &plugin_dir)
        .envs(&vars)
        .output()
        .expect("gst-launch-1.0 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "title: Harbour Lights",
        "artist: The Loopback Ensemble",
        "album: Signals",
        "album artist: The Loopback Ensemble",
        "track number: 1",
        "disc number: 1",
        "ISRC: QZEMU2600101",
        "explicit: FALSE",
        "type: image/png",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
}
