use super::*;
use crate::segments::{from_sidx, plan, SegmentPlan};
use url::Url;

/// Shaped like the service's manifests (see emulator/src/content/mpd.rs).
const AMAZON_LIST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" xmlns:cenc="urn:mpeg:cenc:2013" xmlns:amz="urn:amazon:music:3p:music:2020" xmlns:amz-music="urn:amazon:music:drm:2019" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" type="static" minBufferTime="PT2S" mediaPresentationDuration="PT5.000S">
  <Period id="0" start="PT0S">
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4" lang="und" segmentAlignment="true" selectionPriority="3">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cenc" cenc:default_KID="01234567-89ab-cdef-0123-456789abcdef"/>
      <ContentProtection schemeIdUri="urn:uuid:EDEF8BA9-79D6-4ACE-A3C8-27DCD51D21ED" value="Widevine"><cenc:pssh>AAAAIHBzc2gAAAAA7e+LqXnWSs6jyCfc1R0h7QAAAAA=</cenc:pssh><amz:LicenseUrl>http://127.0.0.1:9/license?a=1&amp;b=2</amz:LicenseUrl></ContentProtection>
      <SupplementalProperty schemeIdUri="urn:mpeg:dash:adaptation-set-switching:2016" value="2"/>
      <SupplementalProperty schemeIdUri="urn:amazon:music:drm:2019" value="trackType" amz-music:trackType="HD"/>
      <SupplementalProperty schemeIdUri="urn:mpeg:mpegB:cicp:ProgramLoudness" value="-14.2 LUFS"/>
      <SupplementalProperty schemeIdUri="urn:mpeg:mpegB:cicp:AnchorLoudness" value="-16.5"/>
      <Representation id="flac-48k24" codecs="flac" bandwidth="1700000" audioSamplingRate="48000" qualityRanking="1" mimeType="audio/mp4" amz-music:bitDepth="24">
        <AudioChannelConfiguration schemeIdUri="urn:mpeg:mpegB:cicp:ChannelConfiguration" value="2"/>
        <BaseURL>flac-48k24.mp4?ao=1&amp;sig=abc</BaseURL>
        <SegmentList timescale="48000" duration="96000">
          <Initialization range="0-699"/>
          <SegmentURL mediaRange="700-1699"/>
          <SegmentURL mediaRange="1700-2499"/>
          <SegmentURL mediaRange="2500-2999"/>
        </SegmentList>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="2" contentType="audio" mimeType="audio/mp4" selectionPriority="2">
      <Unknown><Nested/></Unknown>
      <Representation id="opus-320k" codecs="opus" bandwidth="330000" audioSamplingRate="48000" qualityRanking="2">
        <AudioChannelConfiguration schemeIdUri="urn:mpeg:mpegB:cicp:ChannelConfiguration" value="2"/>
        <BaseURL>opus-320k.mp4</BaseURL>
        <SegmentBase timescale="48000" indexRange="600-671" indexRangeExact="true"><Initialization range="0-599"/></SegmentBase>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;

fn manifest_url() -> Url {
    Url::parse("https://cdn.example/t/B0/manifest.mpd?sig=x").unwrap()
}

#[test]
fn amazon_shape_parses_fully() {
    let m = Mpd::parse(AMAZON_LIST.as_bytes()).unwrap();
    assert!(m.is_static);
    assert_eq!(m.duration, Some(Duration::from_secs(5)));
    assert_eq!(m.min_buffer_time, Some(Duration::from_secs(2)));
    let sets: Vec<_> = m.audio_sets().collect();
    assert_eq!(sets.len(), 2);
    let hd = sets[0].1;
    assert_eq!(hd.id, Some(1));
    assert_eq!(hd.selection_priority, 3);
    assert_eq!(hd.switchable_to(), vec![2]);
    assert_eq!(hd.track_type(), Some("HD"));
    assert_eq!(hd.loudness("ProgramLoudness"), Some(-14.2));
    assert_eq!(hd.loudness("AnchorLoudness"), Some(-16.5));
    assert_eq!(hd.default_kid().unwrap()[0], 0x01);
    let wv = &hd.content_protections[1];
    assert_eq!(wv.system_id().as_deref(), Some(WIDEVINE_SYSTEM_ID));
    assert_eq!(&wv.pssh.as_ref().unwrap()[4..8], b"pssh");
    assert_eq!(
        wv.license_url.as_deref(),
        Some("http://127.0.0.1:9/license?a=1&b=2")
    );
    let r = &hd.representations[0];
    assert_eq!(r.codecs, "flac");
    assert_eq!(r.bandwidth, 1_700_000);
    assert_eq!(r.audio_sampling_rate, Some(48000));
    assert_eq!(r.bit_depth, Some(24));
    assert_eq!(r.channels, Some(2));
    assert_eq!(r.quality_ranking, Some(1));
    // mimeType inherited from the set.
    assert_eq!(sets[1].1.representations[0].mime_type, "audio/mp4");
}

