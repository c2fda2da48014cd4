//! Generic DASH audio packaged by tools we did not write (Shaka Packager, ffmpeg's dash muxer),
//! served over loopback HTTP with byte ranges, played through
//! `souphttpsrc ! amzdashdemux ! qtdemux ! flacparse ! flacdec`: sample-identical to the source.

mod common;

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use common::*;

const TRACK: &str = "B0EMUAL001";

struct Tools {
    ffmpeg: PathBuf,
    packager: PathBuf,
}

fn tools() -> Option<Tools> {
    Some(Tools {
        ffmpeg: amzmusic_tests::shaka_tool("ffmpeg")?,
        packager: amzmusic_tests::shaka_tool("packager")?,
    })
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The source PCM and its packagings, made once per target dir.
fn media() -> Option<&'static (PathBuf, Vec<u8>)> {
    static M: OnceLock<Option<(PathBuf, Vec<u8>)>> = OnceLock::new();
    M.get_or_init(|| {
        let t = tools()?;
        let pcm = source_pcm(TRACK, "flac-44k16");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("amzdash-packagers-v5");
        if dir.join("done").exists() {
            return Some((dir, pcm));
        }
        let _ = std::fs::remove_dir_all(&dir);
        for sub in [
            "shaka-base",
            "shaka-tpl",
            "ff-tpl",
            "ff-list",
            "shaka-opus-clear",
            "shaka-opus-cbcs",
            "opus48-shaka-clear",
            "opus48-shaka-cenc",
            "opus48-ff-tpl",
            "opus48-ff-list",
            "opus48-shaka-cbcs",
            "opus48-shaka-tpl-cbcs",
            "opus48-list-cbcs",
        ] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(dir.join("source.raw"), &pcm).unwrap();
        let ff = || {
            let mut c = Command::new(&t.ffmpeg);
            c.args(["-hide_banner", "-loglevel", "error", "-y"])
                .args(["-f", "s16le", "-ar", "44100", "-ac", "2", "-i"])
                .arg(dir.join("source.raw"))
                .args(["-c:a", "flac", "-strict", "-2"]);
            c
        };
        run(ff().arg(dir.join("flac.mp4")));
        // Shaka: on-demand profile (SegmentBase + sidx) and SegmentTemplate + SegmentTimeline.
        run(Command::new(&t.packager)
            .arg(format!(
                "in={},stream=audio,output={}",
                dir.join("flac.mp4").display(),
                dir.join("shaka-base/audio.mp4").display()
            ))
            .args(["--segment_duration", "4", "--mpd_output"])
            .arg(dir.join("shaka-base/manifest.mpd")));
        run(Command::new(&t.packager)
            .arg(format!(
                "in={},stream=audio,init_segment={},segment_template={}",
                dir.join("flac.mp4").display(),
                dir.join("shaka-tpl/init.mp4").display(),
                dir.join("shaka-tpl/$Number$.m4s").display()
            ))
            .args(["--generate_static_live_mpd", "--segment_duration", "4"])
            .arg("--mpd_output")
            .arg(dir.join("shaka-tpl/manifest.mpd")));
        // ffmpeg's dash muxer: SegmentTemplate@duration (no timeline) and SegmentList.
        run(ff()
            .args(["-f", "dash", "-seg_duration", "4", "-use_template", "1"])
            .args(["-use_timeline", "0"])
            .arg(dir.join("ff-tpl/manifest.mpd")));
        run(ff()
            .args(["-f", "dash", "-seg_duration", "4", "-use_template", "0"])
            .args(["-use_timeline", "0"])
            .arg(dir.join("ff-list/manifest.mpd")));
        // Opus (ffmpeg's libopus), packaged by Shaka clear and as cbcs with an 8 s clear lead.
        run(Command::new(&t.ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "s16le", "-ar", "44100", "-ac", "2", "-i"])
            .arg(dir.join("source.raw"))
            .args(["-c:a", "libopus", "-b:a", "128k"])
            .arg(dir.join("opus.mp4")));
        // Shaka's on-demand packaging of an Opus file: clear, or `scheme` with an 8 s clear lead.
        let shaka_opus = |input: &str, sub: &str, scheme: Option<&str>| {
            let mut c = Command::new(&t.packager);
            c.arg(format!(
                "in={},stream=audio,output={}",
                dir.join(input).display(),
                dir.join(sub).join("audio.mp4").display()
            ))
            .args(["--segment_duration", "4", "--mpd_output"])
            .arg(dir.join(sub).join("manifest.mpd"));
            if let Some(scheme) = scheme {
                c.args(["--enable_raw_key_encryption", "--keys"])
                    .arg(format!("label=:key_id={OPUS_KID}:key={OPUS_KEY}"))
                    .args(["--protection_scheme", scheme, "--clear_lead", "8"])
                    .args(["--protection_systems", "Widevine"]);
            }
            run(&mut c);
        };
        shaka_opus("opus.mp4", "shaka-opus-clear", None);
        shaka_opus("opus.mp4", "shaka-opus-cbcs", Some("cbcs"));
        // Opus from a 48 kHz source (no resampling): libopus's 312-sample priming signalled by
        // an edit list, the last frame trimmed, packaged by Shaka (SegmentBase, clear and cenc)
        // and by ffmpeg's dash muxer (SegmentTemplate with a timeline).
        // The source: the track's samples resampled to 48 kHz once (Opus's only rate).
        run(Command::new(&t.ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "s16le", "-ar", "44100", "-ac", "2", "-i"])
            .arg(dir.join("source.raw"))
            .args(["-ar", "48000", "-f", "s16le"])
            .arg(dir.join("source48.raw")));
        run(Command::new(&t.ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "s16le", "-ar", "48000", "-ac", "2", "-i"])
            .arg(dir.join("source48.raw"))
            .args(["-c:a", "libopus", "-b:a", "128k"])
            .arg(dir.join("opus48.mp4")));
        shaka_opus("opus48.mp4", "opus48-shaka-clear", None);
        shaka_opus("opus48.mp4", "opus48-shaka-cenc", Some("cenc"));
        run(Command::new(&t.ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(dir.join("opus48.mp4"))
            .args(["-c", "copy", "-f", "dash", "-dash_segment_type", "mp4"])
            .args([
                "-seg_duration",
                "4",
                "-use_template",
                "1",
                "-use_timeline",
                "1",
            ])
            .arg(dir.join("opus48-ff-tpl/manifest.mpd")));
        run(Command::new(&t.ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(dir.join("opus48.mp4"))
            .args(["-c", "copy", "-f", "dash", "-dash_segment_type", "mp4"])
            .args(["-seg_duration", "4", "-use_template", "0"])
            .args(["-use_timeline", "0"])
            .arg(dir.join("opus48-ff-list/manifest.mpd")));
        shaka_opus("opus48.mp4", "opus48-shaka-cbcs", Some("cbcs"));
        // Shaka's live-profile packaging: SegmentTemplate + SegmentTimeline, cbcs, a clear lead.
        run(Command::new(&t.packager)
            .arg(format!(
                "in={},stream=audio,init_segment={},segment_template={}",
                dir.join("opus48.mp4").display(),
                dir.join("opus48-shaka-tpl-cbcs/init.mp4").display(),
                dir.join("opus48-shaka-tpl-cbcs/$Number$.m4s").display()
            ))
            .args(["--generate_static_live_mpd", "--segment_duration", "4"])
            .args(["--enable_raw_key_encryption", "--keys"])
            .arg(format!("label=:key_id={OPUS_KID}:key={OPUS_KEY}"))
            .args(["--protection_scheme", "cbcs", "--clear_lead", "8"])
            .args(["--protection_systems", "Widevine", "--mpd_output"])
            .arg(dir.join("opus48-shaka-tpl-cbcs/manifest.mpd")));
        segment_list_from_sidx(
            &dir.join("opus48-shaka-cbcs"),
            &dir.join("opus48-list-cbcs"),
        );
        std::fs::write(dir.join("done"), b"").unwrap();
        Some((dir, pcm))
    })
    .as_ref()
}

