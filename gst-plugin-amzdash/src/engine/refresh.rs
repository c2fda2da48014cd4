// SPDX-License-Identifier: MPL-2.0
//! The audio object the demuxer fetches with, and its refresh: on a 401/403 or before expiry it
//! asks upstream for a fresh one, reloads the manifest and swaps every URL and header at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use url::Url;

use super::{Context, EngineError, Presentation, RepPlan};
use crate::fetch::Request;
use crate::mpd::Mpd;
use crate::segments::{self, SegmentPlan, SegmentRef};

/// The audio object as the demuxer uses it; values are secret, `Debug` prints none.
#[derive(Clone, Default)]
pub struct AudioObject {
    pub generation: u32,
    /// Unix seconds.
    pub expires: Option<u64>,
    pub manifest_uri: Option<Url>,
    pub segment_headers: Vec<(String, String)>,
    pub manifest_headers: Vec<(String, String)>,
    pub user_agent: Option<String>,
    /// When the demuxer should ask for a fresh one (computed on receipt).
    pub refresh_at: Option<SystemTime>,
}

impl std::fmt::Debug for AudioObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioObject")
            .field("generation", &self.generation)
            .field("expires", &self.expires)
            .field("segment_headers", &self.segment_headers.len())
            .finish_non_exhaustive()
    }
}

impl AudioObject {
    /// The contract's refresh time: at 80 % of the remaining lifetime or 30 s before expiry,
    /// whichever is earlier.
    pub fn schedule_refresh(&mut self, now: SystemTime) {
        self.refresh_at = self.expires.map(|e| {
            let exp = UNIX_EPOCH + Duration::from_secs(e);
            let remaining = exp.duration_since(now).unwrap_or_default();
            let a = remaining.mul_f64(0.8);
            let b = remaining.saturating_sub(Duration::from_secs(30));
            now + a.min(b)
        });
    }
}

/// Asks upstream (amazonmusicsrc) for a fresh audio object; blocking, called off the runtime.
pub trait Refresher: Send + Sync {
    fn refresh(&self, reason: &str, generation: u32) -> Option<AudioObject>;
}

impl Context {
    pub(super) fn headers(&self) -> Vec<(String, String)> {
        self.audio_object.lock().unwrap().segment_headers.clone()
    }

    /// The request `build` makes from the current presentation, with the audio-object
    /// generation it belongs to: URLs and headers from one generation (a refresh swaps both
    /// under the write lock), so a 403 on it asks for a newer one.
    pub(super) fn snapshot<F>(&self, build: &F) -> Result<(u32, Request), EngineError>
    where
        F: Fn(&Context) -> Result<Request, EngineError>,
    {
        let _snapshot = self.swap_lock.read().unwrap();
        // (A separate statement: the generation's guard must be dropped before build() reads
        // the headers under the same mutex.)
        let gen = self.audio_object.lock().unwrap().generation;
        Ok((gen, build(self)?))
    }

    /// A newer audio object from upstream (the sticky event): swapped in under the write side
    /// of the swap lock, so no request being built pairs its headers with another generation's
    /// URLs. An older or the same generation is ignored.
    pub fn update_audio_object(&self, fresh: AudioObject) {
        let _swap = self.swap_lock.write().unwrap();
        let mut cur = self.audio_object.lock().unwrap();
        if fresh.generation > cur.generation {
            *cur = fresh;
        }
    }

    pub(super) async fn maybe_refresh_expiring(&self) -> Result<(), EngineError> {
        let (due, gen) = {
            let ao = self.audio_object.lock().unwrap();
            (
                ao.refresh_at.is_some_and(|t| SystemTime::now() >= t),
                ao.generation,
            )
        };
        if due && self.refresher.is_some() {
            self.refresh("expiring", gen).await?;
        }
        Ok(())
    }

