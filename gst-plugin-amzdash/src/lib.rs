// SPDX-License-Identifier: MPL-2.0
//! Adaptive MPEG-DASH audio demuxer for Amazon Music manifests

use gst::glib;

pub mod abr;
pub mod amzdashbin;
pub mod amzdashdemux;
pub mod box_layout;
pub mod clear_lead;
pub mod engine;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod loudness;
pub mod mpd;
pub mod playhead;
pub mod segments;
pub mod timing;
/// Which URLs a manifest may name: shared with the other plugins (`amzmusic_common::url_policy`).
pub use amzmusic_common::url_policy;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    amzdashdemux::register(plugin)?;
    amzdashbin::register(plugin)
}

gst::plugin_define!(
    amzdash,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
