//! The bodies of the fuzz targets in `fuzz/` and of their corpus replay
//! (`tests/fuzz_corpus.rs`): one function per parser family, so the two cannot drift. Each
//! takes untrusted bytes and only returns; any panic (overflow, index, unwrap) is a bug.

use std::sync::Once;

use crate::api::{self, AudioObject, TrackList};
use crate::firefly::Client;
use crate::token::{self, CodePair, TokenFile};

/// The music API's audio object (`GET /v1/tracks/{id}/audio`), with its expiry moved by a
/// clock skew as the element moves it.
pub fn audio_object(data: &[u8]) {
    let Ok(ao) = AudioObject::from_json(data) else {
        return;
    };
    for skew in [None, Some(-7200), Some(7200), Some(i64::from(i32::MIN))] {
        let _ = api::local_expiry(ao.expires, skew);
    }
    let _ = api::valid_id(&ao.track_id);
}

/// The other JSON the element reads: album and playlist track lists, Login with Amazon's
/// token answer (applied to a token file) and code pair, the token file itself, the services'
/// error body, and a FireFly GraphQL answer turned into stream tags.
pub fn api_json(data: &[u8]) {
    if let Ok(list) = serde_json::from_slice::<TrackList>(data) {
        for t in &list.tracks {
            let _ = api::valid_id(&t.id);
        }
    }
    let _ = CodePair::from_json(data);
    let file = TokenFile::from_json(data).ok();
    if let Ok(answer) = token::parse_token_answer(data) {
        let mut f = file.clone().unwrap_or_default();
        f.apply(&answer, token::now_unix());
        let _ = token::refresh_at(f.issued_at, f.expires_at);
    }
    if let Some(f) = file {
        let _ = token::refresh_at(f.issued_at, f.expires_at);
    }
    for status in [400, 401, 403, 404, 429, 500] {
        let _ = crate::http::error_from_body(status, data).to_string();
    }
    if let Ok(meta) = Client::parse("B0EMUHD001", data) {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            gst::init().expect("GStreamer initializes");
            crate::tags::register();
        });
        let _ = meta.cover_url();
        let _ = crate::tags::tag_list(&meta, None);
    }
}

/// What `manifest_codecs` reads of an MPD (the codecs the element asks decoders for).
pub fn manifest_codecs(data: &[u8]) {
    let _ = api::manifest_codecs(data);
}