    /// Asks upstream for a fresh audio object, reloads the manifest with it and swaps the
    /// segment URLs; playback continues at the same segment index and time.
    /// `seen` is the generation the caller found wanting: concurrent callers (the parallel
    /// init and first segment, say) wait for one refresh instead of each asking.
    pub(super) async fn refresh(&self, reason: &str, seen: u32) -> Result<(), EngineError> {
        let Some(r) = self.refresher.clone() else {
            return Ok(());
        };
        let _one_at_a_time = self.refresh_lock.lock().await;
        let gen = self.audio_object.lock().unwrap().generation;
        if gen != seen {
            return Ok(());
        }
        let reason_s = reason.to_string();
        let fresh = tokio::task::spawn_blocking(move || r.refresh(&reason_s, gen))
            .await
            .ok()
            .flatten();
        let Some(mut fresh) = fresh else {
            // Nobody answered: stop asking on a timer; a 403 will still fail clearly.
            self.audio_object.lock().unwrap().refresh_at = None;
            return Err(EngineError::NotAuthorized(format!(
                "audio object refresh ({reason}) got no answer from upstream"
            )));
        };
        fresh.schedule_refresh(SystemTime::now());
        let new_gen = fresh.generation;
        let manifest = fresh.manifest_uri.clone();
        let mheaders = fresh.manifest_headers.clone();
        self.stats.lock().unwrap().refreshes += 1;
        (self.log)(&format!(
            "audio object refreshed ({reason}): generation {gen} -> {new_gen}"
        ));
        if let Some(url) = manifest {
            self.fetcher.set_origin(&url).await;
            let req = Request {
                url: url.clone(),
                range: None,
                headers: mheaders,
            };
            let f = self
                .fetcher
                .fetch_once(&req, crate::mpd::MAX_MANIFEST_BYTES as u64)
                .await
                .map_err(|e| EngineError::Manifest(format!("refreshed manifest: {e}")))?;
            let mpd = Mpd::parse(&f.data)
                .map_err(|e| EngineError::Manifest(format!("refreshed manifest: {e}")))?;
            let old = self.presentation.lock().unwrap().clone();
            // Same track, same representations: only URLs change. Keep candidate indices.
            let mut p = (*old).clone();
            for c in &p.candidates {
                let set = mpd
                    .periods
                    .get(p.period)
                    .and_then(|per| per.adaptation_sets.get(c.set));
                if set
                    .and_then(|s| s.representations.get(c.rep))
                    .map(|r| &r.id)
                    != Some(&c.id)
                {
                    return Err(EngineError::Manifest(
                        "refreshed manifest lists different representations".into(),
                    ));
                }
            }
            p.mpd = mpd;
            p.manifest_url = url;
            let _swap = self.swap_lock.write().unwrap();
            self.replace_urls(&p)?;
            *self.presentation.lock().unwrap() = Arc::new(p);
            *self.audio_object.lock().unwrap() = fresh;
        } else {
            let _swap = self.swap_lock.write().unwrap();
            *self.audio_object.lock().unwrap() = fresh;
        }
        Ok(())
    }

    /// Re-derives the URLs of every planned representation from a refreshed manifest. Times
    /// and byte ranges stay, so the segment being fetched is the same one, at its new URL.
    pub(super) fn replace_urls(&self, p: &Presentation) -> Result<(), EngineError> {
        let mut plans = self.plans.lock().unwrap();
        let period = &p.mpd.periods[p.period];
        for c in &p.candidates {
            let Some(old) = plans.get(&c.id).cloned() else {
                continue;
            };
            let fresh = segments::plan_with(
                self.fetcher.allow_list(),
                &p.manifest_url,
                p.rep(c),
                period.start,
                period.duration,
            )
            .map_err(|e| EngineError::Manifest(format!("refreshed manifest: {e}")))?;
            let plan = match fresh {
                SegmentPlan::Ready { init, segments } => {
                    if segments.len() != old.segments.len() {
                        return Err(EngineError::Manifest(format!(
                            "refreshed manifest has {} segments for {} instead of {}",
                            segments.len(),
                            c.id,
                            old.segments.len()
                        )));
                    }
                    RepPlan { init, segments }
                }
                SegmentPlan::NeedsIndex { init, url, .. } => RepPlan {
                    init,
                    segments: old
                        .segments
                        .iter()
                        .map(|s| SegmentRef {
                            url: url.clone(),
                            ..s.clone()
                        })
                        .collect(),
                },
            };
            plans.insert(c.id.clone(), Arc::new(plan));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_time_is_the_earlier_of_80_percent_and_30_s_before() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let mut ao = AudioObject {
            expires: Some(1100),
            ..Default::default()
        };
        ao.schedule_refresh(now);
        assert_eq!(ao.refresh_at, Some(now + Duration::from_secs(70)));
        ao.expires = Some(1000 + 3600);
        ao.schedule_refresh(now);
        assert_eq!(ao.refresh_at, Some(now + Duration::from_secs(2880)));
        ao.expires = Some(10);
        ao.schedule_refresh(now);
        assert_eq!(ao.refresh_at, Some(now));
    }

    fn audio_object(generation: u32, token: &str) -> AudioObject {
        AudioObject {
            generation,
            segment_headers: vec![("authorization".into(), token.into())],
            ..Default::default()
        }
    }

    fn request(c: &Context) -> Result<Request, EngineError> {
        Ok(Request {
            url: Url::parse("http://cdn.example/t/a.mp4").unwrap(),
            range: None,
            headers: c.headers(),
        })
    }

    #[test]
    fn a_swap_from_a_sink_event_takes_the_swap_lock() {
        let ctx = Arc::new(super::super::tests::context(audio_object(1, "one")));
        let swap = std::sync::Mutex::new(None);
        let build = |c: &Context| {
            // The sink event's audio object arrives while this request is being built.
            let other = ctx.clone();
            let t = std::thread::spawn(move || other.update_audio_object(audio_object(2, "two")));
            std::thread::sleep(Duration::from_millis(200));
            assert!(
                !t.is_finished(),
                "the swap waits for the request being built"
            );
            *swap.lock().unwrap() = Some(t);
            request(c)
        };
        // The request pairs generation 1 with generation 1's headers, not 2's.
        let (gen, req) = ctx.snapshot(&build).unwrap();
        assert_eq!((gen, req.headers[0].1.as_str()), (1, "one"));
        swap.lock().unwrap().take().unwrap().join().unwrap();
        let (gen, req) = ctx.snapshot(&request).unwrap();
        assert_eq!((gen, req.headers[0].1.as_str()), (2, "two"));
        // A late event of an older generation changes nothing.
        ctx.update_audio_object(audio_object(1, "one"));
        assert_eq!(ctx.audio_object.lock().unwrap().generation, 2);
    }
}
