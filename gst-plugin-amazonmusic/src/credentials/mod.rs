// SPDX-License-Identifier: MPL-2.0
//! `AmzMusicCredentials`: the object the contract (docs/element-contract.md) hands downstream.
//! Its secrets are properties, so printing an event or query structure never shows them.

use amzmusic_common::contract::credentials as names;
use gst::glib;

use crate::api::{AudioObject, Header};

mod imp;

glib::wrapper! {
    pub struct AmzMusicCredentials(ObjectSubclass<imp::AmzMusicCredentials>);
}

fn headers(list: &[Header]) -> gst::Structure {
    let mut s = gst::Structure::new_empty(names::HEADERS_STRUCTURE);
    for h in list {
        s.set(h.name.as_str(), h.value.expose());
    }
    s
}

/// The market header the license server checks entitlement against.
pub const MARKET_HEADER: &str = "x-amzn-market";

impl AmzMusicCredentials {
    /// The credentials of `audio`, with the current access token (and its serial) and
    /// User-Agent. `market`
    /// joins the key headers: the license server, like the music API, decides entitlement by
    /// the caller's market, and the decryptor sends exactly the key headers.
    pub fn new(
        audio: &AudioObject,
        access_token: Option<(&str, u64)>,
        user_agent: &str,
        market: &str,
    ) -> Self {
        let mut key_headers = headers(&audio.headers.key);
        if !key_headers.has_field(MARKET_HEADER) && !market.is_empty() {
            key_headers.set(MARKET_HEADER, market);
        }
        glib::Object::builder()
            .property(names::MANIFEST_URI, audio.manifest_url.expose())
            .property(
                names::SEGMENT_HEADERS,
                headers(&audio.headers.audio_segment_headers),
            )
            .property(
                names::MANIFEST_HEADERS,
                headers(&audio.headers.manifest_headers),
            )
            .property(names::KEY_HEADERS, key_headers)
            .property(
                names::AUTHORIZATION,
                access_token.map(|(t, _)| format!("Bearer {t}")),
            )
            .property(names::TOKEN_SERIAL, access_token.map_or(0, |(_, s)| s))
            .property(names::USER_AGENT, user_agent)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AudioHeaders, Header};
    use crate::http::Secret;
    use amzmusic_common::contract::{self, AudioObjectFields, CredentialsView};

    /// What the source writes, the shared view reads back: the contract's two halves agree.
    #[test]
    fn the_shared_view_reads_what_the_source_writes() {
        gst::init().unwrap();
        let header = |name: &str, value: &str| Header {
            name: name.into(),
            value: Secret::new(value),
        };
        let audio = AudioObject {
            track_id: "T1".into(),
            manifest_url: Secret::new("https://cdn.invalid/m.mpd?sig=S"),
            expires: 1_900_000_000,
            quality: "HD".into(),
            drm_type: "WIDEVINE".into(),
            headers: AudioHeaders {
                key: vec![header("x-key", "K")],
                manifest_headers: vec![header("x-manifest", "M")],
                audio_segment_headers: vec![header("x-segment", "G")],
            },
        };
        let creds = AmzMusicCredentials::new(&audio, Some(("Atza|tok", 4)), "ua/1", "US");
        let s = contract::audio_object_structure(
            &AudioObjectFields {
                track_id: "T1",
                generation: 1,
                expires: audio.expires,
                quality: "HD",
            },
            &creds,
        );
        let view = CredentialsView::from_structure(&s).unwrap();
        assert_eq!(
            view.manifest_uri().as_deref(),
            Some("https://cdn.invalid/m.mpd?sig=S")
        );
        assert_eq!(view.authorization().as_deref(), Some("Bearer Atza|tok"));
        assert_eq!(view.user_agent().as_deref(), Some("ua/1"));
        assert_eq!(view.token_serial(), Some(4));
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(view.segment_headers(), vec![pair("x-segment", "G")]);
        assert_eq!(view.manifest_headers(), vec![pair("x-manifest", "M")]);
        assert_eq!(
            view.key_headers(),
            vec![pair("x-key", "K"), pair(MARKET_HEADER, "US")]
        );
        assert!(!format!("{view:?} {s:?}").contains("Atza|tok"));
    }
}
