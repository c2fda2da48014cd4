// SPDX-License-Identifier: MPL-2.0
//! The queue between the download task (producer) and the element's streaming thread
//! (consumer): the one structure both share, under one lock and one condvar.
//!
//! The producer half queues, retracts and replaces downloads by tag; the consumer half waits for
//! the next item, keeps the listener's playhead (see [`crate::playhead`]) and counts underruns.

use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::EngineError;
use crate::abr;
use crate::playhead::{PlayClock, Playhead};
use amzmusic_common::codec::Codec;

/// The streaming thread waiting this long for data is an underrun (buffering < 100 %).
pub const UNDERRUN: Duration = Duration::from_millis(200);

#[derive(Debug)]
pub enum Item {
    /// An initialization segment (pushed when starting and on every representation change).
    Init {
        candidate: usize,
        /// Its codec: a change means a new stream for the elements downstream.
        codec: Codec,
        data: Bytes,
        /// The download it belongs to (see [`Queue::retract_unless_sent`]).
        tag: u64,
    },
    /// A piece of a media segment (one fragment), in order; the pieces of one segment share
    /// its `tag`.
    Media {
        candidate: usize,
        data: Bytes,
        /// The segment's start and duration.
        start: Duration,
        duration: Duration,
        /// The share of the segment's duration this piece accounts for in the buffer level
        /// (proportional to its bytes when the size is known; the shares add up to `duration`).
        time: Duration,
        /// The segment's first piece: it carries the fragment's timestamp downstream.
        first: bool,
        tag: u64,
    },
    Eos,
}

impl Item {
    /// What it counts in the queue's level: its bytes, and the media time it accounts for.
    fn weight(&self) -> (u64, Duration) {
        match self {
            Item::Media { data, time, .. } => (data.len() as u64, *time),
            Item::Init { data, .. } => (data.len() as u64, Duration::ZERO),
            Item::Eos => (0, Duration::ZERO),
        }
    }

    fn tag(&self) -> Option<u64> {
        match self {
            Item::Init { tag, .. } | Item::Media { tag, .. } => Some(*tag),
            Item::Eos => None,
        }
    }

    fn candidate(&self) -> Option<usize> {
        match self {
            Item::Init { candidate, .. } | Item::Media { candidate, .. } => Some(*candidate),
            Item::Eos => None,
        }
    }
}

/// A media segment in the queue, as [`Queue::queued_segments`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedSegment {
    pub candidate: usize,
    pub start: Duration,
    pub tag: u64,
    /// How soon the streaming thread takes its first piece: the media queued before it (once
    /// downstream is full, the queue drains at the pace of playback). Zero when part of it
    /// already went downstream.
    pub due_in: Duration,
}

/// What the consumer gets from [`Queue::next`].
#[derive(Debug)]
pub enum Next {
    Item(Item),
    /// The download stopped with this error.
    Error(EngineError),
    /// Flushing (seek, stop): nothing to take.
    Flushing,
}

/// Everything under the queue's one lock.
#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Item>,
    bytes: u64,
    time: Duration,
    error: Option<EngineError>,
    /// Tag of the last item the streaming thread took: tags grow, so a download whose tag is
    /// above it has sent nothing downstream yet.
    popped_tag: u64,
    /// Candidate of the last init or media item the streaming thread took.
    popped_candidate: Option<usize>,
    /// The listener's model position in what went downstream (see [`crate::playhead`]).
    playhead: Playhead,
    /// Time the element spent PLAYING: the playhead's clock.
    play_clock: PlayClock,
    /// The consumer takes nothing and waits for nothing (a seek or a stop is under way).
    flushing: bool,
}

impl Inner {
    /// Counts an item added to the queue in its level.
    fn put_in(&mut self, item: &Item) {
        let (bytes, time) = item.weight();
        self.bytes += bytes;
        self.time += time;
    }

    /// Takes an item removed from the queue out of its level.
    fn take_out(&mut self, item: &Item) {
        let (bytes, time) = item.weight();
        self.bytes -= bytes;
        self.time = self.time.saturating_sub(time);
    }