#[test]
fn segment_list_with_media_ranges_gives_exact_sizes() {
    let m = Mpd::parse(AMAZON_LIST.as_bytes()).unwrap();
    let r = &m.periods[0].adaptation_sets[0].representations[0];
    let SegmentPlan::Ready { init, segments } =
        plan(&manifest_url(), r, Duration::ZERO, m.periods[0].duration).unwrap()
    else {
        panic!("list needs no index");
    };
    let init = init.unwrap();
    assert_eq!(
        init.url.as_str(),
        "https://cdn.example/t/B0/flac-48k24.mp4?ao=1&sig=abc"
    );
    assert_eq!(init.range, Some(ByteRange { start: 0, end: 699 }));
    assert_eq!(segments.len(), 3);
    assert_eq!(
        segments[1].range,
        Some(ByteRange {
            start: 1700,
            end: 2499
        })
    );
    assert_eq!(segments[1].size, Some(800));
    assert_eq!(segments[1].start, Duration::from_secs(2));
    // Declared 2 s like the others, the last segment ends with the 5 s presentation.
    assert_eq!(segments[2].duration, Duration::from_secs(1));
}

#[test]
fn segment_base_plans_the_index_then_uses_the_sidx() {
    let m = Mpd::parse(AMAZON_LIST.as_bytes()).unwrap();
    let r = &m.periods[0].adaptation_sets[1].representations[0];
    let SegmentPlan::NeedsIndex { init, url, index } =
        plan(&manifest_url(), r, Duration::ZERO, None).unwrap()
    else {
        panic!("base needs its index");
    };
    assert_eq!(
        index,
        ByteRange {
            start: 600,
            end: 671
        }
    );
    assert_eq!(init.unwrap().range.unwrap().end, 599);
    assert_eq!(url.as_str(), "https://cdn.example/t/B0/opus-320k.mp4");
    // 72-byte sidx with 3 references.
    let mut b = Vec::new();
    b.extend(68u32.to_be_bytes());
    b.extend(b"sidx");
    b.extend([0u8; 4]);
    b.extend(1u32.to_be_bytes());
    b.extend(48000u32.to_be_bytes());
    b.extend(0u32.to_be_bytes());
    b.extend(0u32.to_be_bytes());
    b.extend([0, 0, 0, 3]);
    for (s, d) in [(100u32, 96000u32), (200, 96000), (50, 48000)] {
        b.extend(s.to_be_bytes());
        b.extend(d.to_be_bytes());
        b.extend(0x9000_0000u32.to_be_bytes());
    }
    let sidx = sidx::parse(&b, 600).unwrap();
    let segs = from_sidx(&url, &sidx, 0, 48000, Duration::ZERO);
    assert_eq!(
        segs[0].range,
        Some(ByteRange {
            start: 668,
            end: 767
        })
    );
    assert_eq!(segs[2].start, Duration::from_secs(4));
    assert_eq!(segs[2].size, Some(50));
}

