// SPDX-License-Identifier: MPL-2.0
//! Amazon Music source: login, track resolution, audio-object refresh and tags.
//! Protocol logic lives in plain modules (token, api, firefly, config, session, resolver, audio_object,
//! errors); the element
//! glue in `amazonmusicsrc/`.

use gst::glib;
use gst::prelude::*;

pub mod amazonmusicsrc;
pub mod api;
pub mod audio_object;
pub mod config;
pub mod credentials;
pub mod errors;
pub mod firefly;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod resolver;
pub mod session;
pub mod tags;
#[cfg(test)]
mod testing;
pub mod token;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    tags::register();
    // Registered with the plugin so other plugins can look the type up by name.
    credentials::AmzMusicCredentials::static_type();
    amazonmusicsrc::register(plugin)
}

gst::plugin_define!(
    amazonmusic,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
