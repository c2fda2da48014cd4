// SPDX-License-Identifier: MPL-2.0
//! Credentials from upstream (docs/element-contract.md section 2): the `amazonmusic-audio-object`
//! query and the credentials object it answers with, read into license request headers.

use gst::glib;
use gst::prelude::*;

use crate::fetch::{bearer, RequestHeaders};

/// The upstream query of docs/element-contract.md section 2.
const AUDIO_OBJECT_QUERY: &str = "amazonmusic-audio-object";

/// Asks upstream of `pad` for a credentials object: `reason` `lookup` (the current one; upstream
/// never calls its API for it) or `forbidden` (a refreshed one, newer than generation `held`).
/// Returns it with its audio object's generation. May block: upstream may refresh its token
/// or its audio object first.
pub fn query(pad: &gst::Pad, reason: &str, held: u32) -> Option<(glib::Object, u32)> {
    let mut query = gst::query::Custom::new(
        gst::Structure::builder(AUDIO_OBJECT_QUERY)
            .field("reason", reason)
            .field("generation", held)
            .build(),
    );
    if !pad.peer_query(&mut query) {
        return None;
    }
    let answer = query.structure()?;
    let creds = answer.get::<glib::Object>("credentials").ok()?;
    Some((creds, answer.get::<u32>("generation").unwrap_or(0)))
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
