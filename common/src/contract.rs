// SPDX-License-Identifier: MPL-2.0
//! The element contract of docs/element-contract.md in one place: the names of the audio-object
//! event and query and of their fields, the caps fields, and a read-only view of the credentials.
//!
//! The credentials object itself (`AmzMusicCredentials`) is a GType of the amazonmusic plugin;
//! consumers read its properties by name through [`CredentialsView`] and need no Rust type
//! from that plugin.

use gst::glib;
use gst::prelude::*;

/// Name of the sticky custom event and of the custom refresh query (sections 1 and 2).
pub const AUDIO_OBJECT: &str = "amazonmusic-audio-object";

/// Fields of the audio-object structure (section 1) and of the refresh query (section 2).
pub mod field {
    pub const TRACK_ID: &str = "track-id";
    pub const GENERATION: &str = "generation";
    pub const EXPIRES: &str = "expires";
    pub const QUALITY: &str = "quality";
    pub const CREDENTIALS: &str = "credentials";
    /// Query only: why the asker wants a fresh audio object ([`super::RefreshReason`]).
    pub const REASON: &str = "reason";
    /// Query only (`reason=unauthorized`): the serial of the access token that got 401, as
    /// the credentials' `token-serial` property gave it.
    pub const TOKEN_SERIAL: &str = "token-serial";
}

/// The media type of the MPD the source outputs (section 0).
pub const MPD_MEDIA_TYPE: &str = "application/dash+xml";
/// The caps field only amazonmusicsrc sets, so decodebin3 picks amzdashdemux (section 0).
pub const CAPS_SOURCE_FIELD: &str = "source";
pub const CAPS_SOURCE_VALUE: &str = "amazonmusicsrc";

/// `origin` of the demuxer's protection events (section 3).
pub const PROTECTION_ORIGIN: &str = "dash/mpd";
/// Extra fields of the demuxer's protection events (section 3).
pub const PROTECTION_LICENSE_URL_FIELD: &str = "license-url";
pub const PROTECTION_DEFAULT_KID_FIELD: &str = "default-kid";

/// The caps of the MPD amazonmusicsrc outputs: `application/dash+xml, source=amazonmusicsrc`.
pub fn source_mpd_caps() -> gst::Caps {
    gst::Caps::builder(MPD_MEDIA_TYPE)
        .field(CAPS_SOURCE_FIELD, CAPS_SOURCE_VALUE)
        .build()
}

/// Names of the credentials object's properties (the table in "Secrets never travel in a
/// printable field").
pub mod credentials {
    /// The GType name the amazonmusic plugin registers.
    pub const TYPE_NAME: &str = "AmzMusicCredentials";
    pub const MANIFEST_URI: &str = "manifest-uri";
    pub const SEGMENT_HEADERS: &str = "segment-headers";
    pub const MANIFEST_HEADERS: &str = "manifest-headers";
    pub const KEY_HEADERS: &str = "key-headers";
    pub const AUTHORIZATION: &str = "authorization";
    pub const USER_AGENT: &str = "user-agent";
    /// The serial of the access token in `authorization` (+1 per refresh; not secret). A 401
    /// asker hands it back, so the source refreshes once however many elements saw the 401.
    pub const TOKEN_SERIAL: &str = "token-serial";
    /// Name of the structures the header properties hold.
    pub const HEADERS_STRUCTURE: &str = "headers";
}

/// Why a refresh query asks (the query's `reason` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshReason {
    /// The audio object nears `expires`.
    Expiring,
    /// A request got 403.
    Forbidden,
    /// A request got 401 with the access token of serial `token-serial`: the source refreshes
    /// that token once (or, when it cannot be refreshed, posts an error saying so) and answers
    /// the current audio object with the new token.
    Unauthorized,
    /// Just answer the current one (never an API call).
    Lookup,
}

impl RefreshReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshReason::Expiring => "expiring",
            RefreshReason::Forbidden => "forbidden",
            RefreshReason::Unauthorized => "unauthorized",
            RefreshReason::Lookup => "lookup",
        }
    }

    /// The reason a query structure names; a missing or unknown one is `Lookup`, the reason
    /// that costs nothing.
    pub fn from_query(s: &gst::StructureRef) -> RefreshReason {
        match s.get::<&str>(field::REASON) {
            Ok("expiring") => RefreshReason::Expiring,
            Ok("forbidden") => RefreshReason::Forbidden,
            Ok("unauthorized") => RefreshReason::Unauthorized,
            _ => RefreshReason::Lookup,
        }
    }
}