#[test]
fn template_with_timeline_negative_repeat_and_inheritance() {
    let doc = r#"<MPD type="static" mediaPresentationDuration="PT9S">
      <BaseURL>http://other.example/root/</BaseURL>
      <Period>
        <AdaptationSet mimeType="audio/mp4" codecs="flac">
          <BaseURL>a/</BaseURL>
          <SegmentTemplate timescale="1000" media="$RepresentationID$/s-$Time$-$Number%03d$.m4s" initialization="$RepresentationID$/init.mp4" startNumber="5">
            <SegmentTimeline><S t="0" d="2000" r="-1"/></SegmentTimeline>
          </SegmentTemplate>
          <Representation id="r1" bandwidth="1000"/>
          <Representation id="r2" bandwidth="2000">
            <SegmentTemplate presentationTimeOffset="0"/>
          </Representation>
        </AdaptationSet>
      </Period>
    </MPD>"#;
    let m = Mpd::parse(doc.as_bytes()).unwrap();
    let p = &m.periods[0];
    assert_eq!(p.duration, Some(Duration::from_secs(9)));
    for r in &p.adaptation_sets[0].representations {
        let SegmentPlan::Ready { init, segments } =
            plan(&manifest_url(), r, p.start, p.duration).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            init.unwrap().url.as_str(),
            format!("http://other.example/root/a/{}/init.mp4", r.id)
        );
        // 9 s / 2 s, rounded up.
        assert_eq!(segments.len(), 5);
        assert_eq!(
            segments[4].url.as_str(),
            format!("http://other.example/root/a/{}/s-8000-009.m4s", r.id)
        );
        assert_eq!(segments[4].start, Duration::from_secs(8));
    }
}

#[test]
fn template_without_timeline_counts_from_duration() {
    let doc = r#"<MPD type="static" mediaPresentationDuration="PT1M0.5S"><Period>
      <AdaptationSet contentType="audio"><Representation id="x" bandwidth="1" codecs="opus">
      <SegmentTemplate timescale="48000" duration="480000" media="x_$Number$.m4s" initialization="x_init.mp4"/>
      </Representation></AdaptationSet></Period></MPD>"#;
    let m = Mpd::parse(doc.as_bytes()).unwrap();
    let p = &m.periods[0];
    let SegmentPlan::Ready { segments, .. } = plan(
        &manifest_url(),
        &p.adaptation_sets[0].representations[0],
        p.start,
        p.duration,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(segments.len(), 7);
    assert_eq!(segments[0].url.as_str(), "https://cdn.example/t/B0/x_1.m4s");
    assert_eq!(segments[6].duration, Duration::from_millis(500));
}

#[test]
fn timeline_with_explicit_times_and_repeats() {
    let doc = r#"<MPD type="static" mediaPresentationDuration="PT10S"><Period>
      <AdaptationSet contentType="audio"><Representation id="x" bandwidth="1">
      <SegmentTemplate timescale="10" media="$Time$" presentationTimeOffset="100">
        <SegmentTimeline><S t="100" d="20" r="1"/><S d="20"/><S t="160" d="10" r="-1"/><S t="190" d="10"/></SegmentTimeline>
      </SegmentTemplate></Representation></AdaptationSet></Period></MPD>"#;
    let m = Mpd::parse(doc.as_bytes()).unwrap();
    let p = &m.periods[0];
    let SegmentPlan::Ready { segments, .. } = plan(
        &manifest_url(),
        &p.adaptation_sets[0].representations[0],
        p.start,
        p.duration,
    )
    .unwrap() else {
        panic!()
    };
    let names: Vec<&str> = segments
        .iter()
        .map(|s| s.url.path_segments().unwrap().next_back().unwrap())
        .collect();
    assert_eq!(names, ["100", "120", "140", "160", "170", "180", "190"]);
    assert_eq!(segments[0].start, Duration::ZERO);
    assert_eq!(segments[3].start, Duration::from_secs(6));
    assert_eq!(segments[6].duration, Duration::from_secs(1));
}

#[test]
fn iso_durations() {
    assert_eq!(parse_iso_duration("PT0S"), Some(Duration::ZERO));
    assert_eq!(
        parse_iso_duration("PT1H2M3.5S"),
        Some(Duration::from_secs_f64(3723.5))
    );
    assert_eq!(
        parse_iso_duration("P1DT1S"),
        Some(Duration::from_secs(86401))
    );
    assert_eq!(parse_iso_duration("PT"), None);
    assert_eq!(parse_iso_duration("1S"), None);
    assert_eq!(parse_iso_duration("PT5"), None);
    assert_eq!(parse_iso_duration("PTxS"), None);
}

#[test]
fn bad_manifests_say_why() {
    let cases: &[(&str, &str)] = &[
        ("<html></html>", "not an MPD"),
        ("<MPD type=\"dynamic\"><Period/></MPD>", "dynamic"),
        ("<MPD></MPD>", "no Period"),
        ("<MPD><Period><AdaptationSet contentType=\"video\"><Representation id=\"v\" bandwidth=\"1\"/></AdaptationSet></Period></MPD>", "no audio"),
        ("<MPD><Period><AdaptationSet contentType=\"audio\"><Representation bandwidth=\"1\"/></AdaptationSet></Period></MPD>", "without id"),
        ("<MPD><Period><AdaptationSet contentType=\"audio\"><Representation id=\"a\"/></AdaptationSet></Period></MPD>", "no bandwidth"),
        ("<MPD mediaPresentationDuration=\"5 minutes\"><Period/></MPD>", "bad duration"),
        ("<MPD><Period><AdaptationSet contentType=\"audio\"><Representation id=\"a\" bandwidth=\"1\"><SegmentList><SegmentURL mediaRange=\"9-1\"/></SegmentList></Representation></AdaptationSet></Period></MPD>", "bad byte range"),
        ("<MPD><Period><AdaptationSet contentType=\"audio\"><ContentProtection cenc:default_KID=\"zz\"/><Representation id=\"a\" bandwidth=\"1\"/></AdaptationSet></Period></MPD>", "default_KID"),
        ("<MPD><Period><AdaptationSet contentType=\"audio\"><Representation id=\"a\" bandwidth=\"1\"><SegmentTemplate timescale=\"0\"/></Representation></AdaptationSet></Period></MPD>", "timescale 0"),
        ("<MPD><Period>", "not valid XML"),
    ];
    for (doc, want) in cases {
        let err = Mpd::parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(want), "{doc}: {err:?} should say {want:?}");
    }
    let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
    assert_eq!(Mpd::parse(&huge), Err(MpdError::TooLarge));
}

