//! Reads the contract's `amazonmusic-audio-object` structure (sticky event or query answer):
//! plain fields plus an `AmzMusicCredentials` GObject whose properties hold the secrets.

use gst::glib;
use gst::prelude::*;
use std::time::SystemTime;
use url::Url;

use crate::engine::AudioObject;

/// Name of the sticky event and of the refresh query (docs/element-contract.md).
pub const AUDIO_OBJECT: &str = "amazonmusic-audio-object";
/// The sink caps field only amazonmusicsrc sets (docs/element-contract.md).
pub const CAPS_SOURCE_FIELD: &str = "source";
pub const CAPS_SOURCE_VALUE: &str = "amazonmusicsrc";

fn headers(obj: &glib::Object, prop: &str) -> Vec<(String, String)> {
    if obj.find_property(prop).is_none() {
        return Vec::new();
    }
    let Some(s) = obj.property::<Option<gst::Structure>>(prop) else {
        return Vec::new();
    };
    s.iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.get::<String>().ok()?)))
        .collect()
}

fn string(obj: &glib::Object, prop: &str) -> Option<String> {
    obj.find_property(prop)?;
    obj.property::<Option<String>>(prop)
}

/// The audio object in `s`, or None when `s` carries none (a query nobody answered).
pub fn audio_object_from_structure(s: &gst::StructureRef) -> Option<AudioObject> {
    let creds = s.get::<glib::Object>("credentials").ok()?;
    let mut ao = AudioObject {
        generation: s.get::<u32>("generation").unwrap_or(1),
        expires: s.get::<u64>("expires").ok(),
        manifest_uri: string(&creds, "manifest-uri").and_then(|u| Url::parse(&u).ok()),
        segment_headers: headers(&creds, "segment-headers"),
        manifest_headers: headers(&creds, "manifest-headers"),
        user_agent: string(&creds, "user-agent"),
        refresh_at: None,
    };
    ao.schedule_refresh(SystemTime::now());
    Some(ao)
}