/// Whether `s` is the contract's audio-object event or query structure.
pub fn is_audio_object(s: &gst::StructureRef) -> bool {
    s.name() == AUDIO_OBJECT
}

/// The refresh query's structure: `reason` and the generation the asker holds (0: none).
pub fn refresh_query_structure(reason: &str, generation: u32) -> gst::Structure {
    gst::Structure::builder(AUDIO_OBJECT)
        .field(field::REASON, reason)
        .field(field::GENERATION, generation)
        .build()
}

/// The refresh query a demuxer or decryptor sends upstream.
pub fn refresh_query(reason: RefreshReason, generation: u32) -> gst::query::Custom<gst::Query> {
    gst::query::Custom::new(refresh_query_structure(reason.as_str(), generation))
}

/// The refresh query after a 401: the generation the asker holds and the serial of the token
/// that was refused (`None` when its credentials named none: the source then refreshes the
/// token it holds).
pub fn unauthorized_query(
    generation: u32,
    token_serial: Option<u64>,
) -> gst::query::Custom<gst::Query> {
    let mut s = refresh_query_structure(RefreshReason::Unauthorized.as_str(), generation);
    if let Some(serial) = token_serial {
        s.set(field::TOKEN_SERIAL, serial);
    }
    gst::query::Custom::new(s)
}

/// The refused token's serial an `unauthorized` query carries.
pub fn refresh_query_token_serial(s: &gst::StructureRef) -> Option<u64> {
    s.get::<u64>(field::TOKEN_SERIAL).ok()
}

/// What the asker of a refresh query holds: its reason as written and its generation (0 when
/// absent).
pub fn refresh_query_request(s: &gst::StructureRef) -> (String, u32) {
    (
        s.get::<String>(field::REASON)
            .unwrap_or_else(|_| RefreshReason::Lookup.as_str().into()),
        s.get::<u32>(field::GENERATION).unwrap_or(0),
    )
}

/// The plain (printable) fields of an audio object, as the source writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioObjectFields<'a> {
    pub track_id: &'a str,
    pub generation: u32,
    /// Unix seconds (UTC).
    pub expires: u64,
    /// The capability asked for (`SD,HD`, …).
    pub quality: &'a str,
}

/// The audio-object structure of section 1: `fields` plus the credentials object (stored with
/// its own GType, `AmzMusicCredentials` from the source).
pub fn audio_object_structure<C>(fields: &AudioObjectFields<'_>, credentials: &C) -> gst::Structure
where
    C: IsA<glib::Object> + Into<glib::Value> + Send,
{
    gst::Structure::builder(AUDIO_OBJECT)
        .field(field::TRACK_ID, fields.track_id)
        .field(field::GENERATION, fields.generation)
        .field(field::EXPIRES, fields.expires)
        .field(field::QUALITY, fields.quality)
        .field(field::CREDENTIALS, credentials.clone())
        .build()
}

/// A read-only view of the credentials object an audio-object structure carries. Values are
/// secret: `Debug` prints none, and callers must not log what the getters return. A property
/// the object does not have (or of another type) reads as absent.
#[derive(Clone)]
pub struct CredentialsView(glib::Object);

impl std::fmt::Debug for CredentialsView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CredentialsView({})", self.0.type_().name())
    }
}

impl CredentialsView {
    /// The credentials in an audio-object structure (event or answered query), `None` when it
    /// carries none (a query nobody answered).
    pub fn from_structure(s: &gst::StructureRef) -> Option<CredentialsView> {
        s.get::<glib::Object>(field::CREDENTIALS)
            .ok()
            .map(CredentialsView)
    }

    pub fn new(obj: glib::Object) -> CredentialsView {
        CredentialsView(obj)
    }

    fn string(&self, name: &str) -> Option<String> {
        self.0.find_property(name)?;
        self.0
            .property_value(name)
            .get::<Option<String>>()
            .ok()
            .flatten()
    }

