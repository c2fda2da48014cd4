// SPDX-License-Identifier: MPL-2.0
//! `amzdashbin`: `amzdashdemux` with the demuxing, decryption and parsing behind it in one bin,
//! whose single source pad carries parsed audio (FLAC, Opus, E-AC-3, AAC). The codec may change
//! on that pad mid-stream (FLAC down to Opus and back): decodebin3 swaps its decoder and the
//! audio stays continuous, which a codec change inside one push-mode `qtdemux` cannot do on
//! GStreamer 1.22 (see the crate README, "Switching design").

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct AmzDashBin(ObjectSubclass<imp::AmzDashBin>)
        @extends gst::Bin, gst::Element, gst::Object,
        @implements gst::ChildProxy;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Above amzdashdemux (PRIMARY + 2) for the same caps, so urisourcebin (playbin3) and
    // parsebin (decodebin3) plug the bin, and its output needs no parsebin of its own.
    gst::Element::register(
        Some(plugin),
        "amzdashbin",
        gst::Rank::PRIMARY + 3,
        AmzDashBin::static_type(),
    )
}
