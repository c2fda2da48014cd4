// SPDX-License-Identifier: MPL-2.0
//! The element's settings: what its properties set, their defaults, their declarations and the
//! conversions between property values and what the engine is configured with.

use amzmusic_common::url_policy::AllowList;
use gst::glib;
use gst::prelude::*;
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{self, Limits, Live};
use crate::fetch::RetryPolicy;
use amzmusic_common::codec::Codec;
use amzmusic_common::http::TlsProxy;
use std::path::PathBuf;

pub const DEFAULT_MAX_BITRATE: u64 = 0;
pub const DEFAULT_MAX_QUALITY: MaxQuality = MaxQuality::Any;
/// Audio is small: a minute ahead rides out long outages for ~12 MB of HD FLAC.
pub const DEFAULT_BUFFER_TIME: gst::ClockTime = gst::ClockTime::from_seconds(60);
pub const DEFAULT_BUFFER_BYTES: u64 = 32 * 1024 * 1024;
pub const DEFAULT_LOW_WATERMARK: gst::ClockTime = gst::ClockTime::from_seconds(4);
pub const DEFAULT_MAX_ATTEMPTS: u32 = 6;
pub const DEFAULT_CONNECT_TIMEOUT: u32 = 5;
pub const DEFAULT_STALL_TIMEOUT: u32 = 10;
pub const DEFAULT_CODEC_SWITCHING: bool = false;
/// The User-Agent of segment requests when the audio object names none.
pub const DEFAULT_USER_AGENT: &str = concat!("gst-amzdash/", env!("CARGO_PKG_VERSION"));

/// The `max-quality` property: the highest `amz-music:trackType` to play. A GEnum, so a typo is
/// an error where a free string silently meant "any".
#[derive(Debug, Default, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstAmzDashMaxQuality")]
pub enum MaxQuality {
    #[default]
    #[enum_value(name = "Any: every trackType", nick = "any")]
    Any = 0,
    #[enum_value(name = "SD: standard definition (lossy)", nick = "sd")]
    Sd = 2,
    #[enum_value(name = "HD: CD quality, 16-bit lossless", nick = "hd")]
    Hd = 3,
    #[enum_value(name = "UHD: up to 24-bit/192 kHz lossless", nick = "uhd")]
    Uhd = 4,
    #[enum_value(name = "Spatial: Dolby Atmos and 360 Reality Audio", nick = "spatial")]
    Spatial = 5,
}

impl MaxQuality {
    /// The trackType label it caps at, as [`engine::quality_rank`] reads it (None: no cap).
    pub fn label(self) -> Option<&'static str> {
        match self {
            MaxQuality::Any => None,
            MaxQuality::Sd => Some("SD"),
            MaxQuality::Hd => Some("HD"),
            MaxQuality::Uhd => Some("UHD"),
            MaxQuality::Spatial => Some("SPATIAL"),
        }
    }
}

/// The settings fixed while playing (`max-bitrate` and `representation` live in
/// [`engine::Live`](crate::engine::Live), the one copy the engine reads).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub max_quality: MaxQuality,
    pub buffer_time: gst::ClockTime,
    pub buffer_bytes: u64,
    pub low_watermark: gst::ClockTime,
    /// `max-attempts` (and its deprecated alias `retries`): attempts per request.
    pub max_attempts: u32,
    pub connect_timeout: u32,
    pub stall_timeout: u32,
    pub codec_switching: bool,
    /// `allowed-hosts` as written (read by [`Settings::allow_list`] at start).
    pub allowed_hosts: String,
    /// `ca-file` (unset: `$AMAZONMUSIC_CA_FILE`) and `proxy` (unset: the proxy environment).
    pub tls: TlsProxy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_quality: DEFAULT_MAX_QUALITY,
            buffer_time: DEFAULT_BUFFER_TIME,
            buffer_bytes: DEFAULT_BUFFER_BYTES,
            low_watermark: DEFAULT_LOW_WATERMARK,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            codec_switching: DEFAULT_CODEC_SWITCHING,
            allowed_hosts: String::new(),
            tls: TlsProxy::default(),
        }
    }
}

