// SPDX-License-Identifier: MPL-2.0
//! The audio-object protocol of docs/element-contract.md section 2, without a pipeline: the
//! rules for answering the `amazonmusic-audio-object` refresh query, the structure an answer
//! (and the sticky event) carries, and the background refresher that keeps the audio object
//! and the access token fresh ahead of expiry.

use std::sync::Arc;
use std::time::Duration;

use amzmusic_common::contract::{self, RefreshReason};

use crate::api::ApiError;
use crate::credentials::AmzMusicCredentials;
use crate::http::Secret;
use crate::session::{Current, Session};
use crate::token::{now_unix_ms, TokenError};

/// What a refresh query asks: its reason as written, the generation the asker holds and,
/// after a 401, the serial of the token that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub reason: String,
    pub held: u32,
    pub token_serial: Option<u64>,
}

impl Request {
    pub fn new(reason: RefreshReason, held: u32) -> Request {
        Request {
            reason: reason.as_str().to_string(),
            held,
            token_serial: None,
        }
    }

    /// The request in a query's structure (a missing reason is `lookup`, a missing generation
    /// 0).
    pub fn from_query(s: &gst::StructureRef) -> Request {
        let (reason, held) = contract::refresh_query_request(s);
        Request {
            reason,
            held,
            token_serial: contract::refresh_query_token_serial(s),
        }
    }

    /// `unauthorized`: a request got 401 with the token of serial `token_serial`.
    pub fn is_unauthorized(&self) -> bool {
        self.is(RefreshReason::Unauthorized)
    }

    fn is(&self, r: RefreshReason) -> bool {
        self.reason == r.as_str()
    }

    /// `lookup`: answer the current one, never an API call.
    pub fn is_lookup(&self) -> bool {
        self.is(RefreshReason::Lookup)
    }

    /// `forbidden`: the asker cannot go on with what it holds, so a failure is an error.
    pub fn is_forbidden(&self) -> bool {
        self.is(RefreshReason::Forbidden)
    }
}

/// How a request is answered, before any network call.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Nothing resolved yet: the query goes unanswered.
    NotStarted,
    /// Answer with the current audio object, no API call.
    Current(Current),
    /// Ask the music API for a newer one than the asker holds.
    Refresh,
}

/// The answering rules: `lookup` and an asker holding another generation than the current one
/// get the current one; an `expiring` request about an object fetched in the first tenth of
/// its lifetime (or one that arrived expired, fetched less than 5 s ago) gets that object back;
/// everything else (`forbidden` always) refreshes.
pub fn decide(current: Option<Current>, req: &Request, now_ms: u64) -> Decision {
    match current {
        None => Decision::NotStarted,
        // A 401 is about the token, not the audio object: the token is refreshed instead.
        Some(c) if req.is_lookup() || req.is_unauthorized() || c.generation != req.held => {
            Decision::Current(c)
        }
        Some(c)
            if req.is(RefreshReason::Expiring)
                && (c.is_fresh(now_ms) || c.expired_recently_fetched(now_ms)) =>
        {
            Decision::Current(c)
        }
        Some(_) => Decision::Refresh,
    }
}

/// The answer to a refresh query: the audio object and the access token current now, with
/// its serial.
#[derive(Debug, Clone)]
pub struct Answer {
    pub current: Current,
    pub token: Option<(Secret, u64)>,
}

impl Answer {
    /// Whether the sticky event should follow the answer (a newer generation than the asker
    /// held, not a lookup), for elements linked later.
    pub fn push_downstream(&self, req: &Request) -> bool {
        (self.current.generation > req.held && !req.is_lookup()) || req.is_unauthorized()
    }
}

/// Why a refresh query goes unanswered.
#[derive(Debug)]
pub enum AnswerError {
    /// The track is not resolved yet.
    NotStarted,
    /// The refresh the request called for failed.
    Refresh(ApiError),
    /// After a 401: the token cannot be refreshed (none to refresh it with, or Login with
    /// Amazon refused).
    Token(TokenError),
}

