// SPDX-License-Identifier: MPL-2.0
//! The protection events: one per ContentProtection with a PSSH in the adaptation sets that
//! hold a candidate, sent before the first fragment so that the decryptor asks for the license
//! while the clear lead plays.

use crate::engine::Presentation;
use amzmusic_common::contract;
use amzmusic_common::url_policy::{self, AllowList};
use url::Url;

/// A protection event and what it is for (for the log).
pub struct ProtectionEvent {
    pub system: String,
    pub set: usize,
    pub event: gst::Event,
}

/// The protection events of `p`'s candidates' adaptation sets, in set order, each carrying its
/// PSSH, origin `dash/mpd`, and the set's license URL and default KID when given.
pub fn protection_events(p: &Presentation) -> Vec<ProtectionEvent> {
    let mut sets: Vec<usize> = p.candidates.iter().map(|c| c.set).collect();
    sets.sort();
    sets.dedup();
    let mut events = Vec::new();
    for si in sets {
        let set = &p.mpd.periods[p.period].adaptation_sets[si];
        let kid = set.default_kid().map(hex::encode);
        for cp in &set.content_protections {
            let (Some(system), Some(pssh)) = (cp.system_id(), cp.pssh.as_ref()) else {
                continue;
            };
            let buf = gst::Buffer::from_slice(pssh.clone());
            let mut b =
                gst::event::Protection::builder(&system, &buf).origin(contract::PROTECTION_ORIGIN);
            if let Some(u) = &cp.license_url {
                b = b.other_field(contract::PROTECTION_LICENSE_URL_FIELD, u);
            }
            if let Some(k) = &kid {
                b = b.other_field(contract::PROTECTION_DEFAULT_KID_FIELD, k);
            }
            events.push(ProtectionEvent {
                event: b.build(),
                system,
                set: si,
            });
        }
    }
    events
}

/// Checks the license URLs of `p`'s candidates' sets by the URL policy, as every URL the
/// manifest names (the decryptor POSTs to them with the account's token and key headers): a
/// manifest on a public address may not name a license server on a private one.
pub fn check_license_urls(p: &Presentation, allow: &AllowList) -> Result<(), String> {
    for c in &p.candidates {
        let set = &p.mpd.periods[p.period].adaptation_sets[c.set];
        for cp in &set.content_protections {
            let Some(u) = cp
                .license_url
                .as_deref()
                .and_then(|u| Url::parse(u.trim()).ok())
            else {
                continue;
            };
            url_policy::check_with(allow, &p.manifest_url, &u).map_err(|e| {
                format!("Cannot play this manifest: the LicenseUrl of {}: {e}", c.id)
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{presentation, Wanted};
    use crate::mpd::Mpd;
    use amzmusic_common::codec::Codec;
    use url::Url;

    const MPD: &str = r#"<MPD xmlns:cenc="urn:mpeg:cenc:2013" xmlns:amz="urn:amazon:music:3p:music:2020" type="static" mediaPresentationDuration="PT4S"><Period>
        <AdaptationSet contentType="audio">
          <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cenc" cenc:default_KID="01234567-89ab-cdef-0123-456789abcdef"/>
          <ContentProtection schemeIdUri="urn:uuid:EDEF8BA9-79D6-4ACE-A3C8-27DCD51D21ED" value="Widevine"><cenc:pssh>AAAAIHBzc2gAAAAA7e+LqXnWSs6jyCfc1R0h7QAAAAA=</cenc:pssh><amz:LicenseUrl>http://127.0.0.1:9/license</amz:LicenseUrl></ContentProtection>
          <Representation id="flac" codecs="flac" bandwidth="1700000"><BaseURL>f.mp4</BaseURL>
            <SegmentList timescale="1" duration="2"><SegmentURL mediaRange="0-9"/></SegmentList>
          </Representation></AdaptationSet>
        <AdaptationSet contentType="audio">
          <ContentProtection schemeIdUri="urn:uuid:EDEF8BA9-79D6-4ACE-A3C8-27DCD51D21ED" value="Widevine"><cenc:pssh>AAAAIHBzc2gAAAAA7e+LqXnWSs6jyCfc1R0h7QAAAAA=</cenc:pssh></ContentProtection>
          <Representation id="vorbis" codecs="vorbis" bandwidth="300000"><BaseURL>v.mp4</BaseURL>
            <SegmentList timescale="1" duration="2"><SegmentURL mediaRange="0-9"/></SegmentList>
          </Representation></AdaptationSet>
      </Period></MPD>"#;

    #[test]
    fn a_license_url_more_private_than_the_manifest_is_refused() {
        let build = |manifest: &str| {
            let mpd = Mpd::parse(MPD.as_bytes()).unwrap();
            let wanted = Wanted {
                max_quality: "",
                max_bitrate: 0,
                representation: "",
            };
            presentation::build(mpd, Url::parse(manifest).unwrap(), wanted, |f| {
                f == Codec::Flac
            })
            .unwrap()
            .presentation
        };
        // A public manifest naming a license server on loopback (the account's token and key
        // headers would go there).
        let public = build("http://cdn.example/m.mpd");
        let e = check_license_urls(&public, &AllowList::default()).unwrap_err();
        assert!(
            e.contains("LicenseUrl")
                && e.contains(
                    "public address may not send the demuxer to http://127.0.0.1:9/license"
                ),
            "{e}"
        );
        assert!(check_license_urls(&public, &AllowList::parse("127.0.0.1").unwrap()).is_ok());
        // The emulator's manifest, on loopback itself, may.
        let local = build("http://127.0.0.1:9/m.mpd");
        assert!(check_license_urls(&local, &AllowList::default()).is_ok());
    }

    #[test]
    fn one_event_per_pssh_of_a_playable_set() {
        gst::init().unwrap();
        let mpd = Mpd::parse(MPD.as_bytes()).unwrap();
        let url = Url::parse("http://cdn.example/m.mpd").unwrap();
        let wanted = Wanted {
            max_quality: "",
            max_bitrate: 0,
            representation: "",
        };
        let built = presentation::build(mpd, url, wanted, |f| f == Codec::Flac).unwrap();
        let events = protection_events(&built.presentation);
        // The second set has no playable candidate: no event for it.
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.set, 0);
        assert_eq!(e.system, "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed");
        let gst::EventView::Protection(p) = e.event.view() else {
            panic!("not a protection event");
        };
        let (system, data, origin) = p.get();
        assert_eq!(system, e.system);
        assert_eq!(origin, Some("dash/mpd"));
        assert_eq!(&data.map_readable().unwrap()[4..8], b"pssh");
        let s = e.event.structure().unwrap();
        assert_eq!(
            s.get::<&str>("license-url"),
            Ok("http://127.0.0.1:9/license")
        );
        assert_eq!(
            s.get::<&str>("default-kid"),
            Ok("0123456789abcdef0123456789abcdef")
        );
    }
}