#[test]
fn unplayable_addressing_is_a_clear_plan_error() {
    let doc = r#"<MPD type="static"><Period><AdaptationSet contentType="audio">
      <Representation id="a" bandwidth="1"><SegmentTemplate media="$Number$"/></Representation>
      <Representation id="b" bandwidth="1"><SegmentBase/></Representation>
      <Representation id="c" bandwidth="1"><SegmentTemplate media="$Number$"><SegmentTimeline><S d="5" r="-1"/></SegmentTimeline></SegmentTemplate></Representation>
    </AdaptationSet></Period></MPD>"#;
    let m = Mpd::parse(doc.as_bytes()).unwrap();
    let reps = &m.periods[0].adaptation_sets[0].representations;
    let errs: Vec<String> = reps
        .iter()
        .map(|r| {
            plan(&manifest_url(), r, Duration::ZERO, None)
                .unwrap_err()
                .to_string()
        })
        .collect();
    assert!(errs[0].contains("duration"), "{}", errs[0]);
    assert!(errs[1].contains("indexRange"), "{}", errs[1]);
    assert!(errs[2].contains("negative repeat"), "{}", errs[2]);
}

#[test]
fn unknown_essential_property_drops_the_set_only() {
    let doc = r#"<MPD type="static"><Period>
      <AdaptationSet contentType="audio"><EssentialProperty schemeIdUri="urn:future:thing"/><Representation id="a" bandwidth="1"/></AdaptationSet>
      <AdaptationSet contentType="audio"><Representation id="b" bandwidth="1"/></AdaptationSet>
    </Period></MPD>"#;
    let m = Mpd::parse(doc.as_bytes()).unwrap();
    let ids: Vec<&str> = m
        .audio_sets()
        .flat_map(|(_, a)| a.representations.iter().map(|r| r.id.as_str()))
        .collect();
    assert_eq!(ids, ["b"]);
}