/// Amazon's own addressing (its vinyl player's test manifests): one file, a `SegmentList` of
/// `mediaRange`s, the first starting after the file's `sidx`. Made from a Shaka SegmentBase
/// packaging by reading its `sidx`: the same file, addressed as Amazon addresses it.
fn segment_list_from_sidx(from: &Path, to: &Path) {
    let file = std::fs::read(from.join("audio.mp4")).unwrap();
    std::fs::write(to.join("audio.mp4"), &file).unwrap();
    let mpd = std::fs::read_to_string(from.join("manifest.mpd")).unwrap();
    let attr = |name: &str| {
        let at = mpd.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        let v = &mpd[at..at + mpd[at..].find('"').unwrap()];
        let (a, b) = v.split_once('-').unwrap();
        (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap())
    };
    let (index_start, index_end) = attr("indexRange");
    let (init_start, init_end) = attr("range");
    let sidx =
        gstamzdash::mpd::sidx::parse(&file[index_start..=index_end], index_start as u64).unwrap();
    assert!(
        sidx.references[0].offset > (index_end as u64),
        "media after the sidx"
    );
    let longest = sidx.references.iter().map(|r| r.duration).max().unwrap();
    let mut list = format!(
        "<SegmentList timescale=\"{}\" duration=\"{longest}\">\
         <Initialization range=\"{init_start}-{init_end}\"/>",
        sidx.timescale
    );
    for r in &sidx.references {
        list += &format!(
            "<SegmentURL mediaRange=\"{}-{}\"/>",
            r.offset,
            r.offset + r.size - 1
        );
    }
    list += "</SegmentList>";
    let start = mpd.find("<SegmentBase").unwrap();
    let end = mpd.find("</SegmentBase>").unwrap() + "</SegmentBase>".len();
    let out = format!("{}{list}{}", &mpd[..start], &mpd[end..]);
    std::fs::write(to.join("manifest.mpd"), out).unwrap();
}

