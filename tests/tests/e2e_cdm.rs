// SPDX-License-Identifier: MPL-2.0
//! widevinedecrypt's `cdm` property end to end (docs/cdm.md): a file Shaka Packager protected
//! with a Clear Key PSSH (the W3C common `pssh`, system 1077efec…), licensed by the emulator's
//! Clear Key server, plays sample-identical to the clear packaging through `cdm=clearkey` and
//! through `cdm=ocdm:` with the workspace's test OpenCDM module (test-cdms/ocdm) and through
//! `cdm=chromium:` with its test Chromium CDM (test-cdms/chromium, at interfaces 10 and 11); a
//! renewal comes from each module's own message; and each way a CDM module fails is its
//! documented error.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use amzmusic_tests::emulator::Emulator;
use amzmusic_tests::play::{launch, play_to_end, Played};
use amzmusic_tests::{
    assert_same_pcm, chromium_test_module, init_gst, ocdm_test_module, shaka_tool,
    target_profile_dir,
};
use gst::prelude::*;
use serde_json::json;

const KID: &str = "11223344556677881122334455667788";
const KEY: &str = "99887766554433229988776655443322";
const CLEARKEY_PATH: &str = "/license/v1/clearkey";
/// 8 s of music-like FLAC, 2 s clear lead: short in real time.
const SECONDS: u32 = 8;

struct Media {
    dir: PathBuf,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The clear source packaged clear, and with a Clear Key PSSH in cenc and cbcs.
fn media() -> Option<&'static Media> {
    static M: OnceLock<Option<Media>> = OnceLock::new();
    M.get_or_init(|| {
        let ffmpeg = shaka_tool("ffmpeg")?;
        let packager = shaka_tool("packager")?;
        let dir = target_profile_dir().join("e2e-cdm-media-v1");
        if dir.join("done").exists() {
            return Some(Media { dir });
        }
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("source.mp4");
        run(Command::new(&ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("sine=f=440:r=44100:d={SECONDS}"),
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("anoisesrc=r=44100:d={SECONDS}:a=0.05:c=pink"),
            ])
            .args([
                "-filter_complex",
                "[0][1]amix=inputs=2,volume=2,aformat=sample_fmts=s16:channel_layouts=stereo",
            ])
            .args(["-c:a", "flac", "-strict", "-2"])
            .arg(&src));
        let package = |out: &str, scheme: Option<&str>| {
            let mut cmd = Command::new(&packager);
            cmd.arg(format!(
                "in={},stream=audio,output={}",
                src.display(),
                dir.join(out).display()
            ));
            if let Some(scheme) = scheme {
                cmd.args([
                    "--enable_raw_key_encryption",
                    "--keys",
                    &format!("label=:key_id={KID}:key={KEY}"),
                    "--protection_scheme",
                    scheme,
                    "--clear_lead",
                    "2",
                    "--protection_systems",
                    "CommonSystem",
                ]);
            }
            cmd.args(["--segment_duration", "2", "--fragment_duration", "2"]);
            run(&mut cmd);
        };
        package("clear.mp4", None);
        package("cenc.mp4", Some("cenc"));
        package("cbcs.mp4", Some("cbcs"));
        std::fs::write(dir.join("done"), b"").unwrap();
        Some(Media { dir })
    })
    .as_ref()
}

/// An emulator of the test's own (its request log counts that test's license POSTs only),
/// with the file's key registered at its Clear Key server.
fn emulator() -> Emulator {
    let e = Emulator::start(&[]).expect("emulator");
    assert_eq!(
        e.post_json("/_emulator/clearkey", json!({ "keys": { KID: KEY } })),
        201
    );
    e
}

const DECODE: &str =
    "flacparse ! flacdec ! audioconvert ! audio/x-raw,format=S16LE ! appsink name=sink";

fn play(file: &Path, decryptor: Option<&str>, sync: bool) -> Played {
    let desc = match decryptor {
        Some(props) => format!(
            "filesrc location={} ! qtdemux ! widevinedecrypt name=d {props} ! {DECODE}",
            file.display()
        ),
        None => format!("filesrc location={} ! qtdemux ! {DECODE}", file.display()),
    };
    let (pipeline, sink) = launch(&desc).unwrap();
    sink.set_sync(sync);
    play_to_end(
        pipeline.upcast_ref(),
        &sink,
        Duration::from_secs(60),
        |_| {},
    )
}

fn license_posts(e: &Emulator) -> usize {
    e.calls("POST", CLEARKEY_PATH).len()
}

