// SPDX-License-Identifier: MPL-2.0
//! Which CDM an element uses: the `cdm` property (or `$AMAZONMUSIC_CDM`) read into a
//! [`CdmChoice`], and the license body format (`license-body`) that fits it. Plain Rust; the
//! element loads the choice at READY.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use amzmusic_common::clearkey;
use gst::glib;

use crate::fetch::BodyFormat;
use crate::protocol::WIDEVINE_SYSTEM_ID;

/// The environment variable read when the `cdm` property is not set (so `playbin3` needs no
/// code).
pub const CDM_ENV: &str = "AMAZONMUSIC_CDM";

/// The key system an `ocdm:`/`chromium:` module is asked for when the value names none.
pub const DEFAULT_KEY_SYSTEM: &str = "com.widevine.alpha";

/// PlayReady, so a PlayReady OpenCDM can be named (its PSSHs then reach it).
const PLAYREADY_SYSTEM_ID: [u8; 16] = [
    0x9a, 0x04, 0xf0, 0x79, 0x98, 0x40, 0x42, 0x86, 0xab, 0x92, 0xe6, 0x5b, 0xe0, 0x88, 0x5f, 0x95,
];

/// A value of the `cdm` property.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CdmChoice {
    /// The in-tree software CDM of the stub protocol (the emulator's Widevine stand-in).
    #[default]
    Stub,
    /// The built-in W3C Clear Key CDM.
    ClearKey,
    /// An OpenCDM library (`open_cdm.h`), e.g. RDK's/WPE's `libocdm.so`.
    Ocdm {
        library: PathBuf,
        key_system: String,
    },
    /// A library with Chromium's CDM interface (`content_decryption_module.h`).
    Chromium {
        library: PathBuf,
        key_system: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cdm {value:?}: {why} (stub, clearkey, ocdm:<library>[,<key system>] or chromium:<library>[,<key system>])")]
pub struct ChoiceError {
    value: String,
    why: String,
}

impl FromStr for CdmChoice {
    type Err = ChoiceError;

    fn from_str(value: &str) -> Result<Self, ChoiceError> {
        let err = |why: &str| ChoiceError {
            value: value.to_owned(),
            why: why.to_owned(),
        };
        let v = value.trim();
        match v {
            "" | "stub" => return Ok(CdmChoice::Stub),
            "clearkey" | clearkey::KEY_SYSTEM => return Ok(CdmChoice::ClearKey),
            _ => {}
        }
        let (kind, rest) = v.split_once(':').ok_or_else(|| err("unknown CDM name"))?;
        // `<library>[,<key system>]`: a key system never holds a '/', a path may hold ','.
        let (library, key_system) = match rest.rsplit_once(',') {
            Some((lib, ks)) if !ks.contains('/') => (lib.trim(), ks.trim()),
            _ => (rest.trim(), ""),
        };
        if library.is_empty() {
            return Err(err("the library path is empty"));
        }
        let key_system = if key_system.is_empty() {
            DEFAULT_KEY_SYSTEM.to_owned()
        } else {
            key_system.to_owned()
        };
        if system_ids_of(&key_system).is_empty() {
            return Err(err(&format!(
                "key system {key_system:?} is none of com.widevine.alpha, org.w3.clearkey[.*], com.microsoft.playready[.*]"
            )));
        }
        let library = PathBuf::from(library);
        match kind {
            "ocdm" => Ok(CdmChoice::Ocdm {
                library,
                key_system,
            }),
            "chromium" => Ok(CdmChoice::Chromium {
                library,
                key_system,
            }),
            _ => Err(err(&format!("unknown CDM kind {kind:?}"))),
        }
    }
}

impl fmt::Display for CdmChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CdmChoice::Stub => f.write_str("stub"),
            CdmChoice::ClearKey => f.write_str("clearkey"),
            CdmChoice::Ocdm {
                library,
                key_system,
            } => write!(f, "ocdm:{},{key_system}", library.display()),
            CdmChoice::Chromium {
                library,
                key_system,
            } => write!(f, "chromium:{},{key_system}", library.display()),
        }
    }
}

impl CdmChoice {
    /// `$AMAZONMUSIC_CDM`, or the stub when it is unset or empty.
    pub fn from_env() -> Result<CdmChoice, ChoiceError> {
        std::env::var(CDM_ENV).unwrap_or_default().parse()
    }

    /// The system ids whose PSSHs this CDM reads.
    pub fn system_ids(&self) -> Vec<[u8; 16]> {
        match self {
            CdmChoice::Stub => vec![WIDEVINE_SYSTEM_ID],
            CdmChoice::ClearKey => clearkey::SYSTEM_IDS.to_vec(),
            CdmChoice::Ocdm { key_system, .. } | CdmChoice::Chromium { key_system, .. } => {
                system_ids_of(key_system)
            }
        }
    }
}