/// A static file server with byte ranges, as any CDN.
async fn serve_file(
    State(root): State<Arc<PathBuf>>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if path.contains("..") {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Ok(data) = std::fs::read(root.join(&path)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| {
            let a: usize = a.parse().ok()?;
            let b: usize = if b.is_empty() {
                data.len() - 1
            } else {
                b.parse().ok()?
            };
            (a <= b && b < data.len()).then_some((a, b))
        });
    match range {
        Some((a, b)) => (
            StatusCode::PARTIAL_CONTENT,
            [(
                header::CONTENT_RANGE,
                format!("bytes {a}-{b}/{}", data.len()),
            )],
            data[a..=b].to_vec(),
        )
            .into_response(),
        None => data.into_response(),
    }
}

fn serve(rt: &tokio::runtime::Runtime, root: PathBuf) -> String {
    rt.block_on(async move {
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::get(serve_file))
            .with_state(Arc::new(root));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        format!("http://{addr}")
    })
}

fn plays(sub: &str, want_scheme: &str) {
    let Some((dir, pcm)) = media() else { return };
    let mpd = std::fs::read_to_string(dir.join(sub).join("manifest.mpd")).unwrap();
    assert!(
        mpd.contains(want_scheme),
        "{sub}: expected {want_scheme} in\n{mpd}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = serve(&rt, dir.clone());
    let out = play_desc(
        &format!(
            "souphttpsrc location={base}/{sub}/manifest.mpd ! amzdashdemux name=demux ! qtdemux ! \
             flacparse ! flacdec ! audio/x-raw,format=S16LE ! appsink name=sink"
        ),
        None,
    );
    assert!(out.error.is_none(), "{sub}: {:?}", out.error);
    amzmusic_tests::assert_same_pcm(&out.pcm, pcm, 4, sub);
}

const OPUS_KID: &str = "00112233445566778899aabbccddeeff";
const OPUS_KEY: &str = "0f0e0d0c0b0a09080706050403020100";

/// Shaka's cbcs Opus with a clear lead: its clear-lead fragments carry no `senc` and its
/// encrypted ones an empty one, so 1.22's qtdemux gives both the same protection meta. Through
/// amzdashdemux (which marks the clear lead in-band) and widevinedecrypt the decoded audio must
/// equal Shaka's clear packaging of the same Opus stream, sample for sample.
#[test]
fn shaka_cbcs_opus_with_a_clear_lead_decodes_identical_to_its_clear_packaging() {
    let Some((dir, _)) = media() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = serve(&rt, dir.clone());
    let decode = |sub: &str, decrypt: &str| {
        let out = play_desc(
            &format!(
                "souphttpsrc location={base}/{sub}/manifest.mpd ! amzdashdemux name=demux ! \
                 qtdemux {decrypt} ! opusparse ! opusdec ! audio/x-raw,format=S16LE ! \
                 appsink name=sink"
            ),
            None,
        );
        assert!(out.error.is_none(), "{sub}: {:?}", out.error);
        assert!(out.eos, "{sub}: no EOS");
        out.pcm
    };
    let want = decode("shaka-opus-clear", "");
    let got = decode(
        "shaka-opus-cbcs",
        &format!("! widevinedecrypt keys={OPUS_KID}:{OPUS_KEY}"),
    );
    assert!(
        want.len() > 48_000 * 4 * 20,
        "clear decode: {} bytes",
        want.len()
    );
    amzmusic_tests::assert_same_pcm(&got, &want, 4, "shaka cbcs opus");
}

#[test]
fn shaka_segment_base_with_sidx() {
    plays("shaka-base", "indexRange");
}

#[test]
fn shaka_segment_template_with_timeline() {
    plays("shaka-tpl", "SegmentTimeline");
}

#[test]
fn ffmpeg_segment_template_without_timeline() {
    plays("ff-tpl", "SegmentTemplate");
}

#[test]
fn ffmpeg_segment_list() {
    plays("ff-list", "SegmentList");
}

/// Decodes `desc` (ending in `appsink name=sink`) to S16LE.
fn decode(desc: &str, what: &str) -> Vec<u8> {
    let out = play_desc(desc, None);
    assert!(out.error.is_none(), "{what}: {:?}", out.error);
    assert!(out.eos, "{what}: no EOS");
    out.pcm
}

/// Opus with an edit list (the encoder's priming) through amzdashdemux starts and ends where
/// GStreamer's own decode of the file (qtdemux applying the edit list) does, whatever the
/// addressing and the scheme, and is exactly as long as the source.
#[test]
fn opus_with_an_edit_list_starts_and_ends_with_the_source() {
    let Some((dir, _)) = media() else { return };
    let source_len = std::fs::read(dir.join("source48.raw")).unwrap().len();
    let want = decode(
        &format!(
            "filesrc location={} ! qtdemux ! opusdec ! audio/x-raw,format=S16LE ! \
             appsink name=sink",
            dir.join("opus48.mp4").display()
        ),
        "filesrc ! qtdemux",
    );
    // GStreamer's file path trims the start and ends short of the source (measured: 1151688
    // frames for 1152000, the priming's 312 missing at the end): we match the source.
    println!(
        "qtdemux file decode: {} frames, source {} frames",
        want.len() / 4,
        source_len / 4
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = serve(&rt, dir.clone());
    let keys = format!("! widevinedecrypt keys={OPUS_KID}:{OPUS_KEY}");
    let keys = keys.as_str();
    // (packaging, what its MPD must say: addressing and scheme, the decryptor it needs)
    for (sub, says, decrypt) in [
        ("opus48-shaka-clear", &["<SegmentBase"][..], ""),
        (
            "opus48-shaka-cenc",
            &["<SegmentBase", "value=\"cenc\""],
            keys,
        ),
        (
            "opus48-shaka-cbcs",
            &["<SegmentBase", "value=\"cbcs\""],
            keys,
        ),
        (
            "opus48-ff-tpl",
            &["<SegmentTemplate", "<SegmentTimeline"],
            "",
        ),
        (
            "opus48-shaka-tpl-cbcs",
            &["<SegmentTimeline", "value=\"cbcs\""],
            keys,
        ),
        (
            "opus48-ff-list",
            &["<SegmentList", "<SegmentURL media="],
            "",
        ),
        (
            "opus48-list-cbcs",
            &["<SegmentList", "mediaRange=", "value=\"cbcs\""],
            keys,
        ),
    ] {
        let mpd = std::fs::read_to_string(dir.join(sub).join("manifest.mpd")).unwrap();
        for s in says {
            assert!(mpd.contains(s), "{sub}: expected {s} in\n{mpd}");
        }
        let got = decode(
            &format!(
                "souphttpsrc location={base}/{sub}/manifest.mpd ! amzdashdemux ! qtdemux \
                 {decrypt} ! opusdec ! audio/x-raw,format=S16LE ! appsink name=sink"
            ),
            sub,
        );
        assert_eq!(got.len(), source_len, "{sub}: length against the source");
        let n = got.len().min(want.len());
        amzmusic_tests::assert_same_pcm(&got[..n], &want[..n], 4, sub);
    }
}