#[test]
fn a_shaka_clear_key_file_plays_sample_identical_through_clearkey_and_the_ocdm_and_chromium_modules(
) {
    let Some(m) = media() else { return };
    let e = emulator();
    let clear = play(&m.dir.join("clear.mp4"), None, false);
    clear.ok().unwrap();
    assert!(clear.bytes.len() > SECONDS as usize * 44100 * 4 * 9 / 10);
    let url = e.url(CLEARKEY_PATH);
    for cdm in [
        "clearkey".to_string(),
        format!("ocdm:{},org.w3.clearkey", ocdm_test_module().display()),
        format!(
            "chromium:{},org.w3.clearkey",
            chromium_test_module().display()
        ),
        // The module creates no CDM at interface 10 for this key system: the host falls back
        // to 11.
        format!(
            "chromium:{},org.w3.clearkey.x-only-11",
            chromium_test_module().display()
        ),
    ] {
        for scheme in ["cenc", "cbcs"] {
            let before = license_posts(&e);
            let got = play(
                &m.dir.join(format!("{scheme}.mp4")),
                Some(&format!("cdm=\"{cdm}\" license-url={url}")),
                false,
            );
            got.ok()
                .unwrap_or_else(|err| panic!("{cdm} {scheme}: {err}"));
            assert_same_pcm(&got.bytes, &clear.bytes, 4, &format!("{cdm} {scheme}"));
            assert_eq!(license_posts(&e) - before, 1, "{cdm} {scheme}: one license");
        }
    }
}

/// Keys for 2 s: the module sends a renewal at 1.6 s, and again after each renewal; the track
/// plays in real time (sync) for its 8 s.
fn renews_by_the_modules_own_message(cdm: &str) {
    let Some(m) = media() else { return };
    let e = emulator();
    let clear = play(&m.dir.join("clear.mp4"), None, false);
    let before = license_posts(&e);
    let start = Instant::now();
    let got = play(
        &m.dir.join("cenc.mp4"),
        Some(&format!(
            "cdm=\"{cdm}\" license-url={} license-expiration-secs=2",
            e.url(CLEARKEY_PATH)
        )),
        true,
    );
    got.ok().unwrap_or_else(|err| panic!("{cdm}: {err}"));
    assert_same_pcm(
        &got.bytes,
        &clear.bytes,
        4,
        &format!("{cdm}: renewed by the module"),
    );
    let jumps = amzmusic_tests::timestamp_jumps(&got.timestamps);
    assert!(jumps.is_empty(), "{cdm}: PTS jumps {jumps:?}");
    let posts = license_posts(&e) - before;
    eprintln!(
        "{cdm}: license POSTs: {posts} in {:.1} s of real time",
        start.elapsed().as_secs_f64()
    );
    // The first license and at least 3 renewals (at 1.6 s, 3.2 s, 4.8 s, …) in ~8 s.
    assert!(posts >= 4, "{cdm}: {posts} license POSTs");
}

#[test]
fn the_ocdm_modules_own_renewal_message_renews_without_a_gap() {
    renews_by_the_modules_own_message(&format!(
        "ocdm:{},org.w3.clearkey",
        ocdm_test_module().display()
    ));
}

#[test]
fn the_chromium_modules_own_renewal_message_renews_without_a_gap() {
    renews_by_the_modules_own_message(&format!(
        "chromium:{},org.w3.clearkey",
        chromium_test_module().display()
    ));
}

/// The error of a pipeline whose decryptor has `props`: from the state change (READY) or
/// from playing, with its domain and code.
fn failure(props: &str) -> (gst::glib::Error, String) {
    init_gst();
    let m = media().expect("media");
    let desc = format!(
        "filesrc location={} ! qtdemux ! widevinedecrypt name=d {props} ! {DECODE}",
        m.dir.join("cenc.mp4").display()
    );
    let (pipeline, sink) = launch(&desc).unwrap();
    let bus = pipeline.bus().unwrap();
    if pipeline.set_state(gst::State::Ready).is_err() {
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
            .expect("an error message");
        let _ = pipeline.set_state(gst::State::Null);
        let gst::MessageView::Error(err) = msg.view() else {
            unreachable!()
        };
        return (err.error(), err.error().message().to_string());
    }
    let p = play_to_end(
        pipeline.upcast_ref(),
        &sink,
        Duration::from_secs(30),
        |_| {},
    );
    let (err, _) = p.gerror.unwrap_or_else(|| panic!("{props}: no error"));
    let text = err.message().to_string();
    (err, text)
}