/// Answers `req` by the rules of [`decide`], `now_ms` telling the time. A due access token is
/// refreshed on the way (a Login with Amazon call, never a music API call).
pub async fn answer(
    session: &Session,
    req: &Request,
    now_ms: impl Fn() -> u64,
) -> Result<Answer, AnswerError> {
    let current = match decide(session.current(), req, now_ms()) {
        Decision::NotStarted => return Err(AnswerError::NotStarted),
        Decision::Current(c) => c,
        Decision::Refresh => session
            .refresh(req.held)
            .await
            .map_err(AnswerError::Refresh)?,
    };
    if req.is_unauthorized() {
        // Once per refused token: a serial older than the current one was refreshed already.
        let serial = match req.token_serial {
            Some(s) => s,
            None => session.tokens.serial().await,
        };
        let token = session
            .tokens
            .unauthorized(serial)
            .await
            .map_err(AnswerError::Token)?;
        return Ok(Answer {
            current,
            token: Some(token),
        });
    }
    // Only Login with Amazon may be asked here (a due token), never the music API.
    let token = match session.tokens.current().await {
        Ok(t) => Some(t),
        Err(_) => session.tokens.peek().await,
    };
    Ok(Answer { current, token })
}

/// The contract's audio-object structure (section 1) for `current`, with `token` (and its
/// serial) as the credentials' authorization.
pub fn structure(
    session: &Session,
    current: &Current,
    token: Option<&(Secret, u64)>,
) -> gst::Structure {
    let creds = AmzMusicCredentials::new(
        &current.audio,
        token.map(|(t, serial)| (t.expose(), *serial)),
        &session.cfg.user_agent,
        &session.cfg.market,
    );
    contract::audio_object_structure(
        &contract::AudioObjectFields {
            track_id: &session.track_id,
            generation: current.generation,
            expires: current.audio.expires,
            quality: &session.capability,
        },
        &creds,
    )
}

/// What the background refresher tells the element.
pub trait RefreshListener: Send + 'static {
    /// False once the element is gone: the refresher stops.
    fn alive(&self) -> bool;
    /// The access token was refreshed ahead of expiry.
    fn token_refreshed(&self);
    fn token_refresh_failed(&self, err: &TokenError);
    /// A new generation was fetched ahead of expiry (`token`: the current access token).
    fn refreshed(&self, session: &Session, next: &Current, token: Option<&(Secret, u64)>);
    fn refresh_failed(&self, err: &ApiError);
}

