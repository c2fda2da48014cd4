// SPDX-License-Identifier: MPL-2.0
//! Common Encryption decryptor behind a CDM interface, with a software stub CDM

use gst::glib;

pub mod cdm;
pub mod cenc;
pub mod fetch;
pub mod protocol;

fn plugin_init(_plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    Ok(())
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
