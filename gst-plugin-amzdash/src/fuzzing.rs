//! The bodies of the fuzz targets in `fuzz/` and of their corpus replay
//! (`tests/fuzz_corpus.rs`): one function per parser family, so the two cannot drift. Each
//! takes untrusted bytes and only returns; any panic (overflow, index, unwrap) is a bug.

use std::time::Duration;

use bytes::Bytes;
use url::Url;

use crate::clear_lead::ClearLeadMarker;
use crate::engine::presentation::{self, Wanted};
use crate::mpd::{sidx, Mpd, MAX_PRESENTATION};
use crate::segments::{self, SegmentPlan, SegmentRef};

/// What the manifests are taken to have been fetched from (their relative URLs resolve
/// against it, and the URL policy is checked against it).
pub const MANIFEST_URL: &str = "https://cdn.example.com/B0EMUHD001/manifest.mpd?sig=0";

/// Looks up the segment at a few positions, as a seek and the playhead do.
fn seek_around(segs: &[SegmentRef]) {
    let Some(last) = segs.last() else { return };
    for t in [
        Duration::ZERO,
        last.start,
        last.start + last.duration,
        MAX_PRESENTATION,
    ] {
        let k = segments::segment_at(segs, t);
        assert!(k < segs.len(), "segment_at out of range");
    }
}

/// An MPD: parsed, every representation of every period planned as the engine plans it
/// (segment times, numbers and URLs), then the presentation built from it.
pub fn mpd(data: &[u8]) {
    let Ok(mpd) = Mpd::parse(data) else { return };
    let manifest = Url::parse(MANIFEST_URL).expect("constant URL");
    for period in &mpd.periods {
        for set in &period.adaptation_sets {
            let _ = (
                set.switchable_to(),
                set.track_type(),
                set.loudness("ProgramLoudness"),
                set.default_kid(),
            );
            for cp in &set.content_protections {
                let _ = cp.system_id();
            }
            for rep in &set.representations {
                match segments::plan(&manifest, rep, period.start, period.duration) {
                    Ok(SegmentPlan::Ready { segments, .. }) => seek_around(&segments),
                    Ok(SegmentPlan::NeedsIndex { .. }) | Err(_) => {}
                }
            }
        }
    }
    if let Ok(built) = presentation::build(mpd, manifest, Wanted::default(), |_| true) {
        let p = &built.presentation;
        let _ = p.duration();
        for c in &p.candidates {
            let _ = (p.rep(c), presentation::quality_rank(&c.label));
        }
    }
}

fn be_u64(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x))
}

/// A `sidx` read from the index range of a SegmentBase representation, and the segments made
/// of it. Input: 8 bytes of index-range start, 8 of presentationTimeOffset, 4 of its
/// timescale (all big-endian), then the bytes of the index range.
pub fn sidx(data: &[u8]) {
    if data.len() < 20 {
        return;
    }
    let (head, index) = data.split_at(20);
    // The manifest's byte ranges end before i64::MAX (`ByteRange::parse`); its timescales are
    // not 0 (the MPD parser refuses them).
    let data_offset = be_u64(&head[..8]) % i64::MAX as u64;
    let pto = be_u64(&head[8..16]);
    let pto_timescale = be_u64(&head[16..20]).max(1);
    let Ok(sx) = sidx::parse(index, data_offset) else {
        return;
    };
    let url = Url::parse(MANIFEST_URL).expect("constant URL");
    let segs = segments::from_sidx(&url, &sx, pto, pto_timescale, Duration::from_secs(60));
    for s in &segs {
        let r = s.range.expect("sidx segments have a byte range");
        assert_eq!(Some(r.len()), s.size);
    }
    seek_around(&segs);
}

/// An initialization segment and the media after it through the clear-lead marker. Input:
/// 2 bytes (big-endian) of init length, 1 byte `c` of chunk size (the media is fed in pieces
/// of `1 + c * c / 8` bytes, 1 to 8129, as HTTP chunks arrive), the init segment, then the
/// media.
pub fn clear_lead(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let init_len = usize::from(u16::from_be_bytes([data[0], data[1]]));
    let chunk = 1 + usize::from(data[2]) * usize::from(data[2]) / 8;
    let rest = &data[3..];
    let (init, media) = rest.split_at(init_len.min(rest.len()));
    let Some(mut marker) = ClearLeadMarker::from_init(init) else {
        return;
    };
    let mut out = Vec::with_capacity(media.len());
    for piece in media.chunks(chunk) {
        out.extend_from_slice(&marker.feed(Bytes::copy_from_slice(piece)));
    }
    // Bytes come out in order and none is added except the auxiliary information of rewritten
    // fragments: with none rewritten, what came out is what went in (less a tail still held).
    if marker.rewritten() == 0 {
        assert!(
            media.starts_with(&out),
            "the marker changed a stream it did not rewrite"
        );
    }
}
