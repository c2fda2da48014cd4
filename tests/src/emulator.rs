// SPDX-License-Identifier: MPL-2.0
//! The one emulator harness every crate's tests use: an emulator (the `amzmusic-emulator`
//! process, or the same server inside the test process) and its admin API over HTTP.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::http::{http, http_get_with, http_within};
use crate::{data_dir, emulator_bin, temp_dir};

/// A running emulator, stopped on drop, and its admin API (`/_emulator/…`).
pub struct Emulator {
    /// `http://127.0.0.1:PORT` (`https://` for `serve --tls`).
    pub base_url: String,
    run: Run,
}

enum Run {
    /// `sh` watching its stdin (our pipe) with `amzmusic-emulator serve` as its background job.
    Process(Child),
    /// The server on a runtime of its own inside this process (fields drop in this order).
    #[cfg(feature = "in-process")]
    InProcess {
        running: amzmusic_emulator::server::Running,
        _rt: tokio::runtime::Runtime,
    },
}

/// Runs the emulator under a `sh` that kills it once its stdin (a pipe from this process)
/// closes: when the guard is dropped, and also when this process dies in any way (a `static`
/// emulator is never dropped, and a crashing pipeline test must not leave servers behind).
const WATCHDOG: &str = r#""$0" "$@" & pid=$!; read -r _ignored; exec 2>/dev/null; kill -KILL "$pid" 2>/dev/null; wait "$pid""#;

