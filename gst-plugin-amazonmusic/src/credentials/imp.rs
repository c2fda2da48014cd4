// SPDX-License-Identifier: MPL-2.0
//! The credentials object's properties: set once at construction, read by other plugins by
//! name.

use std::sync::{LazyLock, OnceLock};

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
}

#[glib::object_subclass]
impl ObjectSubclass for AmzMusicCredentials {
    const NAME: &'static str = "AmzMusicCredentials";
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
                    "manifest-uri",
                    "Manifest URI",
                    "The signed manifest URL (secret)",
                ),
                h(
                    "segment-headers",
                    "Segment headers",
                    "Headers every segment request carries (audioSegmentHeaders, secret)",
                ),
                h(
                    "manifest-headers",
                    "Manifest headers",
                    "Headers the manifest request carries (manifestHeaders, secret)",
                ),
                h(
                    "key-headers",
                    "Key headers",
                    "Headers every license request carries (key, secret)",
                ),
                s(
                    "authorization",
                    "Authorization",
                    "The Authorization value, Bearer and the LWA access token (secret)",
                ),
                s(
                    "user-agent",
                    "User-Agent",
                    "The User-Agent every request carries",
                ),
            ]
        });
        PROPS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        // Construct-only: each cell is set exactly once.
        match pspec.name() {
            "manifest-uri" => {
                let _ = self.manifest_uri.set(value.get().unwrap());
            }
            "segment-headers" => {
                let _ = self.segment_headers.set(value.get().unwrap());
            }
            "manifest-headers" => {
                let _ = self.manifest_headers.set(value.get().unwrap());
            }
            "key-headers" => {
                let _ = self.key_headers.set(value.get().unwrap());
            }
            "authorization" => {
                let _ = self.authorization.set(value.get().unwrap());
            }
            "user-agent" => {
                let _ = self.user_agent.set(value.get().unwrap());
            }
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        fn v<T: Clone + ToValue>(c: &OnceLock<T>) -> Option<glib::Value> {
            c.get().map(|x| x.to_value())
        }
        let value = match pspec.name() {
            "manifest-uri" => v(&self.manifest_uri),
            "segment-headers" => v(&self.segment_headers),
            "manifest-headers" => v(&self.manifest_headers),
            "key-headers" => v(&self.key_headers),
            "authorization" => v(&self.authorization),
            "user-agent" => v(&self.user_agent),
            _ => unimplemented!(),
        };
        value.unwrap_or_else(|| pspec.default_value().clone())
    }
}