/// A one-Representation manifest lasting `duration` whose Representation holds `addressing`.
fn hostile(duration: &str, addressing: &str) -> String {
    format!(
        r#"<MPD type="static" mediaPresentationDuration="{duration}"><Period>
      <AdaptationSet contentType="audio"><Representation id="r" bandwidth="1">{addressing}
      </Representation></AdaptationSet></Period></MPD>"#
    )
}

fn plan_of(doc: &str) -> Result<Vec<crate::segments::SegmentRef>, String> {
    let m = Mpd::parse(doc.as_bytes()).map_err(|e| e.to_string())?;
    let p = &m.periods[0];
    let r = &p.adaptation_sets[0].representations[0];
    match plan(&manifest_url(), r, p.start, p.duration).map_err(|e| e.to_string())? {
        SegmentPlan::Ready { segments, .. } => Ok(segments),
        SegmentPlan::NeedsIndex { .. } => Err("needs index".into()),
    }
}

fn urls(n: usize) -> String {
    "<SegmentURL mediaRange=\"0-9\"/>".repeat(n)
}

#[test]
fn impossible_times_are_errors_naming_the_field_not_panics() {
    let cases = [
        (
            hostile(
                "PT75S",
                &format!(
                    r#"<SegmentList duration="9223372036854775808">{}</SegmentList>"#,
                    urls(3)
                ),
            ),
            "segment 3 starts past the end of time",
        ),
        (
            hostile(
                "PT75S",
                r#"<SegmentTemplate media="$Time$"><SegmentTimeline><S t="18446744073709551610" d="5" r="3"/></SegmentTimeline></SegmentTemplate>"#,
            ),
            "SegmentTimeline runs past the end of time",
        ),
        (
            hostile(
                "PT75S",
                r#"<SegmentTemplate media="$Number$" duration="10" presentationTimeOffset="18446744073709551615"/>"#,
            ),
            "past the end of time",
        ),
        (
            hostile(
                "PT75S",
                r#"<SegmentTemplate media="$Number$" duration="10" startNumber="18446744073709551615"/>"#,
            ),
            "startNumber",
        ),
        (
            hostile(
                "PT75S",
                r#"<SegmentList timescale="0" duration="10"><SegmentURL/></SegmentList>"#,
            ),
            "timescale 0",
        ),
        (
            hostile(
                "PT75S",
                r#"<SegmentTemplate media="$Time$"><SegmentTimeline><S d="0" r="-1"/></SegmentTimeline></SegmentTemplate>"#,
            ),
            "d=0",
        ),
        (
            hostile("PT100000000000000000000000S", "<BaseURL>a.mp4</BaseURL>"),
            "mediaPresentationDuration",
        ),
        (
            hostile("PT1000000H", "<BaseURL>a.mp4</BaseURL>"),
            "longer than the 168 h",
        ),
        (
            hostile(
                "PT75S",
                &format!(
                    r#"<SegmentList timescale="1" duration="1099511627776">{}</SegmentList>"#,
                    urls(3)
                ),
            ),
            "past the 168 h",
        ),
    ];
    let cases = cases.into_iter().chain([(
        hostile(
            "PT75S",
            r#"<SegmentList duration="1"><SegmentURL mediaRange="0-9"/><SegmentURL mediaRange="10-18446744073709551615"/></SegmentList>"#,
        ),
        "ends past the end of any file",
    )]);
    for (doc, want) in cases {
        let e = plan_of(&doc).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
    // Periods whose starts add up past any presentation.
    let doc = r#"<MPD type="static"><Period duration="P6D"/><Period duration="P6D"><AdaptationSet contentType="audio"><Representation id="r" bandwidth="1"/></AdaptationSet></Period></MPD>"#;
    let e = Mpd::parse(doc.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("Period 2 ends"), "{e}");
}

#[test]
fn segment_lists_are_clipped_to_the_period() {
    // 14 segments of 6 s declared in a 75 s presentation: 13 play, the 13th ends at 75 s.
    let doc = hostile(
        "PT75S",
        &format!(
            r#"<SegmentList timescale="1000" duration="6000">{}</SegmentList>"#,
            urls(14)
        ),
    );
    let segs = plan_of(&doc).unwrap();
    assert_eq!(segs.len(), 13);
    let last = segs.last().unwrap();
    assert_eq!(last.start + last.duration, Duration::from_secs(75));
    // 190,000 SegmentURLs in a 75 s presentation play 75 s, not 320 hours.
    let doc = hostile(
        "PT75S",
        &format!(
            r#"<SegmentList timescale="1000" duration="6000">{}</SegmentList>"#,
            urls(190_000)
        ),
    );
    assert_eq!(plan_of(&doc).unwrap().len(), 13);
    // A period that says it outlasts the presentation is clipped to it too.
    let doc = r#"<MPD type="static" mediaPresentationDuration="PT12S"><Period duration="PT60S"><AdaptationSet contentType="audio"><Representation id="r" bandwidth="1"><SegmentTemplate media="$Number$" timescale="1" duration="10"/></Representation></AdaptationSet></Period></MPD>"#;
    let segs = plan_of(doc).unwrap();
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[1].duration, Duration::from_secs(2));
}

