// SPDX-License-Identifier: MPL-2.0
//! The element's runtime state (one lock), and the accounting of what goes downstream: which
//! piece of a fragment carries its time stamp and discont, and how much media it stands for.

use std::sync::Arc;
use std::time::Duration;

use super::report::buffering_changed;
use super::streams::to_clock;
use crate::clear_lead::ClearLeadMarker;
use crate::engine::{AudioObject, Engine};
use crate::timing::{self, EditTiming};

#[derive(Default)]
pub struct State {
    pub manifest: Vec<u8>,
    pub audio_object: Option<AudioObject>,
    pub engine: Option<Arc<Engine>>,
    /// stream-start, caps, segment and protection events still to send.
    pub need_events: bool,
    pub segment: gst::FormattedSegment<gst::ClockTime>,
    pub seqnum: Option<gst::Seqnum>,
    pub discont: bool,
    pub buffering: Option<i32>,
    pub position: Option<gst::ClockTime>,
    pub started: bool,
    /// Codec of the last init segment pushed.
    pub codec: Option<amzmusic_common::codec::Codec>,
    /// Marks clear-lead fragments of constant-IV tracks as clear (`clear_lead.rs`); set from
    /// each init segment.
    pub clear_lead: Option<ClearLeadMarker>,
    /// Start and duration of the fragment whose first buffer is still to be pushed.
    pub fragment_time: Option<(Duration, Duration)>,
    /// Media time up to which pieces went downstream (for the playhead).
    pub pushed_to: Duration,
    /// The edit list of the representation playing (`timing.rs`): its priming is dropped and
    /// its end clipped downstream.
    pub timing: Option<EditTiming>,
    /// The manifest's loudness (`loudness.rs`), sent downstream as ReplayGain tags.
    pub loudness: Option<crate::loudness::Loudness>,
    /// The last stream tags from upstream (amazonmusicsrc's title, artist, cover): a stream
    /// tag event replaces the one before it, so ours go out merged with these.
    pub upstream_tags: Option<gst::TagList>,
    /// Tags wait for the stream's second fragment: qtdemux drops tag events before it has a
    /// source pad, and replaces what it forwards with its own tags when it first pushes.
    pub tags_due: bool,
    /// The stream's first fragment went downstream.
    pub fragment_seen: bool,
}

/// A piece of a media segment ready to go downstream.
#[derive(Debug, PartialEq)]
pub struct Piece {
    pub data: bytes::Bytes,
    /// Start and duration of its fragment, on the first buffer of the fragment that leaves.
    pub stamp: Option<(Duration, Duration)>,
    pub discont: bool,
    /// The media it accounts for, from where playback starts.
    pub span: (Duration, Duration),
}

impl State {
    /// A new engine plays from the start: events and a discont are due.
    pub fn start_engine(&mut self, engine: Arc<Engine>) {
        self.engine = Some(engine);
        self.segment = gst::FormattedSegment::new();
        self.timing = None;
        self.need_events = true;
        self.discont = true;
    }

    /// A flushing seek: playback restarts with `segment`, events and a discont are due, and the
    /// buffering level is reported afresh.
    pub fn seek(&mut self, segment: gst::FormattedSegment<gst::ClockTime>, seqnum: gst::Seqnum) {
        self.segment = segment;
        self.seqnum = Some(seqnum);
        self.need_events = true;
        self.discont = true;
        self.buffering = None;
    }

    /// Accounts a piece of a media segment (`time`: the media it holds) and passes it through
    /// the clear-lead marker; None while the marker holds every byte back (it gathers a moof,
    /// and the stamp waits for the first buffer that leaves).
    pub fn take_piece(
        &mut self,
        data: bytes::Bytes,
        start: Duration,
        duration: Duration,
        time: Duration,
        first: bool,
    ) -> Option<Piece> {
        if first {
            self.fragment_time = Some((start, duration));
            self.position = Some(to_clock(start));
            self.pushed_to = start;
        }
        // A seek lands inside a segment, and what precedes it is clipped downstream.
        let from = Duration::from_nanos(self.segment.start().map_or(0, |t| t.nseconds()));
        let span = (self.pushed_to.max(from), (self.pushed_to + time).max(from));
        self.pushed_to += time;
        let data = match self.clear_lead.as_mut() {
            Some(marker) => marker.feed(data),
            None => data,
        };
        if data.is_empty() {
            return None;
        }
        Some(Piece {
            data,
            stamp: self.fragment_time.take(),
            discont: std::mem::take(&mut self.discont),
            span,
        })
    }

