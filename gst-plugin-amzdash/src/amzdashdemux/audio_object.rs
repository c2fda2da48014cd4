// SPDX-License-Identifier: MPL-2.0
//! Reads the contract's `amazonmusic-audio-object` structure (sticky event or query answer):
//! plain fields plus an `AmzMusicCredentials` GObject, read through `amzmusic_common`.

use amzmusic_common::contract::{field, CredentialsView};
use std::time::SystemTime;
use url::Url;

use crate::engine::AudioObject;

/// Name of the sticky event and of the refresh query (docs/element-contract.md).
pub use amzmusic_common::contract::AUDIO_OBJECT;
/// The sink caps field only amazonmusicsrc sets (docs/element-contract.md).
pub use amzmusic_common::contract::{CAPS_SOURCE_FIELD, CAPS_SOURCE_VALUE};

/// The audio object in `s`, or None when `s` carries none (a query nobody answered).
pub fn audio_object_from_structure(s: &gst::StructureRef) -> Option<AudioObject> {
    let creds = CredentialsView::from_structure(s)?;
    let mut ao = AudioObject {
        generation: s.get::<u32>(field::GENERATION).unwrap_or(1),
        expires: s.get::<u64>(field::EXPIRES).ok(),
        manifest_uri: creds.manifest_uri().and_then(|u| Url::parse(&u).ok()),
        segment_headers: creds.segment_headers(),
        manifest_headers: creds.manifest_headers(),
        user_agent: creds.user_agent(),
        refresh_at: None,
    };
    ao.schedule_refresh(SystemTime::now());
    Some(ao)
}
