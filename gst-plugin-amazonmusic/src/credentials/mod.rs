// SPDX-License-Identifier: MPL-2.0
//! `AmzMusicCredentials`: the object the contract (docs/element-contract.md) hands downstream.
//! Its secrets are properties, so printing an event or query structure never shows them.

use gst::glib;

use crate::api::{AudioObject, Header};

mod imp;

glib::wrapper! {
    pub struct AmzMusicCredentials(ObjectSubclass<imp::AmzMusicCredentials>);
}

fn headers(list: &[Header]) -> gst::Structure {
    let mut s = gst::Structure::new_empty("headers");
    for h in list {
        s.set(h.name.as_str(), h.value.expose());
    }
    s
}

/// The market header the license server checks entitlement against.
pub const MARKET_HEADER: &str = "x-amzn-market";

impl AmzMusicCredentials {
    /// The credentials of `audio`, with the current access token and User-Agent. `market`
    /// joins the key headers: the license server, like the music API, decides entitlement by
    /// the caller's market, and the decryptor sends exactly the key headers.
    pub fn new(
        audio: &AudioObject,
        access_token: Option<&str>,
        user_agent: &str,
        market: &str,
    ) -> Self {
        let mut key_headers = headers(&audio.headers.key);
        if !key_headers.has_field(MARKET_HEADER) && !market.is_empty() {
            key_headers.set(MARKET_HEADER, market);
        }
        glib::Object::builder()
            .property("manifest-uri", audio.manifest_url.expose())
            .property(
                "segment-headers",
                headers(&audio.headers.audio_segment_headers),
            )
            .property("manifest-headers", headers(&audio.headers.manifest_headers))
            .property("key-headers", key_headers)
            .property("authorization", access_token.map(|t| format!("Bearer {t}")))
            .property("user-agent", user_agent)
            .build()
    }
}