    /// The string fields of a header structure, in order; non-string fields are skipped.
    fn headers(&self, name: &str) -> Vec<(String, String)> {
        if self.0.find_property(name).is_none() {
            return Vec::new();
        }
        let Ok(Some(s)) = self.0.property_value(name).get::<Option<gst::Structure>>() else {
            return Vec::new();
        };
        s.iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.get::<String>().ok()?)))
            .collect()
    }

    /// The signed manifest URL.
    pub fn manifest_uri(&self) -> Option<String> {
        self.string(credentials::MANIFEST_URI)
    }
    /// `audioSegmentHeaders`: sent with every segment request.
    pub fn segment_headers(&self) -> Vec<(String, String)> {
        self.headers(credentials::SEGMENT_HEADERS)
    }
    /// `manifestHeaders`: sent with the manifest request.
    pub fn manifest_headers(&self) -> Vec<(String, String)> {
        self.headers(credentials::MANIFEST_HEADERS)
    }
    /// The `key` list (and `x-amzn-market`): sent with every license request.
    pub fn key_headers(&self) -> Vec<(String, String)> {
        self.headers(credentials::KEY_HEADERS)
    }
    /// `Bearer Atza|…`, the current access token.
    pub fn authorization(&self) -> Option<String> {
        self.string(credentials::AUTHORIZATION)
    }
    /// The User-Agent every request must carry.
    pub fn user_agent(&self) -> Option<String> {
        self.string(credentials::USER_AGENT)
    }
    /// The serial of the token in [`Self::authorization`], to hand back after a 401.
    pub fn token_serial(&self) -> Option<u64> {
        self.0.find_property(credentials::TOKEN_SERIAL)?;
        self.0
            .property_value(credentials::TOKEN_SERIAL)
            .get::<u64>()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_query_round_trips() {
        gst::init().unwrap();
        let q = refresh_query(RefreshReason::Forbidden, 3);
        let s = q.structure().unwrap();
        assert!(is_audio_object(s));
        assert_eq!(RefreshReason::from_query(s), RefreshReason::Forbidden);
        assert_eq!(refresh_query_request(s), ("forbidden".to_string(), 3));
        let q = unauthorized_query(2, Some(7));
        let s = q.structure().unwrap();
        assert_eq!(RefreshReason::from_query(s), RefreshReason::Unauthorized);
        assert_eq!(refresh_query_request(s), ("unauthorized".to_string(), 2));
        assert_eq!(refresh_query_token_serial(s), Some(7));
        let q = unauthorized_query(2, None);
        assert_eq!(refresh_query_token_serial(q.structure().unwrap()), None);
        let bare = gst::Structure::new_empty(AUDIO_OBJECT);
        assert_eq!(RefreshReason::from_query(&bare), RefreshReason::Lookup);
        assert_eq!(refresh_query_request(&bare), ("lookup".to_string(), 0));
    }

    #[test]
    fn a_structure_without_credentials_has_no_view() {
        gst::init().unwrap();
        let s = refresh_query_structure("lookup", 0);
        assert!(CredentialsView::from_structure(&s).is_none());
    }

    #[test]
    fn an_object_without_the_properties_reads_as_absent() {
        gst::init().unwrap();
        // Any GObject will do: it has none of the credentials' properties.
        let obj = gst::Bin::new();
        let s = audio_object_structure(
            &AudioObjectFields {
                track_id: "T",
                generation: 2,
                expires: 9,
                quality: "HD",
            },
            &obj,
        );
        assert_eq!(s.get::<u32>(field::GENERATION).unwrap(), 2);
        assert_eq!(s.get::<&str>(field::TRACK_ID).unwrap(), "T");
        let view = CredentialsView::from_structure(&s).unwrap();
        assert_eq!(view.authorization(), None);
        assert_eq!(view.token_serial(), None);
        assert_eq!(view.manifest_uri(), None);
        assert!(view.segment_headers().is_empty() && view.key_headers().is_empty());
        assert!(!format!("{view:?}").is_empty());
        assert_eq!(
            source_mpd_caps()
                .structure(0)
                .unwrap()
                .get::<&str>(CAPS_SOURCE_FIELD),
            Ok(CAPS_SOURCE_VALUE)
        );
    }
}