#[test]
fn a_segment_longer_than_the_whole_period_is_refused() {
    // 3 segments of 30 s each declared 10^5 s long: clipping would silently play 30 of 75 s.
    let doc = hostile(
        "PT75S",
        &format!(
            r#"<SegmentList timescale="1" duration="100000">{}</SegmentList>"#,
            urls(3)
        ),
    );
    let e = plan_of(&doc).unwrap_err();
    assert!(e.contains("longer than the whole Period"), "{e}");
}

#[test]
fn a_remote_manifest_never_names_a_local_file_or_a_private_address() {
    // manifest_url() is https://cdn.example/…: a public address.
    for (addressing, want) in [
        (
            "<BaseURL>file:///etc/passwd</BaseURL>",
            "file:///etc/passwd",
        ),
        (
            r#"<SegmentList duration="1"><SegmentURL media="http://127.0.0.1:8080/admin"/></SegmentList>"#,
            "on a loopback address",
        ),
        (
            r#"<SegmentTemplate media="http://169.254.169.254/$Number$" duration="10"/>"#,
            "on a private address",
        ),
    ] {
        let e = plan_of(&hostile("PT75S", addressing)).unwrap_err();
        assert!(e.contains(want), "{want:?} not in {e:?}");
    }
}

#[test]
fn allowed_hosts_open_private_addresses_but_never_another_scheme() {
    use crate::url_policy::AllowList;
    let doc = hostile(
        "PT20S",
        r#"<SegmentTemplate media="http://10.1.2.3/$Number$" duration="10"/>"#,
    );
    let m = Mpd::parse(doc.as_bytes()).unwrap();
    let p = &m.periods[0];
    let r = &p.adaptation_sets[0].representations[0];
    let with = |allow: &str| {
        crate::segments::plan_with(
            &AllowList::parse(allow).unwrap(),
            &manifest_url(),
            r,
            p.start,
            p.duration,
        )
        .map_err(|e| e.to_string())
    };
    assert!(with("").unwrap_err().contains("on a private address"));
    assert!(with("10.0.0.0/8").is_ok());
    assert!(with("10.2.0.0/16").is_err());
    let doc = hostile("PT20S", "<BaseURL>file:///etc/passwd</BaseURL>");
    let m = Mpd::parse(doc.as_bytes()).unwrap();
    let r = &m.periods[0].adaptation_sets[0].representations[0];
    let e = crate::segments::plan_with(
        &AllowList::parse("0.0.0.0/0, ::/0").unwrap(),
        &manifest_url(),
        r,
        p.start,
        p.duration,
    )
    .unwrap_err();
    assert!(e.to_string().contains("file:///etc/passwd"), "{e}");
}

