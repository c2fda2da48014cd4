// SPDX-License-Identifier: MPL-2.0
//! The credentials object's properties: set once at construction, read by other plugins by
//! name.

use std::sync::{LazyLock, OnceLock};

use amzmusic_common::contract::credentials as names;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

#[derive(Default)]
pub struct AmzMusicCredentials {
    manifest_uri: OnceLock<Option<String>>,
    segment_headers: OnceLock<Option<gst::Structure>>,
    manifest_headers: OnceLock<Option<gst::Structure>>,
    key_headers: OnceLock<Option<gst::Structure>>,
    authorization: OnceLock<Option<String>>,
    user_agent: OnceLock<Option<String>>,
    token_serial: OnceLock<u64>,
}

#[glib::object_subclass]
impl ObjectSubclass for AmzMusicCredentials {
    const NAME: &'static str = names::TYPE_NAME;
    type Type = super::AmzMusicCredentials;
    type ParentType = glib::Object;
}

impl ObjectImpl for AmzMusicCredentials {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPS: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let s = |name: &str, nick: &str, blurb: &str| {
                glib::ParamSpecString::builder(name)
                    .nick(nick)
                    .blurb(blurb)
                    .construct_only()
                    .build()
            };
            let h = |name: &str, nick: &str, blurb: &str| {
                glib::ParamSpecBoxed::builder::<gst::Structure>(name)
                    .nick(nick)
                    .blurb(blurb)
                    .construct_only()
                    .build()
            };
            vec![
                s(
                    names::MANIFEST_URI,
                    "Manifest URI",
                    "The signed manifest URL (secret)",
                ),
                h(
                    names::SEGMENT_HEADERS,
                    "Segment headers",
                    "Headers every segment request carries (audioSegmentHeaders, secret)",
                ),
                h(
                    names::MANIFEST_HEADERS,
                    "Manifest headers",
                    "Headers the manifest request carries (manifestHeaders, secret)",
                ),
                h(
                    names::KEY_HEADERS,
                    "Key headers",
                    "Headers every license request carries (key, secret)",
                ),
                s(
                    names::AUTHORIZATION,
                    "Authorization",
                    "The Authorization value, Bearer and the LWA access token (secret)",
                ),
                s(
                    names::USER_AGENT,
                    "User-Agent",
                    "The User-Agent every request carries",
                ),
                glib::ParamSpecUInt64::builder(names::TOKEN_SERIAL)
                    .nick("Token serial")
                    .blurb(
                        "The serial of the access token in authorization (+1 per refresh); \
                         hand it back in an unauthorized query after a 401",
                    )
                    .construct_only()
                    .build(),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        // Construct-only: each cell is set exactly once.
        match pspec.name() {
            names::MANIFEST_URI => {
                let _ = self.manifest_uri.set(value.get().unwrap());
            }
            names::SEGMENT_HEADERS => {
                let _ = self.segment_headers.set(value.get().unwrap());
            }
            names::MANIFEST_HEADERS => {
                let _ = self.manifest_headers.set(value.get().unwrap());
            }
            names::KEY_HEADERS => {
                let _ = self.key_headers.set(value.get().unwrap());
            }
            names::AUTHORIZATION => {
                let _ = self.authorization.set(value.get().unwrap());
            }
            names::USER_AGENT => {
                let _ = self.user_agent.set(value.get().unwrap());
            }
            names::TOKEN_SERIAL => {
                let _ = self.token_serial.set(value.get().unwrap());
            }
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        fn v<T: Clone + ToValue>(c: &OnceLock<T>) -> Option<glib::Value> {
            c.get().map(|x| x.to_value())
        }
        let value = match pspec.name() {
            names::MANIFEST_URI => v(&self.manifest_uri),
            names::SEGMENT_HEADERS => v(&self.segment_headers),
            names::MANIFEST_HEADERS => v(&self.manifest_headers),
            names::KEY_HEADERS => v(&self.key_headers),
            names::AUTHORIZATION => v(&self.authorization),
            names::USER_AGENT => v(&self.user_agent),
            names::TOKEN_SERIAL => v(&self.token_serial),
            _ => unimplemented!(),
        };
        value.unwrap_or_else(|| pspec.default_value().clone())
    }
}