    /// Media pushed downstream that a listener in real time has not heard yet.
    fn downstream_ahead(&self) -> Duration {
        self.playhead.ahead(self.play_clock.at(Instant::now()))
    }
}

/// The level callback: told the queued time after every push, and whether the presentation is
/// complete.
type OnLevel = Box<dyn Fn(Duration, bool) + Send + Sync>;

/// The queue (see the module documentation).
#[derive(Default)]
pub struct Queue {
    inner: Mutex<Inner>,
    /// Signalled when an item arrives, an error is set or flushing starts.
    ready: Condvar,
    /// Notified when the streaming thread takes an item (room for more).
    space: tokio::sync::Notify,
    /// Set by the streaming thread once media flows downstream.
    playing: AtomicBool,
    /// Everything up to the end is downloaded (buffering is then 100 %).
    complete: AtomicBool,
    /// The streaming thread stopped taking from the queue (end of stream downstream, an error,
    /// a flush) until the next play: nothing queued will go downstream.
    taking_stopped: AtomicBool,
    /// Source of download tags (never reset, so tags only grow).
    next_tag: AtomicU64,
    /// Which play (start or seek) may queue: an aborted download task can still run until its
    /// next await, and nothing of it may land in the next play's queue.
    epoch: AtomicU64,
    on_level: Mutex<Option<OnLevel>>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap()
    }

    fn current(&self, epoch: u64) -> bool {
        epoch == self.epoch.load(Ordering::SeqCst)
    }

    /// Reports the queued time after every push (from the producer too: a paused pipeline takes
    /// nothing from the queue, so only the producer can say it is full again).
    pub fn set_on_level(&self, f: Option<OnLevel>) {
        *self.on_level.lock().unwrap() = f;
    }

    // -- Both halves --

    /// Empties the queue for a new play and returns the play's epoch (for the download task).
    pub fn clear(&self) -> u64 {
        let mut q = self.lock();
        // (popped_tag back to 0 is safe: the next download's tag is above every earlier one.)
        // (The play clock and the flushing flag are the element's, not the play's.)
        *q = Inner {
            play_clock: std::mem::take(&mut q.play_clock),
            flushing: q.flushing,
            ..Inner::default()
        };
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.complete.store(false, Ordering::SeqCst);
        self.taking_stopped.store(false, Ordering::SeqCst);
        epoch
    }

    /// The demuxer's queue, plus what went downstream that the listener has not heard yet
    /// when `with_downstream`: the buffer the selector decides on.
    pub fn level(&self, with_downstream: bool) -> abr::BufferLevel {
        let q = self.lock();
        self.level_of(&q, with_downstream)
    }

    fn level_of(&self, q: &Inner, with_downstream: bool) -> abr::BufferLevel {
        let downstream = if with_downstream {
            q.downstream_ahead()
        } else {
            Duration::ZERO
        };
        abr::BufferLevel {
            ahead: q.time + downstream,
            bytes: q.bytes,
            playing: self.is_playing(),
        }
    }

    /// Queued media time and bytes.
    pub fn queued(&self) -> (Duration, u64) {
        let q = self.lock();
        (q.time, q.bytes)
    }

    pub fn is_playing(&self) -> bool {
        self.playing.load(Ordering::SeqCst)
    }

    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::SeqCst)
    }

    /// Tag of the last item the streaming thread took.
    pub fn popped_tag(&self) -> u64 {
        self.lock().popped_tag
    }

    // -- Producer half --

    pub fn new_tag(&self) -> u64 {
        self.next_tag.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Queues `item` if the play is still `epoch`.
    pub fn push(&self, epoch: u64, item: Item) {
        let mut q = self.lock();
        if !self.current(epoch) {
            return;
        }
        q.put_in(&item);
        let done = matches!(item, Item::Eos);
        if done {
            self.complete.store(true, Ordering::SeqCst);
        }
        q.items.push_back(item);
        let level = q.time;
        self.ready.notify_all();
        drop(q);
        if let Some(f) = self.on_level.lock().unwrap().as_ref() {
            f(level, done);
        }
    }

    /// The play `epoch` stopped with `e`.
    pub fn fail(&self, epoch: u64, e: EngineError) {
        let mut q = self.lock();
        if !self.current(epoch) {
            return;
        }
        q.error = Some(e);
        self.ready.notify_all();
    }

    /// Waits until the streaming thread takes an item, or `timeout`.
    pub async fn taken(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.space.notified()).await;
    }

    /// Whether the streaming thread still takes from the queue in this play.
    pub fn taking(&self) -> bool {
        !self.taking_stopped.load(Ordering::SeqCst)
    }

    /// Under the lock, so the streaming thread cannot take a piece between the decision and the
    /// retraction: `decide` gets the buffer level (with what is downstream) while nothing of
    /// download `tag` went downstream, `None` once something did. When it returns `Some`, every
    /// queued item of the download is taken back (the items of the download in flight are the
    /// last ones queued); the `bool` says whether that included an init segment.
    pub fn retract_unless_sent<T>(
        &self,
        tag: u64,
        decide: impl FnOnce(Option<abr::BufferLevel>) -> Option<T>,
    ) -> Option<(T, bool)> {
        let mut q = self.lock();
        if q.popped_tag >= tag {
            decide(None);
            return None;
        }
        let level = self.level_of(&q, true);
        let t = decide(Some(level))?;
        let mut init = false;
        while q.items.back().and_then(Item::tag) == Some(tag) {
            if let Some(item) = q.items.pop_back() {
                q.take_out(&item);
                init |= matches!(item, Item::Init { .. });
            }
        }
        Some((t, init))
    }

    /// Every media segment in the queue, in order (the first one may be going downstream).
    pub fn queued_segments(&self) -> Vec<QueuedSegment> {
        let q = self.lock();
        let mut out: Vec<QueuedSegment> = Vec::new();
        let mut before = Duration::ZERO;
        for item in &q.items {
            if let Item::Media {
                candidate,
                start,
                time,
                tag,
                ..
            } = item
            {
                if out.last().is_none_or(|s| s.tag != *tag) {
                    out.push(QueuedSegment {
                        candidate: *candidate,
                        start: *start,
                        tag: *tag,
                        due_in: if q.popped_tag >= *tag {
                            Duration::ZERO
                        } else {
                            before
                        },
                    });
                }
                before += *time;
            }
        }
        out
    }

    /// Swaps the queued download `tag` (a media segment, with the init segment of its switch
    /// if it had one) for `media`, the same segment from candidate `cand` tagged `tag`, if
    /// nothing of it went downstream yet and the play is still `epoch`. Init segments keep the
    /// stream right: `init_of(c, tag)` is queued before the new media unless `cand` was
    /// already current there, and before what follows when that is another candidate's
    /// media; init segments made redundant by the swap go. Returns whether it swapped.
    pub fn replace(
        &self,
        epoch: u64,
        tag: u64,
        cand: usize,
        media: Vec<Item>,
        init_of: &dyn Fn(usize, u64) -> Option<Item>,
    ) -> bool {
        let mut q = self.lock();
        if !self.current(epoch) || q.popped_tag >= tag {
            return false;
        }
        let Some(mut from) = q.items.iter().position(|i| i.tag() == Some(tag)) else {
            return false;
        };
        let mut to = from
            + q.items
                .iter()
                .skip(from)
                .take_while(|i| i.tag() == Some(tag))
                .count();
        // An init segment right before it (an earlier swap's) is taken out with it: `before`
        // and `after` below put back whatever init this segment and the next one need.
        if from > 0 && matches!(q.items[from - 1], Item::Init { .. }) {
            from -= 1;
        }
        let before = q
            .items
            .iter()
            .take(from)
            .rev()
            .find_map(Item::candidate)
            .or(q.popped_candidate);
        let after = match q.items.get(to) {
            Some(Item::Media { candidate, .. }) if *candidate != cand => Some(*candidate),
            // What follows switches to `cand`: its init segment is now redundant.
            Some(Item::Init { candidate, .. }) if *candidate == cand => {
                to += 1;
                None
            }
            _ => None,
        };
        let mut new: Vec<Item> = Vec::with_capacity(media.len() + 2);
        if before != Some(cand) {
            let Some(init) = init_of(cand, tag) else {
                return false;
            };
            new.push(init);
        }
        new.extend(media);
        if let Some(c) = after {
            let Some(init) = init_of(c, tag) else {
                return false;
            };
            new.push(init);
        }
        let tail = q.items.split_off(to);
        for item in q.items.split_off(from) {
            q.take_out(&item);
        }
        for item in new {
            q.put_in(&item);
            q.items.push_back(item);
        }
        q.items.extend(tail);
        true
    }

    // -- Consumer half --

    /// Takes the next item, keeping the accounting right.
    fn pop(&self, q: &mut Inner) -> Option<Item> {
        let item = q.items.pop_front()?;
        q.take_out(&item);
        if let Some(t) = item.tag() {
            q.popped_tag = q.popped_tag.max(t);
        }
        if let Some(c) = item.candidate() {
            q.popped_candidate = Some(c);
        }
        self.space.notify_one();
        Some(item)
    }

    /// The next item for the streaming thread, waiting for one. While it waits, `report` is
    /// told whether the wait is an underrun (once it lasted [`UNDERRUN`] and a listener in real
    /// time has heard everything pushed: a consumer that is not clocked waits here on every
    /// download without anyone waiting for audio); after it took one, `report(false)`. The
    /// first underrun of a wait while audio was playing stops the playhead where it is and
    /// calls `underrun` (playback ran dry).
    pub fn next(&self, mut report: impl FnMut(bool), mut underrun: impl FnMut()) -> Next {
        let mut q = self.lock();
        let mut waiting_since: Option<Instant> = None;
        let mut counted = false;
        loop {
            if q.flushing {
                return Next::Flushing;
            }
            if let Some(it) = self.pop(&mut q) {
                drop(q);
                report(false);
                return Next::Item(it);
            }
            if let Some(e) = q.error.take() {
                return Next::Error(e);
            }
            // An empty queue right after taking an item is normal with a fast consumer; only
            // a wait longer than this is an underrun worth telling the application about.
            let since = *waiting_since.get_or_insert_with(Instant::now);
            let ran_dry = since.elapsed() >= UNDERRUN
                && q.playhead.caught_up(q.play_clock.at(Instant::now()));
            drop(q);
            report(ran_dry);
            if ran_dry && !counted && self.is_playing() {
                // The listener waits where it is until the next piece.
                counted = true;
                self.lock().playhead.stalled();
                underrun();
            }
            q = self.lock();
            if q.items.is_empty() && q.error.is_none() && !q.flushing {
                q = self
                    .ready
                    .wait_timeout(q, Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
        }
    }

    /// Flushing stops the consumer's wait at once.
    pub fn set_flushing(&self, flushing: bool) {
        let mut q = self.lock();
        q.flushing = flushing;
        if flushing {
            self.ready.notify_all();
        }
    }

    /// Media flows downstream (`true`), or not yet in this play: waiting for the first
    /// fragment is start-up, not an underrun.
    pub fn set_playing(&self, playing: bool) {
        self.playing.store(playing, Ordering::SeqCst);
    }

    /// Media `[from, to)` went downstream now.
    pub fn pushed_downstream(&self, from: Duration, to: Duration) {
        let mut q = self.lock();
        let clock = q.play_clock.at(Instant::now());
        q.playhead.pushed(from, to, clock);
    }

    /// The element went to PLAYING (`true`) or left it, now: the playhead's clock.
    pub fn set_clock_running(&self, running: bool) {
        let mut q = self.lock();
        if running {
            q.play_clock.start(Instant::now());
        } else {
            q.play_clock.stop(Instant::now());
        }
    }

    /// The streaming thread takes nothing more from the queue until the next play.
    pub fn stop_taking(&self) {
        self.taking_stopped.store(true, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(tag: u64, n: usize) -> Item {
        Item::Media {
            candidate: 0,
            data: Bytes::from(vec![0u8; n]),
            start: Duration::ZERO,
            duration: Duration::from_secs(1),
            time: Duration::from_millis(100),
            first: false,
            tag,
        }
    }

    fn take(q: &Queue) -> Item {
        match q.next(|_| {}, || {}) {
            Next::Item(i) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_download_is_retracted_only_while_nothing_of_it_went_downstream() {
        let queue = Queue::default();
        let epoch = queue.clear();
        let (a, b) = (queue.new_tag(), queue.new_tag());
        queue.push(epoch, media(a, 10));
        queue.push(
            epoch,
            Item::Init {
                candidate: 1,
                codec: Codec::Flac,
                data: Bytes::from(vec![0u8; 5]),
                tag: b,
            },
        );
        queue.push(epoch, media(b, 20));
        queue.push(epoch, media(b, 20));
        // A stale play's task queues nothing.
        queue.push(epoch - 1, media(b, 1000));
        assert_eq!(queue.queued(), (Duration::from_millis(300), 55));
        assert!(matches!(take(&queue), Item::Media { tag, .. } if tag == a));
        // Download a went downstream: too late for it; b is taken back whole, init included.
        let mut seen = None;
        assert_eq!(
            queue.retract_unless_sent(a, |l| {
                seen = Some(l);
                Some(())
            }),
            None
        );
        assert_eq!(seen, Some(None));
        assert_eq!(queue.retract_unless_sent(b, |_| None::<()>), None);
        assert_eq!(queue.queued(), (Duration::from_millis(200), 45));
        assert_eq!(queue.retract_unless_sent(b, |_| Some(7)), Some((7, true)));
        assert_eq!(queue.queued(), (Duration::ZERO, 0));
        assert!(queue.queued_segments().is_empty());
    }

    #[test]
    fn the_consumer_gets_items_then_the_error_and_stops_when_flushing() {
        let queue = Queue::default();
        let epoch = queue.clear();
        let tag = queue.new_tag();
        queue.push(epoch, media(tag, 10));
        queue.fail(epoch, EngineError::Network("down".into()));
        // A stale play's error is not this play's.
        queue.fail(epoch - 1, EngineError::NotFound("old".into()));
        assert!(matches!(take(&queue), Item::Media { .. }));
        assert!(matches!(
            queue.next(|_| {}, || {}),
            Next::Error(EngineError::Network(_))
        ));
        queue.set_flushing(true);
        assert!(matches!(queue.next(|_| {}, || {}), Next::Flushing));
    }

    #[test]
    fn a_wait_after_audio_flowed_is_one_underrun() {
        let queue = std::sync::Arc::new(Queue::default());
        let epoch = queue.clear();
        queue.set_clock_running(true);
        queue.set_playing(true);
        queue.pushed_downstream(Duration::ZERO, Duration::from_millis(10));
        let producer = {
            let queue = queue.clone();
            std::thread::spawn(move || {
                std::thread::sleep(UNDERRUN * 3);
                let tag = queue.new_tag();
                queue.push(epoch, media(tag, 1));
            })
        };
        let (mut reports, mut underruns) = (Vec::new(), 0);
        let next = queue.next(|u| reports.push(u), || underruns += 1);
        producer.join().unwrap();
        assert!(matches!(next, Next::Item(_)));
        assert_eq!(underruns, 1);
        assert_eq!(reports.first(), Some(&false));
        assert!(reports.contains(&true));
        assert_eq!(reports.last(), Some(&false));
    }

    /// The queue as `(kind, candidate, tag, bytes)`, kind `I`nit, `M`edia or `E`os.
    fn layout(queue: &Queue) -> Vec<(char, usize, u64, usize)> {
        let q = queue.lock();
        q.items
            .iter()
            .map(|i| match i {
                Item::Init {
                    candidate,
                    data,
                    tag,
                    ..
                } => ('I', *candidate, *tag, data.len()),
                Item::Media {
                    candidate,
                    data,
                    tag,
                    ..
                } => ('M', *candidate, *tag, data.len()),
                Item::Eos => ('E', 0, 0, 0),
            })
            .collect()
    }

    #[test]
    fn a_buffered_segment_is_swapped_only_while_nothing_of_it_went_downstream() {
        let queue = Queue::default();
        let epoch = queue.clear();
        let s = Duration::from_secs;
        let init = |candidate, tag| Item::Init {
            candidate,
            codec: Codec::Flac,
            data: Bytes::from(vec![0u8; 7]),
            tag,
        };
        let media = |candidate, k: u64, n: usize, first, tag| Item::Media {
            candidate,
            data: Bytes::from(vec![0u8; n]),
            start: s(10 * k),
            duration: s(10),
            time: s(5),
            first,
            tag,
        };
        // Segments 0 to 3 from candidate 0, two pieces each, then the end.
        let tags: Vec<u64> = (0..4).map(|_| queue.new_tag()).collect();
        queue.push(epoch, init(0, tags[0]));
        for (k, &tag) in tags.iter().enumerate() {
            queue.push(epoch, media(0, k as u64, 100, true, tag));
            queue.push(epoch, media(0, k as u64, 100, false, tag));
        }
        queue.push(epoch, Item::Eos);
        // The init and segment 0's first piece went downstream.
        {
            take(&queue);
            take(&queue);
        }
        let due: Vec<(u64, Duration)> = queue
            .queued_segments()
            .iter()
            .map(|q| (q.tag, q.due_in))
            .collect();
        assert_eq!(
            due,
            vec![
                (tags[0], s(0)),
                (tags[1], s(5)),
                (tags[2], s(15)),
                (tags[3], s(25))
            ]
        );
        let init_of = |c: usize, tag: u64| Some(init(c, tag));
        let upgrade = |k: u64, tag| vec![media(1, k, 300, true, tag), media(1, k, 200, false, tag)];
        // Segment 0 is playing: too late. A stale play swaps nothing.
        assert!(!queue.replace(epoch, tags[0], 1, upgrade(0, tags[0]), &init_of));
        assert!(!queue.replace(epoch + 1, tags[2], 1, upgrade(2, tags[2]), &init_of));
        // Segment 2 from candidate 1: its init before it, candidate 0's again after it.
        assert!(queue.replace(epoch, tags[2], 1, upgrade(2, tags[2]), &init_of));
        // The last segment: no init after it (the end follows).
        assert!(queue.replace(epoch, tags[3], 1, upgrade(3, tags[3]), &init_of));
        let (t0, t1, t2, t3) = (tags[0], tags[1], tags[2], tags[3]);
        assert_eq!(
            layout(&queue),
            vec![
                ('M', 0, t0, 100),
                ('M', 0, t1, 100),
                ('M', 0, t1, 100),
                ('I', 1, t2, 7),
                ('M', 1, t2, 300),
                ('M', 1, t2, 200),
                // (Segment 2's swap put candidate 0's init here; segment 3's took it out.)
                ('M', 1, t3, 300),
                ('M', 1, t3, 200),
                ('E', 0, 0, 0),
            ]
        );
        {
            let q = queue.lock();
            assert_eq!((q.bytes, q.time), (100 + 200 + 1000 + 7, s(35)));
        }
        // Segment 1 from candidate 1: an init before it, and segment 2's init goes.
        assert!(queue.replace(epoch, t1, 1, upgrade(1, t1), &init_of));
        let kinds: String = layout(&queue).iter().map(|l| l.0).collect();
        assert_eq!(kinds, "MIMMMMMME");
        {
            let q = queue.lock();
            assert_eq!((q.bytes, q.time), (100 + 7 + 1500, s(35)));
        }
        // Once segment 1's first piece is taken, it stays as it is.
        {
            take(&queue);
            take(&queue);
            take(&queue);
        }
        assert!(!queue.replace(epoch, t1, 0, upgrade(1, t1), &init_of));
    }
}
