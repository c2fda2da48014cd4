// SPDX-License-Identifier: MPL-2.0
//! `amzdashdemux`: turns an on-demand DASH audio manifest into one continuous fragmented-MP4
//! byte stream for `qtdemux`, choosing representations adaptively.

use gst::glib;
use gst::prelude::*;

mod audio_object;
mod history;
mod imp;
mod protection;
mod refresher;
mod report;
mod seek;
mod settings;
mod state;
mod streams;

pub use audio_object::{audio_object_from_structure, CAPS_SOURCE_FIELD, CAPS_SOURCE_VALUE};
/// The GstContext type that carries the last stream's estimates to the next demuxer.
pub use history::CONTEXT_TYPE as HISTORY_CONTEXT_TYPE;

glib::wrapper! {
    pub struct AmzDashDemux(ObjectSubclass<imp::AmzDashDemux>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Above dashdemux2 (PRIMARY + 1): decodebin3/parsebin filter factories by caps *subset*
    // for fixed caps, and our template requires `source=amazonmusicsrc`, so plain
    // `application/dash+xml` from typefind never reaches us and stays with dashdemux2, while
    // amazonmusicsrc's output (a subset of both templates) comes here first.
    gst::Element::register(
        Some(plugin),
        "amzdashdemux",
        gst::Rank::PRIMARY + 2,
        AmzDashDemux::static_type(),
    )
}