impl Settings {
    /// Sets the property `name` from `value`; false for a property not kept here.
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        match name {
            "max-quality" => self.max_quality = value.get().unwrap(),
            "codec-switching" => self.codec_switching = value.get().unwrap(),
            "buffer-time" => self.buffer_time = gst::ClockTime::from_nseconds(value.get().unwrap()),
            "buffer-bytes" => self.buffer_bytes = value.get().unwrap(),
            "low-watermark-time" => {
                self.low_watermark = gst::ClockTime::from_nseconds(value.get().unwrap())
            }
            "max-attempts" | "retries" => self.max_attempts = value.get().unwrap(),
            "connect-timeout" => self.connect_timeout = value.get().unwrap(),
            "stall-timeout" => self.stall_timeout = value.get().unwrap(),
            "allowed-hosts" => {
                self.allowed_hosts = value.get::<Option<String>>().unwrap().unwrap_or_default()
            }
            "ca-file" => {
                self.tls.ca_file = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            }
            "proxy" => {
                self.tls.proxy = value
                    .get::<Option<String>>()
                    .unwrap()
                    .filter(|s| !s.is_empty())
            }
            _ => return false,
        }
        true
    }

    /// The value of the property `name`; None for a property not kept here.
    pub fn get(&self, name: &str) -> Option<glib::Value> {
        Some(match name {
            "max-quality" => self.max_quality.to_value(),
            "codec-switching" => self.codec_switching.to_value(),
            "buffer-time" => self.buffer_time.nseconds().to_value(),
            "buffer-bytes" => self.buffer_bytes.to_value(),
            "low-watermark-time" => self.low_watermark.nseconds().to_value(),
            "max-attempts" | "retries" => self.max_attempts.to_value(),
            "connect-timeout" => self.connect_timeout.to_value(),
            "stall-timeout" => self.stall_timeout.to_value(),
            "allowed-hosts" => (!self.allowed_hosts.is_empty())
                .then(|| self.allowed_hosts.clone())
                .to_value(),
            "ca-file" => self
                .tls
                .ca_file
                .as_ref()
                .map(|p| p.display().to_string())
                .to_value(),
            "proxy" => self.tls.proxy.to_value(),
            _ => return None,
        })
    }

    /// The hosts and networks of `allowed-hosts`, or why the value cannot be used.
    pub fn allow_list(&self) -> Result<AllowList, String> {
        AllowList::parse(&self.allowed_hosts).map_err(|e| format!("Invalid allowed-hosts: {e}"))
    }

    /// The retry policy of every request (`max-attempts` counts attempts, at least one).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.max_attempts.max(1),
            connect_timeout: Duration::from_secs(self.connect_timeout as u64),
            stall_timeout: Duration::from_secs(self.stall_timeout as u64),
            ..Default::default()
        }
    }

    /// How far the download runs ahead.
    pub fn limits(&self) -> Limits {
        Limits {
            buffer_time: Duration::from_nanos(self.buffer_time.nseconds()),
            buffer_bytes: self.buffer_bytes,
        }
    }

    /// The engine's configuration, starting in codec `family`, reading the live settings and
    /// starting from (and leaving its estimates in) `history`.
    pub fn engine_config(
        &self,
        family: Codec,
        live: Arc<Live>,
        history: engine::History,
    ) -> engine::Config {
        engine::Config {
            limits: self.limits(),
            family,
            codec_switching: self.codec_switching,
            live,
            history,
        }
    }
}

