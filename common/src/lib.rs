// SPDX-License-Identifier: MPL-2.0
//! What the Amazon Music plugins and the emulator share, in plain Rust: one definition of each
//! wire format for both of its sides. It registers no GObject type (GTypes stay per plugin).

pub mod cenc;
pub mod chromium_cdm;
pub mod clearkey;
pub mod codec;
pub mod contract;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod license;
pub mod pssh;
pub mod url_policy;
