//! The parts of `amzmusic-play` that need no pipeline: what a URI asks to play (a track, an
//! album or a playlist, expanded through the music API) and how the status line reads.

use anyhow::{anyhow, bail, Context, Result};
use std::time::Duration;

/// What an `amazonmusic://` URI names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Track(String),
    Album(String),
    Playlist(String),
    /// Any other URI: handed to playbin3 as it is.
    Other(String),
}

impl Item {
    pub fn parse(uri: &str) -> Result<Item> {
        let Some(rest) = uri.strip_prefix("amazonmusic://") else {
            if uri.contains("://") {
                return Ok(Item::Other(uri.to_string()));
            }
            bail!("{uri:?} is not a URI: use amazonmusic://track/<id>, amazonmusic://album/<id>, amazonmusic://playlist/<id> or any URI playbin3 plays");
        };
        let (kind, id) = rest.split_once('/').ok_or_else(|| {
            anyhow!("{uri:?}: expected amazonmusic://<track|album|playlist>/<id>")
        })?;
        let id = id.trim_end_matches('/');
        if id.is_empty() || id.contains('/') {
            bail!("{uri:?}: expected one id after {kind}/");
        }
        match kind {
            "track" => Ok(Item::Track(id.into())),
            "album" => Ok(Item::Album(id.into())),
            "playlist" => Ok(Item::Playlist(id.into())),
            _ => bail!("{uri:?}: unknown kind {kind:?} (track, album or playlist)"),
        }
    }
}

pub fn track_uri(id: &str) -> String {
    format!("amazonmusic://track/{id}")
}

/// Where the music API is and how to call it, from the same environment the plugins read
/// (`amzmusic-emulator serve --env-file` writes it).
#[derive(Debug, Clone)]
pub struct ApiAccess {
    pub endpoint: String,
    pub api_key: Option<String>,
    pub token: String,
    pub market: Option<String>,
}

impl ApiAccess {
    pub fn from_env() -> Result<ApiAccess> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let endpoint = var("AMAZONMUSIC_API_ENDPOINT").ok_or_else(|| {
            anyhow!("AMAZONMUSIC_API_ENDPOINT is not set: source the emulator's env file (amzmusic-emulator serve --env-file F) or point it at the music API")
        })?;
        let token = match var("AMAZONMUSIC_ACCESS_TOKEN") {
            Some(t) => t,
            None => {
                let path = var("AMAZONMUSIC_TOKEN_FILE").ok_or_else(|| {
                    anyhow!("no access token: set AMAZONMUSIC_ACCESS_TOKEN or AMAZONMUSIC_TOKEN_FILE (run amzmusic-login)")
                })?;
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading token file {path}"))?;
                let v: serde_json::Value = serde_json::from_str(&text)
                    .with_context(|| format!("token file {path} is not JSON"))?;
                v["access_token"]
                    .as_str()
                    .ok_or_else(|| anyhow!("token file {path} has no access_token"))?
                    .to_string()
            }
        };
        Ok(ApiAccess {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            api_key: var("AMAZONMUSIC_API_KEY"),
            token,
            market: var("AMAZONMUSIC_MARKET"),
        })
    }
}

/// The ordered track ids of an album or playlist, as the music API lists them.
pub async fn list_tracks(access: &ApiAccess, kind: &str, id: &str) -> Result<Vec<String>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let url = format!("{}/v1/{kind}s/{id}/tracks", access.endpoint);
    let mut req = client
        .get(&url)
        .header("Authorization", format!("Bearer {}", access.token));
    if let Some(k) = &access.api_key {
        req = req.header("x-api-key", k);
    }
    if let Some(m) = &access.market {
        req = req.header("x-amzn-market", m);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("asking the music API for {kind} {id}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the music API refused {kind} {id}: HTTP {} {} ({})",
            status.as_u16(),
            body["error"].as_str().unwrap_or(""),
            body["message"].as_str().unwrap_or("")
        );
    }
    parse_track_list(&body)
}

pub fn parse_track_list(body: &serde_json::Value) -> Result<Vec<String>> {
    let tracks = body["tracks"]
        .as_array()
        .ok_or_else(|| anyhow!("the music API's answer has no tracks list"))?;
    let ids: Vec<String> = tracks
        .iter()
        .filter_map(|t| t["id"].as_str().map(str::to_string))
        .collect();
    if ids.is_empty() {
        bail!("the music API listed no playable tracks");
    }
    Ok(ids)
}

/// `mm:ss.d`.
pub fn clock(ns: Option<u64>) -> String {
    match ns {
        None => "--:--.-".into(),
        Some(ns) => {
            let ds = ns / 100_000_000;
            format!("{:02}:{:02}.{}", ds / 600, (ds / 10) % 60, ds % 10)
        }
    }
}