/// ffmpeg's SegmentList for Opus: segments cut in media time, so the priming pushes the last
/// few milliseconds into a seventh segment listed at the end of a 24 s period. A listed segment
/// that may hold presented media (its nominal start within half a duration of the end) is kept;
/// one a whole duration past the end is not.
#[test]
fn a_listed_segment_at_the_period_end_is_kept_one_past_it_is_dropped() {
    let list = |n| {
        plan_of(&hostile(
            "PT24S",
            &format!(
                r#"<SegmentList timescale="1000" duration="4000">{}</SegmentList>"#,
                urls(n)
            ),
        ))
        .unwrap()
    };
    let seven = list(7);
    assert_eq!(seven.len(), 7);
    assert_eq!(seven[6].start, Duration::from_secs(24));
    assert_eq!(list(8).len(), 7);
    // A timeline's times are exact: nothing at the end is kept.
    let timeline = plan_of(&hostile(
        "PT24S",
        &format!(
            r#"<SegmentList timescale="1000"><SegmentTimeline><S d="4000" r="6"/></SegmentTimeline>{}</SegmentList>"#,
            urls(7)
        ),
    ))
    .unwrap();
    assert_eq!(timeline.len(), 6);
}

/// The shape of the service's own manifests (Amazon's vinyl player's public test asset
/// `dash_segmentListMediaRange.ts`; our reduced copy, URLs and ranges ours): three
/// AdaptationSets of selectionPriority 2000/1000/500 typed by `amz-music:trackType` values HD, SD
/// and LD, bit depth as a child descriptor, CICP loudness with a unit, one default_KID and
/// Widevine PSSH per set, SegmentList@duration of 10 s whose first mediaRange starts after the
/// file's sidx, and a BaseURL carrying the service's query.
const AMAZON_REAL: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<MPD minBufferTime="PT2S" type="static" mediaPresentationDuration="PT25.0S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" xmlns="urn:mpeg:dash:schema:mpd:2011" xmlns:amz-music="urn:amazon:music:drm:2019" xmlns:cenc="urn:mpeg:cenc:2013">
  <Period id="0">
    <AdaptationSet id="1" contentType="audio" selectionPriority="2000">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" cenc:default_KID="11111111-2222-3333-4444-555555555555" value="cenc"/>
      <ContentProtection schemeIdUri="urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"><cenc:pssh>AAAAIHBzc2gAAAAA7e+LqXnWSs6jyCfc1R0h7QAAAAA=</cenc:pssh></ContentProtection>
      <SupplementalProperty schemeIdUri="urn:mpeg:mpegB:cicp:ProgramLoudness" value="-13.5 LUFS"/>
      <SupplementalProperty schemeIdUri="amz-music:trackType" value="HD"/>
      <SupplementalProperty schemeIdUri="urn:mpeg:dash:adaptation-set-switching:2016" value="2"/>
      <SupplementalProperty schemeIdUri="urn:mpeg:mpegB:cicp:AnchorLoudness" value="-11.7 LUFS"/>
      <Representation id="1" qualityRanking="2" codecs="flac" audioSamplingRate="44100" bandwidth="1021104" mimeType="audio/mp4">
        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>
        <SupplementalProperty schemeIdUri="amz-music:bitDepth" value="16"/>
        <BaseURL>https://cdn.example/t/a.mp4?r=x&amp;rs=NA&amp;mt=US&amp;ql=HD_44&amp;dtype=D</BaseURL>
        <SegmentList timescale="44100" duration="441000">
          <Initialization range="0-1067"/>
          <SegmentURL mediaRange="1580-1124387"/>
          <SegmentURL mediaRange="1124388-2301681"/>
          <SegmentURL mediaRange="2301682-2901681"/>
        </SegmentList>
      </Representation>
      <Representation id="4" qualityRanking="1" codecs="flac" audioSamplingRate="192000" bandwidth="5666448" mimeType="audio/mp4">
        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>
        <SupplementalProperty schemeIdUri="amz-music:bitDepth" value="24"/>
        <BaseURL>https://cdn.example/t/d.mp4?r=x&amp;rs=NA&amp;mt=US&amp;ql=UHD_192&amp;dtype=D</BaseURL>
        <SegmentList timescale="192000" duration="1920000">
          <Initialization range="0-1067"/>
          <SegmentURL mediaRange="1580-9000000"/>
        </SegmentList>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="2" contentType="audio" selectionPriority="1000">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" cenc:default_KID="66666666-7777-8888-9999-aaaaaaaaaaaa" value="cenc"/>
      <SupplementalProperty schemeIdUri="urn:mpeg:mpegB:cicp:ProgramLoudness" value="-13.5 LUFS"/>
      <SupplementalProperty schemeIdUri="amz-music:trackType" value="SD"/>
      <Representation id="7" qualityRanking="1" codecs="opus" audioSamplingRate="48000" bandwidth="324955" mimeType="audio/mp4">
        <BaseURL>https://cdn.example/t/g.mp4?ql=SD_HIGH</BaseURL>
        <SegmentList timescale="48000" duration="480000"><Initialization range="0-1031"/><SegmentURL mediaRange="1544-90000"/></SegmentList>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="3" contentType="audio" selectionPriority="500">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" cenc:default_KID="bbbbbbbb-cccc-dddd-eeee-ffffffffffff" value="cenc"/>
      <SupplementalProperty schemeIdUri="amz-music:trackType" value="LD"/>
      <Representation id="8" qualityRanking="2000" codecs="opus" audioSamplingRate="48000" bandwidth="52950" mimeType="audio/mp4">
        <BaseURL>https://cdn.example/t/h.mp4?ql=LD_LOW</BaseURL>
        <SegmentList timescale="48000" duration="480000"><Initialization range="0-1031"/><SegmentURL mediaRange="1544-30000"/></SegmentList>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"#;