#[test]
fn each_cdm_module_failure_is_its_documented_error() {
    if media().is_none() {
        return;
    }
    let e = emulator();
    let module = ocdm_test_module();
    let chromium = chromium_test_module();
    let url = e.url(CLEARKEY_PATH);
    let plugin = target_profile_dir().join("libgstwidevinestub.so");
    let check = |props: String,
                 lib: Option<gst::LibraryError>,
                 stream: Option<gst::StreamError>,
                 wants: &[String]| {
        let (err, text) = failure(&props);
        if let Some(l) = lib {
            assert!(err.matches(l), "{props}: {err:?} is not {l:?}");
        }
        if let Some(s) = stream {
            assert!(err.matches(s), "{props}: {err:?} is not {s:?}");
        }
        for w in wants {
            assert!(text.contains(w.as_str()), "{props}: {text:?} lacks {w:?}");
        }
        eprintln!("{props}\n  -> {text}");
    };
    check(
        "cdm=ocdm:/nonexistent/libocdm.so".into(),
        Some(gst::LibraryError::Init),
        None,
        &["cannot load the OpenCDM library /nonexistent/libocdm.so".into()],
    );
    check(
        format!("cdm=\"ocdm:{},org.w3.clearkey\"", plugin.display()),
        Some(gst::LibraryError::Init),
        None,
        &[
            format!("the OpenCDM library {}", plugin.display()),
            "has no symbol opencdm_is_type_supported".into(),
        ],
    );
    check(
        format!("cdm=\"ocdm:{},com.widevine.alpha\"", module.display()),
        Some(gst::LibraryError::Init),
        None,
        &[
            "does not support key system com.widevine.alpha".into(),
            "ERROR_KEYSYSTEM_NOT_SUPPORTED".into(),
        ],
    );
    check(
        "cdm=widevine".into(),
        Some(gst::LibraryError::Settings),
        None,
        &["Invalid cdm property".into(), "unknown CDM name".into()],
    );
    check(
        "cdm=chromium:/opt/libwidevinecdm.so".into(),
        Some(gst::LibraryError::Init),
        None,
        &["cannot load the Chromium CDM library /opt/libwidevinecdm.so".into()],
    );
    check(
        format!("cdm=\"chromium:{},org.w3.clearkey\"", plugin.display()),
        Some(gst::LibraryError::Init),
        None,
        &[
            format!("the Chromium CDM library {}", plugin.display()),
            "has no symbol InitializeCdmModule_4".into(),
        ],
    );
    check(
        format!(
            "cdm=\"chromium:{},org.w3.clearkey.x-host-9\"",
            chromium.display()
        ),
        Some(gst::LibraryError::Init),
        None,
        &[
            format!(
                "the Chromium CDM {} (version amzmusic-test-chromium-cdm",
                chromium.display()
            ),
            "asks for host interface version 9: this host speaks 10 and 11".into(),
        ],
    );
    check(
        format!("cdm=\"chromium:{},com.widevine.alpha\"", chromium.display()),
        Some(gst::LibraryError::Init),
        None,
        &[
            format!("the Chromium CDM {}", chromium.display()),
            "creates no CDM for key system com.widevine.alpha at interface version 10 or 11".into(),
        ],
    );
    check(
        format!(
            "cdm=\"chromium:{},org.w3.clearkey.x-fail-update\" license-url={url}",
            chromium.display()
        ),
        None,
        Some(gst::StreamError::Decrypt),
        &[
            "The license was rejected by the CDM".into(),
            format!(
                "chromium CDM {}: UpdateSession rejected: InvalidStateError 32343 test module: \
                 every license is refused (x-fail-update)",
                chromium.display()
            ),
        ],
    );
    check(
        format!(
            "cdm=\"chromium:{},org.w3.clearkey.x-fail-decrypt\" license-url={url}",
            chromium.display()
        ),
        None,
        Some(gst::StreamError::Decrypt),
        &[
            "Cannot decrypt sample".into(),
            format!(
                "chromium CDM {}: Decrypt failed (kDecryptError)",
                chromium.display()
            ),
        ],
    );
    check(
        format!(
            "cdm=\"ocdm:{},org.w3.clearkey.x-fail-update\" license-url={url}",
            module.display()
        ),
        None,
        Some(gst::StreamError::Decrypt),
        &[
            "The license was rejected by the CDM".into(),
            "failed opencdm_session_update: ERROR_FAIL".into(),
            "every license is refused".into(),
        ],
    );
    check(
        format!(
            "cdm=\"ocdm:{},org.w3.clearkey.x-fail-decrypt\" license-url={url}",
            module.display()
        ),
        None,
        Some(gst::StreamError::Decrypt),
        &[
            "Cannot decrypt sample".into(),
            "failed opencdm_session_decrypt_v2: ERROR_INVALID_DECRYPT_BUFFER".into(),
        ],
    );
}
