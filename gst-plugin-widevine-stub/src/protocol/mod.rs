//! The Widevine-stub license protocol and PSSH parsing, in plain Rust with no GStreamer, so the
//! emulator's license server can link this crate and speak exactly what the stub CDM speaks.

pub mod license;
pub mod pssh;

pub use license::{
    decode_license_request_body, decode_license_response_body, encode_license_request_body,
    encode_license_response_body, issue_license, parse_challenge, serve_license_request,
    status_meaning, AcceptedLicense, Challenge, ClientAction, ClientInfo, ClientSession,
    ContentKey, LicenseError, LicensePolicy, ProtocolError, RequestKind,
};
pub use pssh::{
    parse_pssh_boxes, widevine_init_data, KeyId, PsshBox, PsshError, WidevinePsshData,
    WIDEVINE_SYSTEM_ID, WIDEVINE_SYSTEM_ID_STR,
};
