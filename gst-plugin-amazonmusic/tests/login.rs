// SPDX-License-Identifier: MPL-2.0
//! amzmusic-login against the emulator's LWA: approval, the token file it writes (0600,
//! content), backing off on slow_down and starting over when a code expires.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use gstamazonmusic::token::TokenFile;

struct Login {
    child: Child,
    codes: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Login {
    fn start(emu: &Emulator, token_file: &Path, extra: &[&str]) -> Login {
        let mut child = Command::new(env!("CARGO_BIN_EXE_amzmusic-login"))
            .args(["--lwa-endpoint", &emu.base_url])
            .args(["--client-id", CLIENT_ID])
            .args(["--api-endpoint", &emu.base_url])
            .args(["--graphql-endpoint", &emu.url("/graphql")])
            .args(["--api-key", API_KEY])
            .arg("--token-file")
            .arg(token_file)
            .args(["--timeout", "60"])
            .args(extra)
            .env_remove("AMAZONMUSIC_TOKEN_FILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, codes) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("enter the code ").nth(1) {
                    let code = rest.split_whitespace().next().unwrap().to_string();
                    let _ = tx.send(code);
                }
            }
        });
        let err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                s.push_str(&line);
                s.push('\n');
            }
            s
        });
        Login {
            child,
            codes,
            stderr,
        }
    }

    fn next_code(&self) -> String {
        self.codes
            .recv_timeout(Duration::from_secs(20))
            .expect("amzmusic-login printed a code")
    }

    fn finish(mut self) -> (bool, String) {
        let status = self.child.wait().unwrap();
        (status.success(), self.stderr.join().unwrap())
    }
}

fn approve(emu: &Emulator, code: &str) {
    assert_eq!(
        emu.post_json(
            "/_emulator/lwa/approve",
            serde_json::json!({ "user_code": code })
        ),
        204
    );
}

#[test]
fn login_writes_a_private_token_file_the_source_can_use() {
    let emu = Emulator::start(&["--device-poll-interval", "1"]).unwrap();
    let dir = temp_dir();
    let path = dir.path().join("amazonmusic").join("token.json");
    let login = Login::start(&emu, &path, &[]);
    let code = login.next_code();
    approve(&emu, &code);
    let (ok, stderr) = login.finish();
    assert!(ok, "{stderr}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let f = TokenFile::load(&path).unwrap();
    assert!(f.access_token.expose().starts_with("Atza|"));
    assert!(f
        .refresh_token
        .as_ref()
        .unwrap()
        .expose()
        .starts_with("Atzr|"));
    assert_eq!(f.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(f.scope.as_deref(), Some("amazon_music:access"));
    assert_eq!(f.lwa_endpoint.as_deref(), Some(emu.base_url.as_str()));
    assert_eq!(f.api_endpoint.as_deref(), Some(emu.base_url.as_str()));
    assert_eq!(f.expires_at - f.issued_at, 3600);
    // Only the token file, no temporary left behind.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );

    // The token file alone configures the source: no endpoint or key properties.
    init();
    let src = gst::ElementFactory::make("amazonmusicsrc")
        .property("track-id", "B0EMUHD001")
        .property("token-file", path.to_str().unwrap())
        .build()
        .unwrap();
    let run = Running::new(src);
    run.manifest(Duration::from_secs(30))
        .expect("the source plays with only the token file");
}

#[test]
fn login_backs_off_on_slow_down() {
    let emu = Emulator::start(&["--device-poll-interval", "1"]).unwrap();
    let dir = temp_dir();
    let path = dir.path().join("token.json");
    // Polling every 0.3 s against an interval of 1 s earns slow_down.
    let login = Login::start(&emu, &path, &["--poll-interval", "0.3"]);
    let _code = login.next_code();
    std::thread::sleep(Duration::from_millis(1500));
    let code = _code;
    approve(&emu, &code);
    let (ok, stderr) = login.finish();
    assert!(ok, "{stderr}");
    assert!(stderr.contains("slow down"), "{stderr}");
    let polls: Vec<u16> = emu.token_calls().into_iter().map(|(_, s)| s).collect();
    // Pending, then slow_down once, then polls far enough apart to be answered: no run of
    // slow_downs (every one would restart the server's interval).
    assert_eq!(*polls.last().unwrap(), 200, "{polls:?}");
    assert!(polls.len() <= 6, "{polls:?}");
    assert!(TokenFile::load(&path).is_ok());
}

#[test]
fn login_starts_over_when_the_code_expires() {
    let emu =
        Emulator::start(&["--device-poll-interval", "1", "--device-code-lifetime", "2"]).unwrap();
    let dir = temp_dir();
    let path = dir.path().join("token.json");
    let login = Login::start(&emu, &path, &[]);
    let first = login.next_code();
    // Never approved: it expires, and the tool shows a new one.
    let second = login.next_code();
    assert_ne!(first, second);
    approve(&emu, &second);
    let (ok, stderr) = login.finish();
    assert!(ok, "{stderr}");
    assert!(stderr.contains("expired"), "{stderr}");
    assert_eq!(emu.calls("POST", "/auth/o2/create/codepair").len(), 2);
    assert!(TokenFile::load(&path).is_ok());
}

#[test]
fn login_gives_up_after_max_restarts() {
    let emu =
        Emulator::start(&["--device-poll-interval", "1", "--device-code-lifetime", "1"]).unwrap();
    let dir = temp_dir();
    let path = dir.path().join("token.json");
    let login = Login::start(&emu, &path, &["--max-restarts", "1"]);
    let (ok, stderr) = login.finish();
    assert!(!ok);
    assert!(stderr.contains("run amzmusic-login again"), "{stderr}");
    assert!(!path.exists());
}
