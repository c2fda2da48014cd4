// SPDX-License-Identifier: MPL-2.0
//! The source's error table: which GStreamer error domain, message and debug text each failure
//! of the music API, Login with Amazon, the CDN or the configuration is posted with.

use crate::api::ApiError;
use crate::config::ConfigError;
use crate::http::HttpError;
use crate::token::TokenError;

/// A failure to get (or refresh) the audio object of `track`.
pub fn api_error_message(e: &ApiError, track: &str) -> gst::ErrorMessage {
    match e {
        ApiError::NotFound { .. } => gst::error_msg!(
            gst::ResourceError::NotFound,
            ("Amazon Music has no track {}", track),
            ["{}", e]
        ),
        ApiError::NotAuthorized { reason, .. } => gst::error_msg!(
            gst::ResourceError::NotAuthorized,
            ("Not allowed to play track {}: {}", track, reason)
        ),
        ApiError::NoQuality { .. } => gst::error_msg!(
            gst::StreamError::CodecNotFound,
            (
                "{}; set quality to one the track has, or install more decoders",
                e
            )
        ),
        ApiError::Token(t) => token_error_message(t),
        ApiError::Network(HttpError::Certificate(why)) => gst::error_msg!(
            gst::ResourceError::OpenRead,
            ("Could not reach the Amazon Music API securely: {}", why),
            ["{}", e]
        ),
        ApiError::Network(_) => gst::error_msg!(
            gst::ResourceError::OpenRead,
            (
                "Could not reach the Amazon Music API to resolve track {}",
                track
            ),
            ["{}", e]
        ),
        ApiError::Other(_) => gst::error_msg!(
            gst::ResourceError::Failed,
            (
                "The Amazon Music API gave no audio object for track {}",
                track
            ),
            ["{}", e]
        ),
    }
}

/// A failure of the access token (reading, refreshing or writing it back).
pub fn token_error_message(e: &TokenError) -> gst::ErrorMessage {
    match e {
        TokenError::Refused { .. } | TokenError::NoRefreshToken | TokenError::NoToken => {
            gst::error_msg!(gst::ResourceError::NotAuthorized, ("{}", e))
        }
        TokenError::Write { .. } => gst::error_msg!(gst::ResourceError::OpenWrite, ("{}", e)),
        TokenError::Read { .. } => gst::error_msg!(gst::ResourceError::OpenRead, ("{}", e)),
        TokenError::Http(_) => gst::error_msg!(
            gst::ResourceError::OpenRead,
            ("Could not reach Login with Amazon to refresh the access token"),
            ["{}", e]
        ),
    }
}

/// A failure to download the manifest of `track` from the CDN.
pub fn manifest_error_message(e: &HttpError, track: &str) -> gst::ErrorMessage {
    match e.status() {
        Some(401 | 403) => gst::error_msg!(
            gst::ResourceError::NotAuthorized,
            ("The CDN refused the manifest of track {}", track),
            ["{}", e]
        ),
        Some(404) => gst::error_msg!(
            gst::ResourceError::NotFound,
            ("The CDN has no manifest for track {}", track),
            ["{}", e]
        ),
        _ => gst::error_msg!(
            gst::ResourceError::OpenRead,
            ("Could not download the manifest of track {}", track),
            ["{}", e]
        ),
    }
}

/// A configuration that cannot start (no endpoint, no token, an unreadable token file).
pub fn config_error_message(e: &ConfigError) -> gst::ErrorMessage {
    let domain = match e {
        ConfigError::NoToken(_) => gst::ResourceError::NotAuthorized,
        ConfigError::NoApiEndpoint => gst::ResourceError::Settings,
        ConfigError::TokenFile(_) => gst::ResourceError::OpenRead,
    };
    gst::error_msg!(domain, ("{}", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    use gst::glib::error::ErrorDomain;

    /// Whether `m` is posted in `domain` (ErrorMessage shows its domain only in its Debug).
    fn is<T: ErrorDomain>(m: &gst::ErrorMessage, domain: T) -> bool {
        format!("{m:?}").contains(&format!(
            "error_domain: {:?}, error_code: {}, ",
            T::domain(),
            domain.code()
        ))
    }

    /// The message text of `m`.
    fn text(m: &gst::ErrorMessage) -> String {
        m.to_string()
    }

    #[test]
    fn api_failures_have_their_domains() {
        let _ = gst::init();
        let nf = ApiError::NotFound {
            what: "track",
            id: "T1".into(),
            message: "gone".into(),
        };
        let m = api_error_message(&nf, "T1");
        assert!(is(&m, gst::ResourceError::NotFound));
        assert!(text(&m).contains("T1"));
        let na = ApiError::NotAuthorized {
            id: "T1".into(),
            reason: "not_available_in_market".into(),
        };
        let m = api_error_message(&na, "T1");
        assert!(is(&m, gst::ResourceError::NotAuthorized));
        assert!(text(&m).contains("not_available_in_market"));
        let nq = ApiError::NoQuality {
            id: "T1".into(),
            asked: "SD".into(),
            message: "m".into(),
        };
        assert!(is(
            &api_error_message(&nq, "T1"),
            gst::StreamError::CodecNotFound
        ));
        let tok = ApiError::Token(TokenError::NoToken);
        assert!(is(
            &api_error_message(&tok, "T1"),
            gst::ResourceError::NotAuthorized
        ));
    }

    #[test]
    fn token_failures_have_their_domains() {
        let _ = gst::init();
        let w = TokenError::Write {
            path: "/x".into(),
            message: "ro".into(),
        };
        assert!(is(&token_error_message(&w), gst::ResourceError::OpenWrite));
        let r = TokenError::Read {
            path: "/x".into(),
            message: "gone".into(),
        };
        assert!(is(&token_error_message(&r), gst::ResourceError::OpenRead));
        let refused = TokenError::Refused {
            code: "invalid_grant".into(),
            message: "m".into(),
        };
        let m = token_error_message(&refused);
        assert!(is(&m, gst::ResourceError::NotAuthorized));
        assert!(text(&m).contains("amzmusic-login"));
    }

    #[test]
    fn config_failures_have_their_domains() {
        let _ = gst::init();
        assert!(is(
            &config_error_message(&ConfigError::NoApiEndpoint),
            gst::ResourceError::Settings
        ));
        assert!(is(
            &config_error_message(&ConfigError::NoToken("t.json".into())),
            gst::ResourceError::NotAuthorized
        ));
        assert!(is(
            &config_error_message(&ConfigError::TokenFile("bad".into())),
            gst::ResourceError::OpenRead
        ));
    }
}
