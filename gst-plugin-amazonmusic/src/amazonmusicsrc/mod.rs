// SPDX-License-Identifier: MPL-2.0
//! `amazonmusicsrc`: turns an Amazon Music track id into its DASH manifest, the sticky
//! audio-object event and the tags, and answers the contract's refresh query.

use gst::glib;
use gst::prelude::*;

mod imp;

/// The `quality` property.
#[derive(Debug, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstAmazonMusicQuality")]
pub enum Quality {
    #[default]
    #[enum_value(name = "Auto: the best the installed decoders can play", nick = "auto")]
    Auto,
    #[enum_value(name = "SD: Opus", nick = "sd")]
    Sd,
    #[enum_value(name = "HD: FLAC up to 48 kHz, with SD fallback", nick = "hd")]
    Hd,
    #[enum_value(name = "UHD: FLAC up to 192 kHz, with SD fallback", nick = "uhd")]
    Uhd,
    #[enum_value(name = "Dolby Atmos (E-AC-3), with SD fallback", nick = "atmos")]
    Atmos,
    #[enum_value(name = "Sony 360 Reality Audio, with SD fallback", nick = "360ra")]
    Ra360,
}

impl From<Quality> for crate::config::Quality {
    fn from(q: Quality) -> Self {
        use crate::config::Quality as Q;
        match q {
            Quality::Auto => Q::Auto,
            Quality::Sd => Q::Sd,
            Quality::Hd => Q::Hd,
            Quality::Uhd => Q::Uhd,
            Quality::Atmos => Q::Atmos,
            Quality::Ra360 => Q::Ra360,
        }
    }
}

glib::wrapper! {
    pub struct AmazonMusicSrc(ObjectSubclass<imp::AmazonMusicSrc>)
        @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object,
        @implements gst::URIHandler;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    Quality::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "amazonmusicsrc",
        // Primary, so that playbin3 picks it for amazonmusic:// URIs.
        gst::Rank::PRIMARY,
        AmazonMusicSrc::static_type(),
    )
}