/// The element's properties, declared once, in the order gst-inspect-1.0 lists them.
pub fn properties() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecUInt64::builder("max-bitrate")
            .nick("Maximum bitrate")
            .blurb("Never choose a representation above this bandwidth (bits/s, 0 = no limit)")
            .default_value(DEFAULT_MAX_BITRATE)
            .mutable_playing()
            .build(),
        glib::ParamSpecString::builder("representation")
            .nick("Representation")
            .blurb("Play this Representation id instead of choosing adaptively (empty = adaptive); another codec than the current one starts a new stream (see codec-switching)")
            .default_value(Some(""))
            .mutable_playing()
            .build(),
        glib::ParamSpecBoolean::builder("codec-switching")
            .nick("Codec switching")
            .blurb("Let the adaptive choice change codec mid-stream (FLAC <-> Opus), each change a new stream on the source pad. Only for a downstream that takes that: amzdashbin sets it; one qtdemux cannot change codec")
            .default_value(DEFAULT_CODEC_SWITCHING)
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("max-quality", DEFAULT_MAX_QUALITY)
            .nick("Maximum quality")
            .blurb("Highest amz-music:trackType to play (AdaptationSets labelled above it are left out)")
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("buffer-time")
            .nick("Buffer time")
            .blurb("Download this much audio ahead of playback (ns)")
            .minimum(gst::ClockTime::SECOND.nseconds())
            .default_value(DEFAULT_BUFFER_TIME.nseconds())
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("buffer-bytes")
            .nick("Buffer bytes")
            .blurb("Never hold more than this many downloaded bytes (plus one segment)")
            .minimum(64 * 1024)
            .default_value(DEFAULT_BUFFER_BYTES)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt64::builder("low-watermark-time")
            .nick("Low watermark")
            .blurb("Buffering messages report 100 % from this much audio ahead (ns)")
            .default_value(DEFAULT_LOW_WATERMARK.nseconds())
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("max-attempts")
            .nick("Maximum attempts")
            .blurb("Attempts per request (the first and its retries) on timeouts, 5xx and 429, with backoff and jitter")
            .minimum(1)
            .maximum(50)
            .default_value(DEFAULT_MAX_ATTEMPTS)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("retries")
            .nick("Attempts (deprecated)")
            .blurb("Deprecated alias of max-attempts, which it sets and reads: it always counted attempts, not retries")
            .minimum(1)
            .maximum(50)
            .default_value(DEFAULT_MAX_ATTEMPTS)
            .mutable_ready()
            .deprecated()
            .build(),
        glib::ParamSpecUInt::builder("connect-timeout")
            .nick("Connect timeout")
            .blurb("Seconds to wait for a connection")
            .minimum(1)
            .maximum(300)
            .default_value(DEFAULT_CONNECT_TIMEOUT)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("stall-timeout")
            .nick("Stall timeout")
            .blurb("Seconds without a byte before a request is retried")
            .minimum(1)
            .maximum(300)
            .default_value(DEFAULT_STALL_TIMEOUT)
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("allowed-hosts")
            .nick("Allowed hosts")
            .blurb("Hosts (name, *.suffix), addresses and CIDR networks the manifest may reach whatever their address class, comma-separated (by default a manifest on a public address reaches only public ones; the http(s)/file rule has no exception)")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("ca-file")
            .nick("CA file")
            .blurb("PEM file of CA certificates to trust besides the system roots (default: $AMAZONMUSIC_CA_FILE); certificates are always verified")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("proxy")
            .nick("Proxy")
            .blurb("HTTP proxy URL for every segment and manifest request, http://[user:password@]host:port (default: the http_proxy, https_proxy and no_proxy environment)")
            .mutable_ready()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .nick("Statistics")
            .blurb("Current representation, throughput estimate, buffer level, switches, stalls, bytes, refreshes, retries")
            .read_only()
            .build(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_round_trips_through_its_property() {
        gst::init().unwrap();
        let mut s = Settings::default();
        let values: [(&str, glib::Value); 11] = [
            ("max-quality", MaxQuality::Hd.to_value()),
            ("codec-switching", true.to_value()),
            ("buffer-time", 5_000_000_000u64.to_value()),
            ("buffer-bytes", 65_536u64.to_value()),
            ("low-watermark-time", 1_000_000_000u64.to_value()),
            ("max-attempts", 3u32.to_value()),
            ("retries", 4u32.to_value()),
            ("connect-timeout", 7u32.to_value()),
            ("stall-timeout", 9u32.to_value()),
            ("ca-file", Some("/etc/ssl/ca.pem").to_value()),
            ("proxy", Some("http://127.0.0.1:3128").to_value()),
        ];
        for (name, v) in &values {
            assert!(s.set(name, v), "{name}");
            let back = s.get(name).unwrap();
            assert_eq!(back.type_(), v.type_(), "{name}");
            assert_eq!(format!("{back:?}"), format!("{v:?}"), "{name}");
        }
        assert!(!s.set("max-bitrate", &0u64.to_value()));
        assert!(s.get("representation").is_none());
        assert!(s.get("stats").is_none());
    }

    #[test]
    fn max_quality_is_an_enum_whose_nicks_cap_at_track_types() {
        gst::init().unwrap();
        let class = glib::EnumClass::with_type(MaxQuality::static_type()).unwrap();
        let nicks: Vec<&str> = class.values().iter().map(|v| v.nick()).collect();
        assert_eq!(nicks, ["any", "sd", "hd", "uhd", "spatial"]);
        // A typo names no value (the string property read it as "any").
        assert!(class.value_by_nick("hdd").is_none());
        use MaxQuality::*;
        for (q, nick) in [
            (Any, "any"),
            (Sd, "sd"),
            (Hd, "hd"),
            (Uhd, "uhd"),
            (Spatial, "spatial"),
        ] {
            assert_eq!(
                class.value_by_nick(nick).unwrap().value(),
                q as i32,
                "{nick}"
            );
            // The value is the rank of the trackType it caps at (0: none).
            let rank = q.label().map(engine::quality_rank).unwrap_or(0);
            assert_eq!(rank, q as u32, "{nick}");
        }
        // `retries` is `max-attempts` under its old name.
        let mut s = Settings::default();
        assert!(s.set("retries", &2u32.to_value()));
        assert_eq!(s.get("max-attempts").unwrap().get::<u32>().unwrap(), 2);
        let deprecated = properties()
            .into_iter()
            .find(|p| p.name() == "retries")
            .unwrap();
        assert!(deprecated.flags().contains(glib::ParamFlags::DEPRECATED));
    }

    #[test]
    fn declared_defaults_are_the_settings_defaults() {
        gst::init().unwrap();
        let s = Settings::default();
        for p in properties() {
            if let Some(v) = s.get(p.name()) {
                assert_eq!(
                    format!("{:?}", p.default_value()),
                    format!("{v:?}"),
                    "{}",
                    p.name()
                );
            }
        }
    }

    #[test]
    fn retries_count_attempts_and_timeouts_are_seconds() {
        let s = Settings {
            max_attempts: 0,
            connect_timeout: 3,
            stall_timeout: 4,
            ..Default::default()
        };
        let p = s.retry_policy();
        assert_eq!(p.attempts, 1);
        assert_eq!(p.connect_timeout, Duration::from_secs(3));
        assert_eq!(p.stall_timeout, Duration::from_secs(4));
        let l = Settings::default().limits();
        assert_eq!(l.buffer_time, Duration::from_secs(60));
        assert_eq!(l.buffer_bytes, DEFAULT_BUFFER_BYTES);
        let c = Settings {
            codec_switching: true,
            ..Default::default()
        }
        .engine_config(
            Codec::Opus,
            Arc::new(Live::default()),
            engine::History::new(),
        );
        assert!(c.codec_switching);
        assert_eq!(c.family, Codec::Opus);
        assert_eq!(c.limits.buffer_bytes, DEFAULT_BUFFER_BYTES);
        assert!(DEFAULT_USER_AGENT.starts_with("gst-amzdash/"));
    }
}