impl Emulator {
    /// `amzmusic-emulator serve EXTRA…` as a process of its own, once it says `ready <url>`.
    pub fn start(extra: &[&str]) -> Result<Self> {
        let bin = emulator_bin();
        if !bin.exists() {
            bail!(
                "{} not built: run `cargo build -p amzmusic-emulator` first",
                bin.display()
            );
        }
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(bin)
            .arg("--data-dir")
            .arg(data_dir())
            .arg("serve")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting amzmusic-emulator serve")?;
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let base_url = line
            .strip_prefix("ready ")
            .ok_or_else(|| anyhow!("emulator said {line:?} instead of `ready <url>`"))?
            .trim()
            .to_string();
        Ok(Emulator {
            base_url,
            run: Run::Process(child),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The admin API's URL for `path`: plain HTTP even under `--tls` (the emulator serves
    /// `/_emulator/` plain on its port), so this harness needs no TLS client.
    pub fn admin(&self, path: &str) -> String {
        let base = self
            .base_url
            .strip_prefix("https://")
            .map_or_else(|| self.base_url.clone(), |rest| format!("http://{rest}"));
        format!("{base}{path}")
    }

    /// `GET url` (any URL), which must succeed: the body.
    pub fn get(&self, url: &str) -> Vec<u8> {
        self.get_with(url, &[])
    }

    /// `GET url` with request headers (a signed manifest's), which must succeed: the body.
    pub fn get_with(&self, url: &str, headers: &[(String, String)]) -> Vec<u8> {
        let (status, body) = http_get_with(url, headers).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!((200..300).contains(&status), "{url}: HTTP {status}");
        body
    }

    /// `POST path` with a JSON body: the status.
    pub fn post_json(&self, path: &str, body: Value) -> u16 {
        let (status, _) = http("POST", &self.admin(path), Some(&body.to_string()))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        status
    }

    /// `GET path` as JSON.
    pub fn get_json(&self, path: &str) -> Value {
        serde_json::from_slice(&self.get(&self.admin(path))).expect("JSON")
    }

    /// `POST /_emulator/prepare`: packages the tracks' content now (the emulator otherwise
    /// does it at the first request, which takes seconds per track on a fresh machine). Call it
    /// before anything timed: a shaping trace (whose clock would otherwise run during the
    /// packaging), a request that must answer quickly, a prefetch that must come early.
    pub fn prepare(&self, tracks: &[&str]) -> Result<()> {
        let body = serde_json::to_string(tracks)?;
        let (status, text) = http_within(
            "POST",
            &self.admin("/_emulator/prepare"),
            Some(&body),
            Duration::from_secs(600),
        )?;
        if !(200..300).contains(&status) {
            bail!(
                "POST /_emulator/prepare {body}: HTTP {status} {}",
                String::from_utf8_lossy(&text)
            );
        }
        Ok(())
    }

    /// The emulator's request log (`GET /_emulator/requests`).
    pub fn requests(&self) -> Result<Vec<LoggedRequest>> {
        let (status, body) = http("GET", &self.admin("/_emulator/requests"), None)?;
        if status != 200 {
            bail!("GET /_emulator/requests: HTTP {status}");
        }
        serde_json::from_slice(&body).context("request log is not the documented JSON")
    }

    /// The service requests (admin ones left out) that arrive within `wait` from now, as
    /// "METHOD path -> status": none once every pipeline has stopped.
    pub fn requests_within(&self, wait: std::time::Duration) -> Result<Vec<String>> {
        let settled = self.requests()?.len();
        std::thread::sleep(wait);
        Ok(self.requests()?[settled..]
            .iter()
            .filter(|r| !r.path.starts_with("/_emulator/"))
            .map(|r| format!("{} {} -> {}", r.method, r.path, r.status))
            .collect())
    }

    /// The request log as JSON, every field included.
    pub fn request_log(&self) -> Vec<Value> {
        self.get_json("/_emulator/requests")
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// `(path, status)` of the logged `method` requests whose path contains `part`.
    pub fn calls(&self, method: &str, part: &str) -> Vec<(String, u16)> {
        self.requests()
            .expect("request log")
            .into_iter()
            .filter(|r| r.method == method && r.path.contains(part))
            .map(|r| (r.path, r.status))
            .collect()
    }

    /// Adds a fault rule (`POST /_emulator/faults`, e.g. `{"path_contains": "/cdn/",
    /// "count": 1, "action": {"status": 403}}`), which the emulator must accept.
    pub fn fault(&self, rule: Value) {
        assert_eq!(
            self.post_json("/_emulator/faults", rule.clone()),
            201,
            "{rule}"
        );
    }

    /// `DELETE /_emulator/faults`.
    pub fn clear_faults(&self) {
        let (status, _) = http("DELETE", &self.admin("/_emulator/faults"), None)
            .expect("DELETE /_emulator/faults");
        assert!(
            (200..300).contains(&status),
            "DELETE /_emulator/faults: HTTP {status}"
        );
    }

    /// `POST /_emulator/shaping` with a trace (`seconds kbit/s rtt_ms` per line), whose
    /// clock starts now.
    pub fn shape_trace(&self, trace: &str) {
        self.shape(serde_json::json!({ "trace": trace }));
    }

    /// `POST /_emulator/shaping` with a named network scenario and its seed.
    pub fn shape_scenario(&self, name: &str, seed: u32) {
        self.shape(serde_json::json!({ "scenario": name, "seed": seed }));
    }

    fn shape(&self, body: Value) {
        let (status, text) = http(
            "POST",
            &self.admin("/_emulator/shaping"),
            Some(&body.to_string()),
        )
        .expect("POST /_emulator/shaping");
        assert!(
            (200..300).contains(&status),
            "POST /_emulator/shaping {body}: HTTP {status} {}",
            String::from_utf8_lossy(&text)
        );
    }

    /// `DELETE /_emulator/shaping`: the link at full speed again.
    pub fn unshape(&self) {
        let (status, _) = http("DELETE", &self.admin("/_emulator/shaping"), None)
            .expect("DELETE /_emulator/shaping");
        assert!(
            (200..300).contains(&status),
            "DELETE /_emulator/shaping: HTTP {status}"
        );
    }

    /// `POST /_emulator/config` with a JSON object such as `{"audio_object_lifetime_s": 3600}`.
    pub fn configure(&self, json: &str) -> Result<()> {
        let (status, body) = http("POST", &self.admin("/_emulator/config"), Some(json))?;
        if !(200..300).contains(&status) {
            bail!(
                "POST /_emulator/config {json}: HTTP {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        match &mut self.run {
            Run::Process(child) => {
                // EOF on the watchdog's stdin: it kills the emulator and exits.
                drop(child.stdin.take());
                let _ = child.wait();
            }
            #[cfg(feature = "in-process")]
            Run::InProcess { .. } => {}
        }
    }
}

/// One entry of the emulator's request log (secrets are redacted by the emulator).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LoggedRequest {
    pub seq: u64,
    pub at_ms: u64,
    pub method: String,
    pub path: String,
    pub service: String,
    pub status: u16,
    /// Request headers; the value only for those the emulator logs in plain.
    #[serde(default)]
    pub headers: Vec<(String, Option<String>)>,
    /// `HTTP/1.1` or `HTTP/2.0`.
    #[serde(default)]
    pub http_version: String,
    /// It came over TLS (`serve --tls`).
    #[serde(default)]
    pub tls: bool,
    /// The client's address, `127.0.0.1:PORT` (a proxy's, through one).
    #[serde(default)]
    pub peer: String,
}

/// A running `amzmusic-emulator serve --env-file`: the emulator and the `AMAZONMUSIC_*`
/// exports it wrote, which `apply` puts into this process's environment (as a user sourcing
/// the file would) so elements run with no properties at all.
pub struct EmulatorEnv {
    pub emu: Emulator,
    pub vars: Vec<(String, String)>,
    pub env_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for EmulatorEnv {
    type Target = Emulator;
    fn deref(&self) -> &Emulator {
        &self.emu
    }
}

impl EmulatorEnv {
    pub fn start(extra: &[&str]) -> Result<Self> {
        let dir = temp_dir("amz-env");
        let env_file = dir.path().join("amz.env");
        let mut args = vec!["--env-file", env_file.to_str().expect("utf-8 temp path")];
        args.extend_from_slice(extra);
        let emu = Emulator::start(&args)?;
        let text = std::fs::read_to_string(&env_file)
            .with_context(|| format!("reading {}", env_file.display()))?;
        let vars = parse_env_file(&text);
        if !vars.iter().any(|(k, _)| k == "AMAZONMUSIC_API_ENDPOINT") {
            bail!("{} exports no AMAZONMUSIC_API_ENDPOINT", env_file.display());
        }
        Ok(EmulatorEnv {
            emu,
            vars,
            env_file,
            _dir: dir,
        })
    }

    /// Sets every export in this process's environment (process-wide: call it once per test
    /// binary, or under a lock, before elements start).
    pub fn apply(&self) {
        for (k, v) in &self.vars {
            std::env::set_var(k, v);
        }
    }

    /// [`apply`](Self::apply) without the exports named in `skip`, which it removes from this
    /// process's environment instead (a user who did not export them).
    pub fn apply_except(&self, skip: &[&str]) {
        for (k, v) in &self.vars {
            if skip.contains(&k.as_str()) {
                std::env::remove_var(k);
            } else {
                std::env::set_var(k, v);
            }
        }
    }

    pub fn var(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// This test binary's one [`EmulatorEnv`] (started at the first call), its exports applied to
/// the process environment once. The environment is process-wide: a binary whose tests each
/// need an emulator of their own serialises them instead (as e2e_lifecycle does).
pub fn shared_env() -> &'static EmulatorEnv {
    static E: OnceLock<EmulatorEnv> = OnceLock::new();
    E.get_or_init(|| {
        let e = EmulatorEnv::start(&[]).expect("emulator");
        e.apply();
        e
    })
}

/// `export KEY='value'` lines (the emulator's --env-file format) as pairs.
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

/// Runs an emulator inspection command (`catalog`, `keys ID`, …) and returns its stdout.
pub fn emulator(args: &[&str]) -> Result<Vec<u8>> {
    let bin = emulator_bin();
    if !bin.exists() {
        bail!(
            "{} not built: run `cargo build --workspace` first (scripts/test.sh does)",
            bin.display()
        );
    }
    let out = Command::new(&bin)
        .arg("--data-dir")
        .arg(data_dir())
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("amzmusic-emulator {args:?} failed: {}", out.status);
    }
    Ok(out.stdout)
}

/// The exact source samples of representation `rep` (raw little-endian), as
/// `amzmusic-emulator pcm ID --representation REP` prints them.
pub fn source_pcm(track: &str, rep: &str) -> Vec<u8> {
    #[cfg(feature = "in-process")]
    {
        let mut out = Vec::new();
        amzmusic_emulator::export::write_pcm(&builtin(), track, rep, &mut out)
            .unwrap_or_else(|e| panic!("source samples of {track} {rep}: {e}"));
        out
    }
    #[cfg(not(feature = "in-process"))]
    emulator(&["pcm", track, "--representation", rep]).expect("amzmusic-emulator pcm")
}

/// The content keys of `track` as `KID:KEY` hex lines (widevinedecrypt's `keys`), as
/// `amzmusic-emulator keys ID` prints them.
pub fn source_keys(track: &str) -> Vec<String> {
    #[cfg(feature = "in-process")]
    {
        amzmusic_emulator::export::keys(&builtin(), track)
            .unwrap_or_else(|e| panic!("keys of {track}: {e}"))
    }
    #[cfg(not(feature = "in-process"))]
    {
        let out = emulator(&["keys", track]).expect("amzmusic-emulator keys");
        String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[cfg(feature = "in-process")]
fn builtin() -> amzmusic_emulator::content::catalog::Catalog {
    amzmusic_emulator::content::catalog::Catalog::builtin(None)
}

#[cfg(feature = "in-process")]
mod in_process {
    use std::sync::Arc;

    use amzmusic_emulator::content::catalog::{Addressing, Catalog};
    use amzmusic_emulator::content::store::Store;
    use amzmusic_emulator::server::{self, AppState, Config};

    use super::{Emulator, Run};
    use crate::data_dir;

    impl Emulator {
        /// The same server inside this process (two runtime workers of its own), with manifests of
        /// `addressing`, the open mirror on and an hour's audio objects and tokens: for tests that
        /// also reach into its state ([`Emulator::state`]).
        pub fn in_process(addressing: Addressing) -> Self {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let catalog = Arc::new(Catalog::builtin(None));
            let store = Arc::new(Store::new(&data_dir(), catalog.clone()).expect("content store"));
            let state = Arc::new(AppState::new(catalog, store, config(addressing)));
            let running = rt
                .block_on(server::start("127.0.0.1:0", state))
                .expect("emulator starts");
            Emulator {
                base_url: running.base_url.clone(),
                run: Run::InProcess { running, _rt: rt },
            }
        }

        /// The server's state (issuing audio objects, the license URL): in-process emulators only.
        pub fn state(&self) -> &Arc<AppState> {
            match &self.run {
                Run::InProcess { running, .. } => &running.state,
                Run::Process(_) => panic!("a separate emulator process has no state in this one"),
            }
        }
    }

    /// The in-process emulator's config; built through serde so the fields the emulator adds
    /// later take their defaults.
    fn config(addressing: Addressing) -> Config {
        serde_json::from_value(serde_json::json!({
            "audio_object_lifetime_s": 3600,
            "token_lifetime_s": 3600,
            "addressing": addressing,
            "open_mirror": true,
        }))
        .expect("emulator config")
    }
}
