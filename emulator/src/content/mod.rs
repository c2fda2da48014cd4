//! The emulator's content side: deterministic synthesis, encoding with GStreamer's encoders,
//! CMAF/CENC packaging, manifests, and the on-disk cache that ties them together.

pub mod catalog;
pub mod encode;
pub mod fmp4;
pub mod loudness;
pub mod mpd;
pub mod protect;
pub mod store;
pub mod synth;
