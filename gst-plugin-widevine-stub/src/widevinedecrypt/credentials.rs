// SPDX-License-Identifier: MPL-2.0
//! Credentials from upstream (docs/element-contract.md section 2): the contract's refresh query
//! (`amzmusic_common::contract`) and the credentials it answers with, read into license request
//! headers.

use gst::prelude::*;

use amzmusic_common::contract::{field, CredentialsView};

use crate::fetch::{bearer, RequestHeaders};

/// Asks upstream of `pad` for a credentials object with a refresh `query` of the contract:
/// `lookup` (the current one; upstream never calls its API for it), `forbidden` (a refreshed
/// one, newer than the generation held) or `unauthorized` (the same audio object with a
/// refreshed token). Returns it with its audio object's generation. May block: upstream may
/// refresh its token or its audio object first.
pub fn query(
    pad: &gst::Pad,
    mut query: gst::query::Custom<gst::Query>,
) -> Option<(CredentialsView, u32)> {
    if !pad.peer_query(&mut query) {
        return None;
    }
    let answer = query.structure()?;
    let creds = CredentialsView::from_structure(answer)?;
    Some((creds, answer.get::<u32>(field::GENERATION).unwrap_or(0)))
}

/// Request headers from a credentials object (`authorization`, `user-agent`, `key-headers`),
/// or the defaults without one.
pub fn request_headers(creds: Option<&CredentialsView>) -> RequestHeaders {
    let mut headers = RequestHeaders {
        user_agent: concat!("gst-widevine-stub/", env!("CARGO_PKG_VERSION")).into(),
        ..Default::default()
    };
    let Some(creds) = creds else { return headers };
    if let Some(auth) = creds.authorization() {
        headers.authorization = Some(bearer(&auth));
    }
    if let Some(ua) = creds.user_agent() {
        headers.user_agent = ua;
    }
    headers.extra.extend(creds.key_headers());
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_credentials_a_request_carries_only_our_user_agent() {
        let h = request_headers(None);
        assert!(h.authorization.is_none() && h.extra.is_empty());
        assert!(h.user_agent.starts_with("gst-widevine-stub/"));
        assert_eq!(h.license_expiration_secs, None);
    }
}
