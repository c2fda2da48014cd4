// SPDX-License-Identifier: MPL-2.0
//! Seek arithmetic: which seeks are supported, and the TIME segment a supported one starts.

/// A supported seek: forward, in time, flushing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeekRequest {
    pub rate: f64,
    pub flags: gst::SeekFlags,
    pub start_type: gst::SeekType,
    pub start: Option<gst::ClockTime>,
    pub stop_type: gst::SeekType,
    pub stop: Option<gst::ClockTime>,
}

impl SeekRequest {
    /// The seek `event` asks for, or why it is not supported.
    pub fn parse(event: &gst::event::Seek) -> Result<SeekRequest, &'static str> {
        let (rate, flags, start_type, start, stop_type, stop) = event.get();
        if rate <= 0.0 {
            return Err("reverse playback is not supported");
        }
        let start: Result<Option<gst::ClockTime>, _> = start.try_into();
        let stop: Result<Option<gst::ClockTime>, _> = stop.try_into();
        let (Ok(start), Ok(stop)) = (start, stop) else {
            return Err("only time seeks are supported");
        };
        if !flags.contains(gst::SeekFlags::FLUSH) {
            return Err("only flushing seeks are supported");
        }
        Ok(SeekRequest {
            rate,
            flags,
            start_type,
            start,
            stop_type,
            stop,
        })
    }

    /// Where playback restarts: the requested start (zero unless set), at most the duration.
    pub fn position(&self, duration: Option<gst::ClockTime>) -> gst::ClockTime {
        let position = match (self.start_type, self.start) {
            (gst::SeekType::Set, Some(s)) => s,
            _ => gst::ClockTime::ZERO,
        };
        match duration {
            Some(d) if position > d => d,
            _ => position,
        }
    }

    /// The segment playback restarts with, from [`position`](Self::position).
    pub fn segment(
        &self,
        duration: Option<gst::ClockTime>,
    ) -> gst::FormattedSegment<gst::ClockTime> {
        let position = self.position(duration);
        let mut seg = gst::FormattedSegment::<gst::ClockTime>::new();
        seg.set_rate(self.rate);
        seg.set_flags(gst::SegmentFlags::from_bits_truncate(self.flags.bits()));
        seg.set_start(position);
        seg.set_time(position);
        seg.set_position(position);
        if self.stop_type == gst::SeekType::Set {
            seg.set_stop(self.stop);
        }
        seg.set_duration(duration);
        seg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seek(rate: f64, flags: gst::SeekFlags, start: u64, stop: Option<u64>) -> gst::Event {
        gst::event::Seek::new(
            rate,
            flags,
            gst::SeekType::Set,
            gst::ClockTime::from_seconds(start),
            if stop.is_some() {
                gst::SeekType::Set
            } else {
                gst::SeekType::None
            },
            stop.map(gst::ClockTime::from_seconds),
        )
    }

    fn parse(e: &gst::Event) -> Result<SeekRequest, &'static str> {
        let gst::EventView::Seek(s) = e.view() else {
            panic!("not a seek");
        };
        SeekRequest::parse(s)
    }

    #[test]
    fn only_forward_flushing_time_seeks() {
        gst::init().unwrap();
        let flush = gst::SeekFlags::FLUSH;
        assert!(parse(&seek(1.0, flush, 3, None)).is_ok());
        assert_eq!(
            parse(&seek(-1.0, flush, 3, None)),
            Err("reverse playback is not supported")
        );
        assert_eq!(
            parse(&seek(1.0, gst::SeekFlags::empty(), 3, None)),
            Err("only flushing seeks are supported")
        );
        let bytes = gst::event::Seek::new(
            1.0,
            flush,
            gst::SeekType::Set,
            gst::format::Bytes::from_u64(10),
            gst::SeekType::None,
            gst::format::Bytes::NONE,
        );
        assert_eq!(parse(&bytes), Err("only time seeks are supported"));
    }

    #[test]
    fn the_segment_starts_at_the_position_clamped_to_the_duration() {
        gst::init().unwrap();
        let flags = gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE;
        let r = parse(&seek(1.0, flags, 30, Some(50))).unwrap();
        let d = Some(gst::ClockTime::from_seconds(120));
        let seg = r.segment(d);
        let s30 = gst::ClockTime::from_seconds(30);
        assert_eq!(seg.start(), Some(s30));
        assert_eq!(seg.time(), Some(s30));
        assert_eq!(seg.position(), Some(s30));
        assert_eq!(seg.stop(), Some(gst::ClockTime::from_seconds(50)));
        assert_eq!(seg.duration(), d);
        assert_eq!(
            seg.flags(),
            gst::SegmentFlags::from_bits_truncate(flags.bits())
        );
        let past = parse(&seek(1.0, flags, 200, None)).unwrap();
        assert_eq!(past.position(d), gst::ClockTime::from_seconds(120));
        assert_eq!(past.segment(d).stop(), None);
        assert_eq!(past.position(None), gst::ClockTime::from_seconds(200));
    }
}