/// Position and duration of the track playing, from playbin3's answers, which in gapless mode
/// describe the whole queue: the position keeps counting from the first track, and the
/// duration is the next track's as soon as that one is prefetched.
#[derive(Debug, Default)]
pub struct TrackClock {
    /// The tracks before this one, in ns (their latched durations).
    before: u64,
    /// This track's duration: the first answer after it started.
    duration: Option<u64>,
    /// Whether the position counts from the first track; decided at this track's first answer.
    cumulative: Option<bool>,
}

/// A position within this much of the previous tracks' total is taken for a queue position.
const CUMULATIVE_SLACK_NS: u64 = 1_000_000_000;

impl TrackClock {
    /// The next track started (playbin3's stream-start message).
    pub fn next_track(&mut self) {
        self.before += self.duration.take().unwrap_or(0);
        self.cumulative = None;
    }

    /// This track's (position, duration) from playbin3's (position, duration), in ns.
    pub fn track_times(
        &mut self,
        pos: Option<u64>,
        dur: Option<u64>,
    ) -> (Option<u64>, Option<u64>) {
        if self.duration.is_none() {
            self.duration = dur;
        }
        let before = self.before;
        let pos = pos.map(|p| {
            let cumulative = *self
                .cumulative
                .get_or_insert(before > 0 && p + CUMULATIVE_SLACK_NS >= before);
            if cumulative {
                p.saturating_sub(before)
            } else {
                p
            }
        });
        (pos, self.duration)
    }
}

/// `1.9 Mb/s`, `320 kb/s`.
pub fn rate(bits_per_second: u64) -> String {
    if bits_per_second >= 1_000_000 {
        format!("{:.1} Mb/s", bits_per_second as f64 / 1e6)
    } else {
        format!("{} kb/s", bits_per_second / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds_and_passes_other_uris_through() {
        assert_eq!(
            Item::parse("amazonmusic://track/B0EMUHD001").unwrap(),
            Item::Track("B0EMUHD001".into())
        );
        assert_eq!(
            Item::parse("amazonmusic://album/B0EMUALB01/").unwrap(),
            Item::Album("B0EMUALB01".into())
        );
        assert_eq!(
            Item::parse("amazonmusic://playlist/P1").unwrap(),
            Item::Playlist("P1".into())
        );
        assert_eq!(
            Item::parse("file:///tmp/a.mp4").unwrap(),
            Item::Other("file:///tmp/a.mp4".into())
        );
        for bad in [
            "amazonmusic://song/x",
            "amazonmusic://track/",
            "amazonmusic://track/a/b",
            "B0EMUHD001",
        ] {
            assert!(Item::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn track_lists_keep_the_api_order() {
        let v = serde_json::json!({"id":"A","tracks":[{"id":"t2"},{"id":"t1"},{"id":"t3"}]});
        assert_eq!(parse_track_list(&v).unwrap(), ["t2", "t1", "t3"]);
        assert!(parse_track_list(&serde_json::json!({"tracks": []})).is_err());
        assert!(parse_track_list(&serde_json::json!({})).is_err());
    }

    #[test]
    fn track_times_count_from_each_track_start() {
        const S: u64 = 1_000_000_000;
        // playbin3 counting from the first track, announcing the next duration early.
        let mut c = TrackClock::default();
        c.next_track();
        assert_eq!(c.track_times(Some(0), None), (Some(0), None));
        assert_eq!(
            c.track_times(Some(S), Some(24 * S)),
            (Some(S), Some(24 * S))
        );
        assert_eq!(
            c.track_times(Some(23 * S), Some(37 * S)),
            (Some(23 * S), Some(24 * S))
        );
        c.next_track();
        assert_eq!(
            c.track_times(Some(24 * S + S / 2), Some(37 * S)),
            (Some(S / 2), Some(37 * S))
        );
        assert_eq!(
            c.track_times(Some(50 * S), Some(37 * S)),
            (Some(26 * S), Some(37 * S))
        );
        // ... or restarting at each track: nothing is taken off.
        let mut c = TrackClock::default();
        c.next_track();
        c.track_times(Some(S), Some(24 * S));
        c.next_track();
        assert_eq!(
            c.track_times(Some(S / 2), Some(37 * S)),
            (Some(S / 2), Some(37 * S))
        );
        assert_eq!(
            c.track_times(Some(30 * S), None),
            (Some(30 * S), Some(37 * S))
        );
    }

    #[test]
    fn status_formatting() {
        assert_eq!(clock(Some(61_250_000_000)), "01:01.2");
        assert_eq!(clock(None), "--:--.-");
        assert_eq!(rate(1_950_000), "1.9 Mb/s");
        assert_eq!(rate(320_000), "320 kb/s");
    }
}
