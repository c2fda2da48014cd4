//! The emulator as the benchmark drives it: one `amzmusic-emulator serve` process, its admin
//! API (shaping, request log, content preparation) and the segment fetches its log records.

use amzmusic_tests::http_within;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::mpd::Ladder;

/// The emulator's env file and request log entries are the shared test harness's.
pub use amzmusic_tests::{parse_env_file, LoggedRequest};

/// How long an admin call may wait for its answer (`prepare` packages a track first).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(600);

/// A running `amzmusic-emulator serve --open-mirror --env-file …`, killed on drop.
pub struct Emulator {
    child: Child,
    pub base_url: String,
    /// `AMAZONMUSIC_*` variables from the env file, for our player's process.
    pub env: Vec<(String, String)>,
    /// The command line, for the report.
    pub command: String,
    _dir: tempfile::TempDir,
}

impl Emulator {
    pub fn start(bin: &Path, data_dir: &Path, extra: &[&str]) -> Result<Emulator> {
        if !bin.exists() {
            bail!(
                "{} is not built: run `cargo build -p amzmusic-emulator` first",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("amzmusic-bench-")
            .tempdir()?;
        let env_file = dir.path().join("amz.env");
        let mut cmd = Command::new(bin);
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(["serve", "--open-mirror", "--env-file"])
            .arg(&env_file)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let command = format!(
            "amzmusic-emulator --data-dir {} serve --open-mirror --env-file <tmp>/amz.env {}",
            data_dir.display(),
            extra.join(" ")
        );
        let mut child = cmd.spawn().context("starting amzmusic-emulator serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let base_url = match line.strip_prefix("ready ") {
            Some(u) => u.trim().to_string(),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the emulator said {line:?} instead of `ready <url>`");
            }
        };
        let env = parse_env_file(&std::fs::read_to_string(&env_file).context("env file")?);
        Ok(Emulator {
            child,
            base_url,
            env,
            command,
            _dir: dir,
        })
    }

    /// `method path` (with a JSON body) on the admin API or the open mirror, which must
    /// succeed: the body.
    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<String> {
        let body = body.map(|b| b.to_string());
        let url = format!("{}{path}", self.base_url);
        let answer =
            http_within(method, &url, body.as_deref(), ADMIN_TIMEOUT).and_then(|(status, text)| {
                let text = String::from_utf8_lossy(&text).into_owned();
                if !(200..300).contains(&status) {
                    bail!("emulator answered {status}: {text}");
                }
                Ok(text)
            });
        answer.with_context(|| format!("{method} {path}"))
    }

    pub fn get(&self, path: &str) -> Result<String> {
        self.call("GET", path, None)
    }

    fn post_json(&self, path: &str, body: serde_json::Value) -> Result<String> {
        self.call("POST", path, Some(body))
    }

    fn delete(&self, path: &str) -> Result<()> {
        self.call("DELETE", path, None).map(|_| ())
    }

    /// Generates a track's encrypted and clear content so no run times the generation.
    pub fn prepare(&self, track: &str) -> Result<()> {
        self.post_json("/_emulator/prepare", serde_json::json!([track]))?;
        self.get(&format!("/open/{track}/manifest.mpd"))?;
        Ok(())
    }

    /// Packages tracks' encrypted content (what our player fetches) so no run times it.
    pub fn prepare_encrypted(&self, tracks: &[&str]) -> Result<()> {
        self.post_json("/_emulator/prepare", serde_json::json!(tracks))
            .map(|_| ())
    }

    /// Starts a named scenario's clock now.
    pub fn shape_scenario(&self, scenario: &str, seed: u32) -> Result<()> {
        self.post_json(
            "/_emulator/shaping",
            serde_json::json!({ "scenario": scenario, "seed": seed }),
        )
        .map(|_| ())
    }

    /// A constant link: `kbps` of bandwidth, `rtt_ms` added to every request.
    pub fn shape_link(&self, kbps: u64, rtt_ms: u64) -> Result<()> {
        self.post_json(
            "/_emulator/shaping",
            serde_json::json!({ "trace": format!("3600 {kbps} {rtt_ms}\n") }),
        )
        .map(|_| ())
    }

    pub fn unshape(&self) -> Result<()> {
        self.delete("/_emulator/shaping")
    }

    pub fn clear_log(&self) -> Result<()> {
        self.delete("/_emulator/requests")
    }

    pub fn requests(&self) -> Result<Vec<LoggedRequest>> {
        serde_json::from_str(&self.get("/_emulator/requests")?).context("request log JSON")
    }

    pub fn open_manifest_url(&self, track: &str) -> String {
        format!("{}/open/{track}/manifest.mpd", self.base_url)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A media segment fetched: which representation, which segment (0-based), when.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetch {
    pub at_ms: u64,
    pub rep: String,
    pub segment: usize,
}

/// The media segments a log shows fetched for `track`. Template URLs (`…/REP/00003.m4s`) name
/// the segment; whole-file URLs (`…/REP.mp4` + `Range`) are mapped through `list`'s ranges.
pub fn segment_fetches(log: &[LoggedRequest], track: &str, list: Option<&Ladder>) -> Vec<Fetch> {
    let mut out = Vec::new();
    for r in log {
        if r.method != "GET" || !(200..300).contains(&r.status) {
            continue;
        }
        if r.service != "cdn" && r.service != "open" {
            continue;
        }
        let path = r.path.split('?').next().unwrap_or("");
        let Some(rest) = path
            .strip_prefix(&format!("/{}/{track}/", r.service))
            .map(str::to_string)
        else {
            continue;
        };
        if let Some((rep, seg)) = rest.split_once('/') {
            if let Some(n) = seg
                .strip_suffix(".m4s")
                .and_then(|n| n.parse::<usize>().ok())
            {
                if n >= 1 {
                    out.push(Fetch {
                        at_ms: r.at_ms,
                        rep: rep.to_string(),
                        segment: n - 1,
                    });
                }
            }
        } else if let Some(rep) = rest.strip_suffix(".mp4") {
            let range_start = r
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("range"))
                .and_then(|(_, v)| v.as_deref())
                .and_then(|v| v.trim().strip_prefix("bytes="))
                .and_then(|v| v.split('-').next())
                .and_then(|a| a.trim().parse::<u64>().ok());
            let seg = list
                .and_then(|l| l.rep(rep))
                .zip(range_start)
                .and_then(|(rp, start)| rp.segment_of_offset(start));
            if let Some(segment) = seg {
                out.push(Fetch {
                    at_ms: r.at_ms,
                    rep: rep.to_string(),
                    segment,
                });
            }
        }
    }
    out
}

/// The representation each segment was last fetched from: the one that played (a refetch
/// replaces an abandoned or superseded download).
pub fn rep_per_segment(fetches: &[Fetch]) -> BTreeMap<usize, String> {
    let mut m = BTreeMap::new();
    let mut sorted: Vec<&Fetch> = fetches.iter().collect();
    sorted.sort_by_key(|f| f.at_ms);
    for f in sorted {
        m.insert(f.segment, f.rep.clone());
    }
    m
}

/// Every track's duration in the catalogue (`amzmusic-emulator catalog`), ms.
pub fn catalog_durations(bin: &Path, data_dir: &Path) -> Result<BTreeMap<String, u64>> {
    let out = Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("catalog")
        .stderr(Stdio::inherit())
        .output()
        .context("running amzmusic-emulator catalog")?;
    if !out.status.success() {
        bail!("amzmusic-emulator catalog failed: {}", out.status);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("the catalogue is not JSON")?;
    let tracks = v["tracks"]
        .as_array()
        .context("the catalogue has no tracks")?;
    Ok(tracks
        .iter()
        .filter_map(|t| Some((t["id"].as_str()?.to_string(), t["duration_ms"].as_u64()?)))
        .collect())
}

/// Writes a track's service manifest (SegmentList with byte ranges) with `export`, and parses it.
pub fn export_list_manifest(bin: &Path, data_dir: &Path, track: &str) -> Result<Ladder> {
    let dir = tempfile::Builder::new()
        .prefix("amzmusic-bench-export-")
        .tempdir()?;
    let out: PathBuf = dir.path().join("t");
    let st = Command::new(bin)
        .arg("--data-dir")
        .arg(data_dir)
        .args(["export", track, "--addressing", "list", "--out"])
        .arg(&out)
        .status()
        .context("running amzmusic-emulator export")?;
    if !st.success() {
        return Err(anyhow!("amzmusic-emulator export {track} failed: {st}"));
    }
    Ladder::parse(&std::fs::read_to_string(out.join("manifest.mpd"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, range: Option<&str>, at_ms: u64) -> LoggedRequest {
        LoggedRequest {
            seq: at_ms,
            at_ms,
            method: "GET".into(),
            path: path.into(),
            service: path.split('/').nth(1).unwrap().into(),
            status: if range.is_some() { 206 } else { 200 },
            headers: range
                .map(|r| vec![("range".to_string(), Some(r.to_string()))])
                .unwrap_or_default(),
            http_version: "HTTP/1.1".into(),
            tls: false,
            peer: String::new(),
        }
    }

    #[test]
    fn env_files_parse() {
        let env = parse_env_file("# c\nexport A='x y'\nexport B=z\nnot this\n");
        assert_eq!(
            env,
            vec![("A".into(), "x y".into()), ("B".into(), "z".into())]
        );
    }

    #[test]
    fn template_and_ranged_fetches_name_their_segment() {
        let list = Ladder::parse(
            r#"<MPD><Representation id="flac" bandwidth="1"><SegmentList timescale="1" duration="10">
            <Initialization range="0-9"/><SegmentURL mediaRange="10-19"/><SegmentURL mediaRange="20-29"/>
            </SegmentList></Representation></MPD>"#,
        )
        .unwrap();
        let log = vec![
            req("/open/T/opus/init.mp4", None, 1),
            req("/open/T/opus/00001.m4s", None, 2),
            req("/cdn/T/flac.mp4?sig=REDACTED", Some("bytes=0-9"), 3),
            req("/cdn/T/flac.mp4?sig=REDACTED", Some("bytes=20-29"), 4),
            req("/open/T/flac/00001.m4s", None, 5),
            req("/open/X/flac/00002.m4s", None, 6),
        ];
        let f = segment_fetches(&log, "T", Some(&list));
        assert_eq!(
            f.iter()
                .map(|f| (f.rep.as_str(), f.segment))
                .collect::<Vec<_>>(),
            vec![("opus", 0), ("flac", 1), ("flac", 0)]
        );
        let per = rep_per_segment(&f);
        assert_eq!(per[&0], "flac");
        assert_eq!(per[&1], "flac");
    }
}
