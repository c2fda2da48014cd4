// SPDX-License-Identifier: MPL-2.0
//! Common Encryption decryptor behind a CDM interface, with a software stub CDM

use std::sync::LazyLock;

use gst::glib;

pub mod cdm;
pub mod cenc;
pub mod fetch;
pub mod flac;
#[doc(hidden)]
pub mod fuzzing;
pub mod license;
pub mod protocol;
mod widevinedecrypt;

/// The element's debug category, shared by the license manager's logs.
pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "widevinedecrypt",
        gst::DebugColorFlags::empty(),
        Some("Widevine (stub CDM) CENC decryptor"),
    )
});

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    widevinedecrypt::register(plugin)
}

gst::plugin_define!(
    widevinestub,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MPL",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