/// The `pssh` system ids of an EME key system name (a suffix after the name selects a
/// variant of it, as the test modules' fault key systems do).
pub fn system_ids_of(key_system: &str) -> Vec<[u8; 16]> {
    let is = |name: &str| key_system == name || key_system.starts_with(&format!("{name}."));
    if is(DEFAULT_KEY_SYSTEM) {
        vec![WIDEVINE_SYSTEM_ID]
    } else if is(clearkey::KEY_SYSTEM) {
        clearkey::SYSTEM_IDS.to_vec()
    } else if is("com.microsoft.playready") {
        vec![PLAYREADY_SYSTEM_ID]
    } else {
        Vec::new()
    }
}

/// The `license-body` property: how a license request travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, glib::Enum)]
#[enum_type(name = "GstWidevineDecryptLicenseBody")]
pub enum LicenseBody {
    /// Amazon's JSON wrapping for a Widevine key system, the raw challenge for any other.
    #[default]
    #[enum_value(
        name = "Amazon JSON for Widevine, the raw challenge otherwise",
        nick = "auto"
    )]
    Auto,
    /// `{"drmType":"WIDEVINE","licenseChallenge":"<base64>"}` in, `{"license":"<base64>"}`
    /// out (Amazon's license service, the emulator's).
    #[enum_value(name = "Amazon's JSON wrapping", nick = "amazon")]
    Amazon,
    /// The CDM's challenge as the body, the answer's body to the CDM (EME players; Clear Key
    /// and generic license servers).
    #[enum_value(name = "The CDM's raw challenge", nick = "raw")]
    Raw,
}

impl LicenseBody {
    /// The format for a CDM reading `systems`.
    pub fn resolve(self, systems: &[[u8; 16]]) -> BodyFormat {
        match self {
            LicenseBody::Amazon => BodyFormat::Amazon,
            LicenseBody::Raw => BodyFormat::Raw,
            LicenseBody::Auto if systems.contains(&WIDEVINE_SYSTEM_ID) => BodyFormat::Amazon,
            LicenseBody::Auto => BodyFormat::Raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_print_back() {
        for (text, want) in [
            ("", CdmChoice::Stub),
            ("stub", CdmChoice::Stub),
            (" clearkey ", CdmChoice::ClearKey),
            ("org.w3.clearkey", CdmChoice::ClearKey),
            (
                "ocdm:/usr/lib/libocdm.so",
                CdmChoice::Ocdm {
                    library: "/usr/lib/libocdm.so".into(),
                    key_system: "com.widevine.alpha".into(),
                },
            ),
            (
                "ocdm:/opt/a,b/libocdm.so,org.w3.clearkey",
                CdmChoice::Ocdm {
                    library: "/opt/a,b/libocdm.so".into(),
                    key_system: "org.w3.clearkey".into(),
                },
            ),
            (
                "chromium:/opt/google/chrome/WidevineCdm/libwidevinecdm.so",
                CdmChoice::Chromium {
                    library: "/opt/google/chrome/WidevineCdm/libwidevinecdm.so".into(),
                    key_system: "com.widevine.alpha".into(),
                },
            ),
        ] {
            let got: CdmChoice = text.parse().unwrap();
            assert_eq!(got, want, "{text:?}");
            assert_eq!(got.to_string().parse::<CdmChoice>().unwrap(), want);
        }
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        for (text, why) in [
            ("widevine", "unknown CDM name"),
            ("ocdm:", "the library path is empty"),
            ("ocdm:,org.w3.clearkey", "the library path is empty"),
            ("foo:/lib.so", "unknown CDM kind \"foo\""),
            (
                "ocdm:/lib.so,com.example.drm",
                "key system \"com.example.drm\"",
            ),
        ] {
            let e = text.parse::<CdmChoice>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(text), "{text}: {e}");
        }
    }

    #[test]
    fn the_body_follows_the_key_system() {
        let wv = CdmChoice::Stub.system_ids();
        let ck = CdmChoice::ClearKey.system_ids();
        assert_eq!(ck.len(), 2);
        assert_eq!(LicenseBody::Auto.resolve(&wv), BodyFormat::Amazon);
        assert_eq!(LicenseBody::Auto.resolve(&ck), BodyFormat::Raw);
        assert_eq!(LicenseBody::Amazon.resolve(&ck), BodyFormat::Amazon);
        assert_eq!(LicenseBody::Raw.resolve(&wv), BodyFormat::Raw);
        assert_eq!(
            system_ids_of("org.w3.clearkey.x-fail-update"),
            clearkey::SYSTEM_IDS.to_vec()
        );
        assert!(system_ids_of("org.w3.clearkeyx").is_empty());
    }
}