/// Keeps the audio object (at 70 % of its lifetime) and the access token (a fifth of its
/// lifetime before expiry) fresh while the element runs; after a failure, or an audio object
/// that arrived expired, it waits at least 5 s per such result in a row (at most 30 s), never a
/// busy loop. Runs until `listener` is gone.
pub async fn keep_fresh(session: Arc<Session>, listener: impl RefreshListener) {
    let mut failures = 0u32;
    loop {
        let ao_due = session.current().map(|c| c.refresh_at_ms());
        let token_due = session.tokens.due_at().await.map(|s| s * 1000);
        let next = [ao_due, token_due].into_iter().flatten().min();
        let now = now_unix_ms();
        let wait = match next {
            Some(at) => Duration::from_millis(at.saturating_sub(now)),
            None => Duration::from_secs(60),
        };
        let wait = wait.max(Duration::from_secs(u64::from(failures.min(6)) * 5));
        tokio::time::sleep(wait).await;
        let mut failed = false;
        if token_due.is_some_and(|at| now_unix_ms() >= at) {
            match session.tokens.refresh_if_due().await {
                Ok(true) => listener.token_refreshed(),
                Ok(false) => {}
                Err(err) => {
                    failed = true;
                    if !listener.alive() {
                        return;
                    }
                    listener.token_refresh_failed(&err);
                }
            }
        }
        if let Some(c) = session.current() {
            if now_unix_ms() >= c.refresh_at_ms() {
                match session.refresh(c.generation).await {
                    Ok(next) => {
                        // Another at once would be as expired: back off as after a failure.
                        failed |= next.arrived_expired();
                        if !listener.alive() {
                            return;
                        }
                        let token = session.tokens.peek().await;
                        listener.refreshed(&session, &next, token.as_ref());
                    }
                    Err(err) => {
                        failed = true;
                        if !listener.alive() {
                            return;
                        }
                        listener.refresh_failed(&err);
                    }
                }
            }
        }
        failures = if failed { failures + 1 } else { 0 };
        if !listener.alive() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::api::AudioObject;
    use crate::http::RUNTIME;
    use crate::testing::{signed_in, HD};

    fn current(generation: u32, obtained_at_ms: u64) -> Current {
        Current {
            generation,
            audio: AudioObject {
                track_id: "T".into(),
                manifest_url: Secret::new("u"),
                // A lifetime of 100 s from 1_000 s.
                expires: 1100,
                quality: "HD".into(),
                drm_type: "WIDEVINE".into(),
                headers: Default::default(),
            },
            obtained_at_ms,
        }
    }

    fn generation(d: Decision) -> Option<u32> {
        match d {
            Decision::Current(c) => Some(c.generation),
            _ => None,
        }
    }

    const T0: u64 = 1_000_000;

    #[test]
    fn lookups_and_older_generations_get_the_current_one() {
        let c = || Some(current(2, T0));
        let late = T0 + 90_000;
        for (reason, held) in [
            (RefreshReason::Lookup, 0),
            (RefreshReason::Lookup, 2),
            (RefreshReason::Expiring, 1),
            (RefreshReason::Forbidden, 1),
            // An asker from a former run (a newer generation than ours) too.
            (RefreshReason::Forbidden, 7),
        ] {
            let d = decide(c(), &Request::new(reason, held), late);
            assert_eq!(generation(d), Some(2), "{reason:?} holding {held}");
        }
    }

    #[test]
    fn expiring_within_the_first_tenth_of_the_lifetime_gets_the_same_one() {
        let c = || Some(current(2, T0));
        let expiring = Request::new(RefreshReason::Expiring, 2);
        assert_eq!(generation(decide(c(), &expiring, T0 + 9_999)), Some(2));
        assert!(matches!(
            decide(c(), &expiring, T0 + 10_000),
            Decision::Refresh
        ));
        // forbidden always refreshes.
        let forbidden = Request::new(RefreshReason::Forbidden, 2);
        assert!(matches!(decide(c(), &forbidden, T0), Decision::Refresh));
    }

    #[test]
    fn nothing_to_answer_before_the_track_is_resolved() {
        let req = Request::new(RefreshReason::Lookup, 0);
        assert!(matches!(decide(None, &req, T0), Decision::NotStarted));
        // An unknown reason refreshes like forbidden, and fails as a warning.
        let odd = Request {
            reason: "later".into(),
            held: 2,
            token_serial: None,
        };
        assert!(matches!(
            decide(Some(current(2, T0)), &odd, T0),
            Decision::Refresh
        ));
        assert!(!odd.is_forbidden() && !odd.is_lookup());
    }

    #[test]
    fn requests_read_from_the_query() {
        let _ = gst::init();
        let s = contract::refresh_query_structure("forbidden", 3);
        assert_eq!(
            Request::from_query(&s),
            Request::new(RefreshReason::Forbidden, 3)
        );
        let bare = gst::Structure::new_empty(contract::AUDIO_OBJECT);
        assert_eq!(
            Request::from_query(&bare),
            Request::new(RefreshReason::Lookup, 0)
        );
    }

    fn ask(session: &Arc<Session>, reason: RefreshReason, held: u32) -> Answer {
        RUNTIME
            .block_on(answer(session, &Request::new(reason, held), now_unix_ms))
            .expect("answered")
    }

    #[test]
    fn answers_against_the_emulator_call_the_api_only_when_the_rules_say() {
        let (emu, _dir, session) = signed_in(&[], HD);
        let audio_calls = || emu.calls("GET", &format!("/v1/tracks/{HD}/audio")).len();
        let not_yet = RUNTIME.block_on(answer(
            &session,
            &Request::new(RefreshReason::Forbidden, 0),
            now_unix_ms,
        ));
        assert!(matches!(not_yet, Err(AnswerError::NotStarted)));
        assert_eq!(audio_calls(), 0);
        RUNTIME.block_on(session.refresh(0)).unwrap();
        let first = ask(&session, RefreshReason::Lookup, 0);
        assert_eq!(first.current.generation, 1);
        assert!(first.token.unwrap().0.expose().starts_with("Atza|"));

        // Four askers holding generation 1 at once: one refresh.
        let answers: Vec<u32> = RUNTIME.block_on(async {
            let asks = (0..4).map(|_| {
                let s = session.clone();
                RUNTIME.spawn(async move {
                    let req = Request::new(RefreshReason::Forbidden, 1);
                    answer(&s, &req, now_unix_ms)
                        .await
                        .unwrap()
                        .current
                        .generation
                })
            });
            let mut out = Vec::new();
            for h in asks.collect::<Vec<_>>() {
                out.push(h.await.unwrap());
            }
            out
        });
        assert_eq!(answers, vec![2, 2, 2, 2]);
        assert_eq!(audio_calls(), 2, "one refresh for four askers");
        assert_eq!(session.audio_object_calls(), 2);

        // An older generation and a lookup get the current one without a call.
        let late = ask(&session, RefreshReason::Expiring, 1);
        assert_eq!(late.current.generation, 2);
        assert!(late.push_downstream(&Request::new(RefreshReason::Expiring, 1)));
        let look = ask(&session, RefreshReason::Lookup, 0);
        assert_eq!(look.current.generation, 2);
        assert!(!look.push_downstream(&Request::new(RefreshReason::Lookup, 0)));
        assert_ne!(
            look.current.audio.manifest_url.expose(),
            first.current.audio.manifest_url.expose()
        );
        // "expiring" about an object fetched a moment ago: that one, no call.
        assert_eq!(
            ask(&session, RefreshReason::Expiring, 2).current.generation,
            2
        );
        assert_eq!(audio_calls(), 2);

        // Past the first tenth of its lifetime (a clock an hour on), "expiring" refreshes.
        let later = || now_unix_ms() + 3_600_000;
        let req = Request::new(RefreshReason::Expiring, 2);
        let next = RUNTIME.block_on(answer(&session, &req, later)).unwrap();
        assert_eq!(next.current.generation, 3);
        assert_eq!(audio_calls(), 3);

        // The structure carries the contract's fields.
        let _ = gst::init();
        let s = structure(&session, &next.current, next.token.as_ref());
        assert!(contract::is_audio_object(&s));
        assert_eq!(s.get::<u32>("generation").unwrap(), 3);
        assert_eq!(s.get::<&str>("track-id").unwrap(), HD);
        let creds = contract::CredentialsView::from_structure(&s).expect("credentials");
        assert!(creds.authorization().unwrap().starts_with("Bearer Atza|"));
    }

    #[test]
    fn a_failed_refresh_is_not_an_answer() {
        let (emu, _dir, session) = signed_in(&[], HD);
        RUNTIME.block_on(session.refresh(0)).unwrap();
        emu.fault(serde_json::json!({"path_contains": "/v1/tracks/", "action": {"status": 404}}));
        let req = Request::new(RefreshReason::Forbidden, 1);
        let r = RUNTIME.block_on(answer(&session, &req, now_unix_ms));
        assert!(
            matches!(r, Err(AnswerError::Refresh(ApiError::NotFound { .. }))),
            "{r:?}"
        );
        // A lookup still answers, without a call.
        let look = ask(&session, RefreshReason::Lookup, 0);
        assert_eq!(look.current.generation, 1);
        assert_eq!(session.audio_object_calls(), 2);
    }

    #[test]
    fn an_unauthorized_request_refreshes_the_refused_token_once() {
        let (emu, _dir, session) = signed_in(&[], HD);
        RUNTIME.block_on(session.refresh(0)).unwrap();
        let (before, serial) = ask(&session, RefreshReason::Lookup, 0).token.unwrap();
        let unauthorized = |token_serial| {
            let req = Request {
                token_serial,
                ..Request::new(RefreshReason::Unauthorized, 1)
            };
            RUNTIME
                .block_on(answer(&session, &req, now_unix_ms))
                .expect("answered")
        };
        let first = unauthorized(Some(serial));
        let (after, new_serial) = first.token.clone().unwrap();
        assert_ne!(after.expose(), before.expose());
        assert_eq!(new_serial, serial + 1);
        assert_eq!(first.current.generation, 1, "the audio object stays");
        assert!(first.push_downstream(&Request::new(RefreshReason::Unauthorized, 1)));
        // A second element that saw the same 401 gets the new token, with no second refresh.
        let second = unauthorized(Some(serial));
        assert_eq!(second.token.unwrap().0.expose(), after.expose());
        assert_eq!(
            emu.calls("POST", "/auth/o2/token").len(),
            2,
            "sign-in + one refresh"
        );
        assert_eq!(session.audio_object_calls(), 1, "no music API call");
    }

    #[test]
    fn a_lookup_refreshes_a_due_token_and_never_calls_the_api() {
        // Tokens live 5 s and are due 1 s before expiry.
        let (emu, _dir, session) = signed_in(&["--token-lifetime", "5"], HD);
        RUNTIME.block_on(session.refresh(0)).unwrap();
        let before = ask(&session, RefreshReason::Lookup, 0).token.unwrap().0;
        let due_ms = RUNTIME.block_on(session.tokens.due_at()).unwrap() * 1000;
        std::thread::sleep(Duration::from_millis(
            due_ms.saturating_sub(now_unix_ms()) + 50,
        ));
        let after = ask(&session, RefreshReason::Lookup, 0);
        assert_ne!(after.token.unwrap().0.expose(), before.expose());
        assert_eq!(after.current.generation, 1);
        assert_eq!(
            emu.calls("POST", "/auth/o2/token").len(),
            2,
            "sign-in + one refresh"
        );
        assert_eq!(session.audio_object_calls(), 1);
    }

    #[derive(Clone, Default)]
    struct Recorder {
        gone: Arc<AtomicBool>,
        generations: Arc<Mutex<Vec<u32>>>,
        failures: Arc<Mutex<Vec<String>>>,
    }

    impl RefreshListener for Recorder {
        fn alive(&self) -> bool {
            !self.gone.load(Ordering::SeqCst)
        }
        fn token_refreshed(&self) {}
        fn token_refresh_failed(&self, err: &TokenError) {
            self.failures.lock().unwrap().push(err.to_string());
        }
        fn refreshed(&self, _: &Session, next: &Current, token: Option<&(Secret, u64)>) {
            assert!(token.is_some());
            self.generations.lock().unwrap().push(next.generation);
        }
        fn refresh_failed(&self, err: &ApiError) {
            self.failures.lock().unwrap().push(err.to_string());
        }
    }

    #[test]
    fn the_refresher_fetches_the_next_generation_at_70_percent() {
        // Lifetime 6 s (5-6 s once `expires` is truncated to the second): the refresher
        // fetches at 3.5-4.2 s and the next no sooner than 3.5 s after that; at 5.5 s exactly
        // one refresh has happened.
        let (emu, _dir, session) = signed_in(&["--audio-object-lifetime", "6"], HD);
        let started = std::time::Instant::now();
        RUNTIME.block_on(session.refresh(0)).unwrap();
        let rec = Recorder::default();
        let task = RUNTIME.spawn(keep_fresh(session.clone(), rec.clone()));
        std::thread::sleep(Duration::from_millis(5500).saturating_sub(started.elapsed()));
        assert_eq!(*rec.generations.lock().unwrap(), vec![2]);
        assert!(rec.failures.lock().unwrap().is_empty());
        assert_eq!(session.current().unwrap().generation, 2);
        assert_eq!(emu.calls("GET", &format!("/v1/tracks/{HD}/audio")).len(), 2);
        // Gone: the refresher ends by itself at its next wake-up.
        rec.gone.store(true, Ordering::SeqCst);
        task.abort();
    }
}
