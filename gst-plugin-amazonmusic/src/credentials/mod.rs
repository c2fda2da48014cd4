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

impl AmzMusicCredentials {
    /// The credentials of `audio`, with the current access token and User-Agent.
    pub fn new(audio: &AudioObject, access_token: Option<&str>, user_agent: &str) -> Self {
        glib::Object::builder()
            .property("manifest-uri", audio.manifest_url.expose())
            .property(
                "segment-headers",
                headers(&audio.headers.audio_segment_headers),
            )
            .property("manifest-headers", headers(&audio.headers.manifest_headers))
            .property("key-headers", headers(&audio.headers.key))
            .property("authorization", access_token.map(|t| format!("Bearer {t}")))
            .property("user-agent", user_agent)
            .build()
    }
}
