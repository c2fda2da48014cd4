// SPDX-License-Identifier: MPL-2.0
//! `widevinedecrypt`: turns CENC-protected samples (cenc or cbcs) from qtdemux back into the
//! original FLAC, Opus, E-AC-3 or AAC frames, fetching licenses through a CDM.

use gst::glib;
use gst::prelude::*;

mod credentials;
mod imp;
mod sample;

glib::wrapper! {
    pub struct WidevineDecrypt(ObjectSubclass<imp::WidevineDecrypt>)
        @extends gst_base::BaseTransform, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Primary so that decodebin3/parsebin plug it after qtdemux and qtdemux's
    // gst_protection_select_system() finds it.
    gst::Element::register(
        Some(plugin),
        "widevinedecrypt",
        gst::Rank::PRIMARY,
        WidevineDecrypt::static_type(),
    )
}