#[test]
fn the_services_real_manifest_shape_reads_point_for_point() {
    let m = Mpd::parse(AMAZON_REAL.as_bytes()).unwrap();
    let sets = &m.periods[0].adaptation_sets;
    assert_eq!(sets.len(), 3, "no set is dropped for its descriptors");
    let types: Vec<_> = sets.iter().map(|s| s.track_type()).collect();
    assert_eq!(types, [Some("HD"), Some("SD"), Some("LD")]);
    let prio: Vec<_> = sets.iter().map(|s| s.selection_priority).collect();
    assert_eq!(prio, [2000, 1000, 500]);
    let kids: std::collections::HashSet<_> = sets.iter().map(|s| s.default_kid()).collect();
    assert_eq!(kids.len(), 3, "one key per set");
    let hd = &sets[0];
    assert_eq!(hd.loudness("ProgramLoudness"), Some(-13.5));
    assert_eq!(hd.loudness("AnchorLoudness"), Some(-11.7));
    let depths: Vec<_> = hd.representations.iter().map(|r| r.bit_depth).collect();
    assert_eq!(depths, [Some(16), Some(24)]);
    assert_eq!(hd.switchable_to(), [2]);
    let r = &hd.representations[0];
    assert_eq!(r.quality_ranking, Some(2));
    let SegmentPlan::Ready { init, segments } =
        plan(&manifest_url(), r, Duration::ZERO, m.periods[0].duration).unwrap()
    else {
        panic!("a list needs no index");
    };
    assert_eq!(
        init.unwrap().range,
        Some(ByteRange {
            start: 0,
            end: 1067
        })
    );
    // The first media range starts after the sidx (1068..1579), not right after the init.
    assert_eq!(segments[0].range.unwrap().start, 1580);
    assert_eq!(segments[1].start, Duration::from_secs(10));
    assert_eq!(
        segments[2].duration,
        Duration::from_secs(5),
        "ends with the 25 s"
    );
    assert!(segments[0].url.as_str().ends_with("ql=HD_44&dtype=D"));
    // The loudness gives the ReplayGain track gain.
    let l = crate::loudness::Loudness::of(&m).unwrap();
    assert_eq!(l.track_gain(), -4.5);
    // Tiers from the sets' types: max-quality SD leaves the SD and LD Opus rungs, LD one;
    // the LD set is a fallback rung like any other.
    use crate::engine::presentation::{build, Wanted};
    let ids = |q: &str| -> Vec<String> {
        let w = Wanted {
            max_quality: q,
            ..Default::default()
        };
        build(m.clone(), manifest_url(), w, |_| true)
            .unwrap()
            .presentation
            .candidates
            .iter()
            .map(|c| format!("{}:{}", c.label, c.id))
            .collect()
    };
    assert_eq!(ids(""), ["HD:1", "HD:4", "SD:7", "LD:8"]);
    assert_eq!(ids("SD"), ["SD:7", "LD:8"]);
    assert_eq!(ids("LD"), ["LD:8"]);
}
