// SPDX-License-Identifier: MPL-2.0
//! The emulator's live settings: what `serve`'s flags set and `POST /_emulator/config`
//! changes while it runs. Read by every service; depends on nothing but the catalogue's types.

use serde::Deserialize;

use crate::content::catalog::{Addressing, KeySystem};

/// Settings tests may change while the emulator runs (`POST /_emulator/config`).
#[derive(Debug, Clone, serde::Serialize, Deserialize)]
pub struct Config {
    pub audio_object_lifetime_s: u64,
    pub token_lifetime_s: u64,
    pub addressing: Addressing,
    pub open_mirror: bool,
    #[serde(default = "default_device_code_lifetime")]
    pub device_code_lifetime_s: u64,
    #[serde(default = "default_device_poll_interval")]
    pub device_poll_interval_s: u64,
    #[serde(default = "default_license_duration")]
    pub license_duration_s: u64,
    #[serde(default = "default_graphql_rate_limit")]
    pub graphql_rate_limit: u32,
    /// Seconds the emulator's clock is ahead of the machine's (negative: behind): the clock
    /// its audio objects expire by, its CDN and license server check them by, and its `Date`
    /// header tells, as a server whose clock disagrees with the client's.
    #[serde(default)]
    pub clock_offset_s: i64,
    /// The DRM system the encrypted content is offered for (`widevine`, `clearkey`).
    #[serde(default)]
    pub key_system: KeySystem,
}

fn default_device_code_lifetime() -> u64 {
    600
}
fn default_device_poll_interval() -> u64 {
    5
}
fn default_license_duration() -> u64 {
    3600
}
fn default_graphql_rate_limit() -> u32 {
    25
}

impl Default for Config {
    fn default() -> Self {
        Config {
            audio_object_lifetime_s: 3600,
            token_lifetime_s: 3600,
            addressing: Addressing::List,
            open_mirror: false,
            device_code_lifetime_s: default_device_code_lifetime(),
            device_poll_interval_s: default_device_poll_interval(),
            license_duration_s: default_license_duration(),
            graphql_rate_limit: default_graphql_rate_limit(),
            clock_offset_s: 0,
            key_system: KeySystem::Widevine,
        }
    }
}
