// SPDX-License-Identifier: MPL-2.0
//! Credentials from upstream (docs/element-contract.md section 2): the `amazonmusic-audio-object`
//! query and the credentials object it answers with, read into license request headers.

use gst::glib;
use gst::prelude::*;

use crate::fetch::{bearer, RequestHeaders};

/// The upstream query of docs/element-contract.md section 2.
const AUDIO_OBJECT_QUERY: &str = "amazonmusic-audio-object";

/// Asks upstream of `pad` for the current credentials object (`reason=lookup`). May block:
/// upstream may refresh its token first.
pub fn query(pad: &gst::Pad) -> Option<glib::Object> {
    let mut query = gst::query::Custom::new(
        gst::Structure::builder(AUDIO_OBJECT_QUERY)
            .field("reason", "lookup")
            .field("generation", 0u32)
            .build(),
    );
    let answered = pad.peer_query(&mut query);
    answered
        .then(|| query.structure())
        .flatten()
        .and_then(|s| s.get::<glib::Object>("credentials").ok())
}

/// Request headers from a credentials object (`authorization`, `user-agent`, `key-headers`),
/// or the defaults without one.
pub fn request_headers(creds: Option<&glib::Object>) -> RequestHeaders {
    let mut headers = RequestHeaders {
        user_agent: concat!("gst-widevine-stub/", env!("CARGO_PKG_VERSION")).into(),
        ..Default::default()
    };
    let Some(creds) = creds else { return headers };
    if let Some(auth) = string_property(creds, "authorization") {
        headers.authorization = Some(bearer(&auth));
    }
    if let Some(ua) = string_property(creds, "user-agent") {
        headers.user_agent = ua;
    }
    let key_headers = creds.find_property("key-headers").and_then(|_| {
        creds
            .property_value("key-headers")
            .get::<gst::Structure>()
            .ok()
    });
    if let Some(key_headers) = key_headers {
        for (name, value) in key_headers.iter() {
            if let Ok(v) = value.get::<String>() {
                headers.extra.push((name.to_string(), v));
            }
        }
    }
    headers
}

fn string_property(obj: &glib::Object, name: &str) -> Option<String> {
    obj.find_property(name)?;
    obj.property_value(name)
        .get::<Option<String>>()
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_credentials_a_request_carries_only_our_user_agent() {
        let h = request_headers(None);
        assert!(h.authorization.is_none() && h.extra.is_empty());
        assert!(h.user_agent.starts_with("gst-widevine-stub/"));
        assert_eq!(h.license_expiration_secs, None);
    }
}
