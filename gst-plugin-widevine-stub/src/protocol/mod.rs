// SPDX-License-Identifier: MPL-2.0
//! The Widevine-stub license protocol and PSSH parsing. Both live in `amzmusic-common`, which
//! the emulator's license server links too, so both sides speak exactly the same format; these
//! are their old paths.

pub use amzmusic_common::{license, pssh};

pub use license::{
    decode_license_request_body, decode_license_response_body, emulator_server_public_key,
    encode_license_request_body, encode_license_response_body, issue_license, issue_license_as,
    parse_challenge, parse_server_public_key, serve_license_request, status_meaning,
    AcceptedLicense, Challenge, ClientAction, ClientInfo, ClientSession, ContentKey, LicenseError,
    LicensePolicy, ProtocolError, RequestKind, ServerKey,
};
pub use pssh::{
    parse_pssh_boxes, widevine_init_data, KeyId, PsshBox, PsshError, WidevinePsshData,
    WIDEVINE_SYSTEM_ID, WIDEVINE_SYSTEM_ID_STR,
};
