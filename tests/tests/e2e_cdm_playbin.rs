// SPDX-License-Identifier: MPL-2.0
//! The environment chooses the CDM (docs/cdm.md): `playbin3 uri=amazonmusic://track/…` with no
//! element property at all, `AMAZONMUSIC_CDM` naming a CDM module (the OpenCDM or the Chromium
//! test module, or the built-in Clear Key CDM), against an emulator that
//! offers the catalogue for W3C Clear Key (`serve --key-system clearkey`: a Common System
//! `pssh` in the init segments, `dashif:Laurl` naming its Clear Key license server). The HD
//! track plays sample-identical to the source; the license is fetched during the 30 s clear
//! lead, and the module's own renewal message (2 s keys) renews it with no gap.
//!
//! The environment is process-wide, so this binary's tests run one at a time.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amzmusic_tests::*;
use gst::prelude::*;

const HD: &str = "B0EMUHD001";
const CLEARKEY_PATH: &str = "/license/v1/clearkey";
static SERIAL: Mutex<()> = Mutex::new(());

fn clearkey_posts(log: &[LoggedRequest]) -> Vec<u16> {
    log.iter()
        .filter(|r| r.method == "POST" && r.path.starts_with(CLEARKEY_PATH))
        .map(|r| r.status)
        .collect()
}

/// Plays the HD track (flac-44k16) through playbin3 with `AMAZONMUSIC_CDM=cdm`. Every
/// widevinedecrypt gets `license-expiration-secs=2` (element-setup), so the module renews on its
/// own. The output is held at 1 s of audio, inside the clear lead, until the license and one
/// renewal have been answered; then the rest plays as fast as it decodes.
fn play_hd_with(cdm: &str, module: Option<&Path>) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let e = EmulatorEnv::start(&["--key-system", "clearkey"]).unwrap();
    e.prepare(&[HD]).unwrap();
    e.apply();
    std::env::set_var("AMAZONMUSIC_CDM", cdm);
    let (pb, sink) = playbin3(&format!("amazonmusic://track/{HD}"), Some("hd"), None).unwrap();
    pin_max_bitrate(&pb, 1_000_000);
    let decryptors = Arc::new(Mutex::new(0usize));
    let d = decryptors.clone();
    pb.connect("element-setup", false, move |args| {
        let el = args[1].get::<gst::Element>().unwrap();
        if el.factory().is_some_and(|f| f.name() == "widevinedecrypt") {
            el.set_property("license-expiration-secs", 2u32);
            *d.lock().unwrap() += 1;
        }
        None
    });
    let mut licensed_at: Option<u64> = None;
    let mut module_loaded = false;
    let p = play_to_end(&pb, &sink, Duration::from_secs(90), |p| {
        let (pts, _) = *p.timestamps.last().unwrap();
        if licensed_at.is_some() || pts < 1_000_000_000 {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let ok = clearkey_posts(&e.requests().unwrap())
                .iter()
                .filter(|s| **s == 200)
                .count();
            if ok >= 2 {
                licensed_at = Some(pts);
                // The module is mapped into this process while it plays.
                let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
                module_loaded = module.is_some_and(|m| maps.contains(m.to_str().unwrap()));
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{cdm}: no license and renewal within 15 s while the output was held at {pts} ns");
    });
    std::env::remove_var("AMAZONMUSIC_CDM");
    if let Err(err) = p.ok() {
        panic!("{cdm}: {err}");
    }
    let at = licensed_at.expect("the output reached 1 s");
    assert!(at < 30_000_000_000, "{cdm}: licensed at {at} ns of output");
    assert_same_pcm(&p.bytes, &source_pcm(HD, "flac-44k16"), 4, cdm);
    let jumps = timestamp_jumps(&p.timestamps);
    assert!(jumps.is_empty(), "{cdm}: PTS jumps {jumps:?}");
    // The environment chose the CDM: playbin3 plugged a decryptor with no property set, the
    // module named was loaded into the process, and only the Clear Key server was asked (the
    // default stub speaks Widevine only and could not have decrypted this content).
    assert!(
        *decryptors.lock().unwrap() > 0,
        "{cdm}: playbin3 plugged no widevinedecrypt"
    );
    if let Some(m) = module {
        assert!(module_loaded, "{cdm}: {} was not loaded", m.display());
    }
    let log = e.requests().unwrap();
    let posts = clearkey_posts(&log);
    assert!(
        posts.iter().all(|s| *s == 200),
        "{cdm}: license POSTs {posts:?}"
    );
    assert!(
        posts.len() >= 2,
        "{cdm}: license and renewal, got {posts:?}"
    );
    let widevine = log
        .iter()
        .filter(|r| {
            r.method == "POST"
                && r.path.starts_with("/license/")
                && !r.path.starts_with(CLEARKEY_PATH)
        })
        .count();
    assert_eq!(widevine, 0, "{cdm}: Widevine license POSTs");
    eprintln!(
        "{cdm}: licensed while the output was at {:.3} s; {} Clear Key POSTs",
        at as f64 / 1e9,
        posts.len()
    );
}

#[test]
fn playbin3_plays_the_hd_track_through_the_ocdm_module_the_environment_names() {
    let m = ocdm_test_module();
    play_hd_with(&format!("ocdm:{},org.w3.clearkey", m.display()), Some(&m));
}

#[test]
fn playbin3_plays_the_hd_track_through_the_chromium_cdm_the_environment_names() {
    let m = chromium_test_module();
    play_hd_with(
        &format!("chromium:{},org.w3.clearkey", m.display()),
        Some(&m),
    );
}

#[test]
fn playbin3_plays_the_hd_track_through_the_built_in_clear_key_cdm() {
    play_hd_with("clearkey", None);
}
