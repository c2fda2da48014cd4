//! amzmusic-emulator: a faithful local stand-in for the Amazon Music services the plugins use.
//! Content (synthesis, encoding, CMAF/CENC packaging, manifests) and the HTTP server live here.

pub mod cdn;
pub mod config;
pub mod content;
pub mod export;
pub mod observe;
pub mod server;
pub mod services;
pub mod shaping;
pub mod signing;
pub mod state;
pub mod tls;
