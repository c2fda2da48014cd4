// SPDX-License-Identifier: MPL-2.0
//! Resolving a track for the first buffer: the audio object (an LWA token, then the music
//! API), the metadata beside it, then the manifest, with the cover fetched beside the manifest.

use std::sync::Arc;
use std::time::Duration;

use crate::api::ApiError;
use crate::firefly::TrackMetadata;
use crate::http::{HttpError, Secret, RUNTIME};
use crate::session::{Current, Session};

/// What the first `create` fetched.
pub struct Opened {
    pub current: Current,
    pub manifest: Vec<u8>,
    pub metadata: Result<TrackMetadata, String>,
    pub cover: Cover,
    /// The access token and its serial.
    pub token: Option<(Secret, u64)>,
}

/// A cover image and its media type.
pub type CoverBytes = Option<(Vec<u8>, String)>;

/// The cover image, fetched beside the manifest.
pub enum Cover {
    /// None to fetch, or it came (or failed) with the manifest.
    Here(CoverBytes),
    /// Still on its way when the manifest came: it goes out in a tag message once it arrives.
    Late(tokio::task::JoinHandle<CoverBytes>),
}

/// How long the manifest waits for a cover fetched beside it. The two leave together, so the
/// cover usually comes within this; a cover that does not (a large image on a slow link) must
/// not hold back the first audio.
pub const COVER_WAIT: Duration = Duration::from_millis(50);

/// Why there is no first buffer.
#[derive(Debug)]
pub enum OpenError {
    /// No audio object (the music API or the token).
    Api(ApiError),
    /// The audio object came, its manifest did not.
    Manifest(HttpError),
}

/// Fetches the first audio object (generation 1), the metadata, the manifest and the cover.
pub async fn open(session: Arc<Session>) -> Result<Opened, OpenError> {
    // Metadata does not wait for the audio object, nor the other way round.
    let (current, metadata) = tokio::join!(session.refresh(0), session.metadata());
    let current = current.map_err(OpenError::Api)?;
    // Nor does the manifest wait for the cover: fetched one after the other, the cover was a
    // round trip on the way to the first audio.
    let cover = metadata
        .as_ref()
        .ok()
        .and_then(|m| m.cover_url())
        .map(|url| {
            let (s, url) = (session.clone(), url.to_string());
            RUNTIME.spawn(async move {
                match s.cover(&url).await {
                    Ok((bytes, Some(kind))) => Some((bytes, kind)),
                    _ => None,
                }
            })
        });
    let manifest = session.manifest(&current).await;
    let manifest = match manifest {
        Ok(m) => m,
        Err(e) => {
            if let Some(c) = cover {
                c.abort();
            }
            return Err(OpenError::Manifest(e));
        }
    };
    let cover = match cover {
        None => Cover::Here(None),
        Some(mut c) => match tokio::time::timeout(COVER_WAIT, &mut c).await {
            Ok(r) => Cover::Here(r.ok().flatten()),
            Err(_) => Cover::Late(c),
        },
    };
    let token = session.tokens.peek().await;
    Ok(Opened {
        current,
        manifest,
        metadata: metadata.map_err(|e| e.to_string()),
        cover,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{signed_in, HD};

    #[test]
    fn opens_generation_one_with_its_manifest_metadata_and_cover() {
        let (emu, _dir, session) = signed_in(&[], HD);
        let opened = RUNTIME.block_on(open(session.clone())).unwrap();
        assert_eq!(opened.current.generation, 1);
        let mpd = String::from_utf8(opened.manifest).unwrap();
        assert!(mpd.contains("<MPD"), "{mpd}");
        assert_eq!(opened.metadata.unwrap().title, "Harbour Lights");
        let (token, _) = opened.token.expect("token");
        assert!(token.expose().starts_with("Atza|"));
        let cover = match opened.cover {
            Cover::Here(c) => c,
            Cover::Late(c) => RUNTIME.block_on(c).unwrap(),
        };
        assert_eq!(cover.expect("cover").1, "image/png");
        assert_eq!(session.audio_object_calls(), 1);
        assert_eq!(emu.calls("GET", &format!("/v1/tracks/{HD}/audio")).len(), 1);
    }

    #[test]
    fn a_refused_manifest_is_a_manifest_error() {
        let (emu, _dir, session) = signed_in(&[], HD);
        emu.fault(serde_json::json!({"path_contains": ".mpd", "action": {"status": 403}}));
        match RUNTIME.block_on(open(session)) {
            Err(OpenError::Manifest(e)) => assert_eq!(e.status(), Some(403)),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("opened despite the 403"),
        }
    }

    #[test]
    fn an_unknown_track_is_an_api_error() {
        let (_emu, _dir, session) = signed_in(&[], "B0NOSUCH01");
        assert!(matches!(
            RUNTIME.block_on(open(session)),
            Err(OpenError::Api(ApiError::NotFound { .. }))
        ));
    }
}