    /// An init segment goes downstream: it carries the discont, and its fragments are marked
    /// by its clear-lead marker.
    pub fn init_pushed(&mut self, init: &[u8]) {
        self.discont = false;
        self.clear_lead = ClearLeadMarker::from_init(init);
    }

    /// The TIME segment to send downstream (see [`timing::output_segment`]).
    pub fn output_segment(&self, end: Option<Duration>) -> gst::FormattedSegment<gst::ClockTime> {
        timing::output_segment(&self.segment, self.timing.as_ref(), end)
    }

    /// Records `pct` as the level posted if it is worth a message (see
    /// [`buffering_changed`]).
    pub fn buffering_changed(&mut self, pct: i32) -> bool {
        let changed = buffering_changed(self.buffering, pct);
        if changed {
            self.buffering = Some(pct);
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_first_piece_of_a_fragment_carries_its_time_and_the_discont() {
        let mut st = State {
            discont: true,
            ..Default::default()
        };
        let a = st
            .take_piece(bytes::Bytes::from_static(b"ab"), 2 * S, 2 * S, S, true)
            .unwrap();
        assert_eq!(a.stamp, Some((2 * S, 2 * S)));
        assert!(a.discont);
        assert_eq!(a.span, (2 * S, 3 * S));
        assert_eq!(st.position, Some(gst::ClockTime::from_seconds(2)));
        let b = st
            .take_piece(bytes::Bytes::from_static(b"cd"), 2 * S, 2 * S, S, false)
            .unwrap();
        assert_eq!(b.stamp, None);
        assert!(!b.discont);
        assert_eq!(b.span, (3 * S, 4 * S));
        assert_eq!(st.pushed_to, 4 * S);
        assert!(st
            .take_piece(bytes::Bytes::new(), 4 * S, 2 * S, S, true)
            .is_none());
        // The stamp waits for the first buffer that leaves.
        let c = st
            .take_piece(bytes::Bytes::from_static(b"ef"), 4 * S, 2 * S, S, false)
            .unwrap();
        assert_eq!(c.stamp, Some((4 * S, 2 * S)));
    }

    #[test]
    fn media_before_the_seek_position_accounts_for_nothing() {
        gst::init().unwrap();
        let mut st = State::default();
        let mut seg = gst::FormattedSegment::<gst::ClockTime>::new();
        seg.set_start(gst::ClockTime::from_seconds(5));
        st.seek(seg, gst::Seqnum::next());
        assert!(st.need_events && st.discont && st.buffering.is_none());
        let a = st
            .take_piece(bytes::Bytes::from_static(b"ab"), 4 * S, 2 * S, S, true)
            .unwrap();
        assert_eq!(a.span, (5 * S, 5 * S));
        let b = st
            .take_piece(bytes::Bytes::from_static(b"cd"), 4 * S, 2 * S, S, false)
            .unwrap();
        assert_eq!(b.span, (5 * S, 6 * S));
    }

    #[test]
    fn an_init_segment_takes_the_discont() {
        let mut st = State {
            discont: true,
            ..Default::default()
        };
        st.init_pushed(b"not an init segment");
        assert!(!st.discont);
        assert!(st.clear_lead.is_none());
    }

    #[test]
    fn buffering_is_recorded_only_when_posted() {
        let mut st = State::default();
        assert!(st.buffering_changed(30));
        assert!(!st.buffering_changed(35));
        assert_eq!(st.buffering, Some(30));
        assert!(st.buffering_changed(100));
        assert_eq!(st.buffering, Some(100));
    }
}
