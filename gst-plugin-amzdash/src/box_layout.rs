// SPDX-License-Identifier: MPL-2.0
//! The top-level box layout of a segment, checked as its bytes stream in: every box must end
//! within the segment. The demuxer knows each segment's size (from the manifest, the index or
//! the response), while qtdemux in push mode believes a box header: an `mdat` whose largesize
//! claims 2^62 bytes makes it swallow every later segment as sample data and play nothing more,
//! with no error. Checking the layout here turns that into a clear error naming the box.
//!
//! Only box headers are read (8 bytes, 16 with a largesize); the bodies stream past.

use std::fmt;

/// Why a segment's boxes do not fit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// A box claims more bytes than the segment has (or than a u64 can count).
    Overruns {
        kind: [u8; 4],
        at: u64,
        size: u64,
        total: u64,
    },
    /// A box size smaller than its own header.
    TooSmall { kind: [u8; 4], at: u64, size: u64 },
    /// The segment ended inside a box (or a box header).
    Truncated {
        kind: Option<[u8; 4]>,
        at: u64,
        size: Option<u64>,
        len: u64,
    },
}

fn name(kind: &[u8; 4]) -> String {
    kind.iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::Overruns {
                kind,
                at,
                size,
                total,
            } => write!(
                f,
                "its '{}' box at byte {at} claims {size} bytes, past the segment's end \
                 ({total} bytes)",
                name(kind)
            ),
            LayoutError::TooSmall { kind, at, size } => write!(
                f,
                "its '{}' box at byte {at} has an impossible size of {size} bytes",
                name(kind)
            ),
            LayoutError::Truncated {
                kind: Some(kind),
                at,
                size: Some(size),
                len,
            } => write!(
                f,
                "it ends at byte {len}, inside its '{}' box at byte {at} of {size} bytes",
                name(kind)
            ),
            LayoutError::Truncated { at, len, .. } => write!(
                f,
                "it ends at byte {len}, inside the box header at byte {at}"
            ),
        }
    }
}

/// The checker of one segment: feed it the segment's bytes in order, then [`BoxLayout::finish`].
#[derive(Debug, Clone)]
pub struct BoxLayout {
    /// Bytes seen so far.
    pos: u64,
    /// Where the current box ends (the next header starts); `None`: the box runs to the end of
    /// the segment (size 0).
    next: Option<u64>,
    /// The current box's start, type and size (for a truncation message).
    current: Option<(u64, [u8; 4], u64)>,
    /// A header being read across pieces.
    header: Vec<u8>,
    /// The segment's size, when known.
    total: Option<u64>,
}

impl BoxLayout {
    pub fn new(total: Option<u64>) -> BoxLayout {
        BoxLayout {
            pos: 0,
            next: Some(0),
            current: None,
            header: Vec::with_capacity(16),
            total,
        }
    }

    /// The segment's size, learnt from the response after the layout was made.
    pub fn set_total(&mut self, total: Option<u64>) {
        if self.total.is_none() {
            self.total = total;
        }
    }

    /// Reads the box headers in `data`, the segment's next bytes.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), LayoutError> {
        while !data.is_empty() {
            let Some(next) = self.next else {
                // The last box runs to the end: nothing more to read.
                self.pos += data.len() as u64;
                return Ok(());
            };
            if self.pos < next {
                let skip = (next - self.pos).min(data.len() as u64) as usize;
                self.pos += skip as u64;
                data = &data[skip..];
                continue;
            }
            // At a box header: gather 8 bytes, or 16 for a largesize.
            let start = self.pos - self.header.len() as u64;
            let want = if self.header.len() >= 8 && self.header[..4] == [0, 0, 0, 1] {
                16
            } else {
                8
            };
            let take = (want - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            self.pos += take as u64;
            data = &data[take..];
            if self.header.len() < want || (want == 8 && self.header[..4] == [0, 0, 0, 1]) {
                continue;
            }
            let kind: [u8; 4] = self.header[4..8].try_into().expect("8 bytes");
            let size32 = u32::from_be_bytes(self.header[..4].try_into().expect("4 bytes"));
            let (size, header_len) = match size32 {
                0 => (None, 8),
                1 => (
                    Some(u64::from_be_bytes(
                        self.header[8..16].try_into().expect("16 bytes"),
                    )),
                    16,
                ),
                n => (Some(u64::from(n)), 8),
            };
            self.header.clear();
            match size {
                None => {
                    self.next = None;
                    self.current = None;
                }
                Some(size) if size < header_len => {
                    return Err(LayoutError::TooSmall {
                        kind,
                        at: start,
                        size,
                    })
                }
                Some(size) => {
                    let end = start.checked_add(size);
                    let total = self.total.unwrap_or(u64::MAX);
                    match end {
                        Some(end) if end <= total => {
                            self.next = Some(end);
                            self.current = Some((start, kind, size));
                        }
                        _ => {
                            return Err(LayoutError::Overruns {
                                kind,
                                at: start,
                                size,
                                total,
                            })
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The segment is complete: its last box must end with it.
    pub fn finish(&self) -> Result<(), LayoutError> {
        let len = self.pos;
        if !self.header.is_empty() {
            return Err(LayoutError::Truncated {
                kind: None,
                at: len - self.header.len() as u64,
                size: None,
                len,
            });
        }
        match (self.next, self.current) {
            (Some(next), Some((at, kind, size))) if next > len => Err(LayoutError::Truncated {
                kind: Some(kind),
                at,
                size: Some(size),
                len,
            }),
            _ => Ok(()),
        }
    }
}

/// Checks a whole segment at once (an init segment).
pub fn check(data: &[u8]) -> Result<(), LayoutError> {
    let mut layout = BoxLayout::new(Some(data.len() as u64));
    layout.feed(data)?;
    layout.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut v = ((body + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.resize(body + 8, 0xab);
        v
    }

    fn large(kind: &[u8; 4], claimed: u64, body: usize) -> Vec<u8> {
        let mut v = 1u32.to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(&claimed.to_be_bytes());
        v.resize(body + 16, 0xcd);
        v
    }

    /// Every way of cutting `data` into two or three pieces gives the same answer.
    fn fed_in_pieces(data: &[u8], total: Option<u64>) -> Result<(), LayoutError> {
        let whole = {
            let mut l = BoxLayout::new(total);
            l.feed(data).and_then(|_| l.finish())
        };
        for a in 0..=data.len() {
            for b in (a..=data.len()).step_by(7) {
                let mut l = BoxLayout::new(total);
                let r = l
                    .feed(&data[..a])
                    .and_then(|_| l.feed(&data[a..b]))
                    .and_then(|_| l.feed(&data[b..]))
                    .and_then(|_| l.finish());
                assert_eq!(r, whole, "cut at {a}, {b}");
            }
        }
        whole
    }

    #[test]
    fn a_well_formed_segment_passes_however_it_is_cut() {
        let mut seg = bx(b"styp", 12);
        seg.extend(bx(b"moof", 90));
        let mut mdat = large(b"mdat", 16 + 40, 40);
        seg.append(&mut mdat);
        assert_eq!(fed_in_pieces(&seg, Some(seg.len() as u64)), Ok(()));
        assert_eq!(fed_in_pieces(&seg, None), Ok(()));
        assert_eq!(check(&seg), Ok(()));
        // A last box of size 0 runs to the end.
        let mut open = bx(b"moof", 10);
        open.extend_from_slice(&[0, 0, 0, 0, b'm', b'd', b'a', b't', 1, 2, 3]);
        assert_eq!(fed_in_pieces(&open, None), Ok(()));
    }

    #[test]
    fn an_mdat_claiming_2_to_the_62_bytes_is_refused_at_its_header() {
        let mut seg = bx(b"moof", 90);
        seg.extend(large(b"mdat", 1 << 62, 200));
        let total = seg.len() as u64;
        let err = fed_in_pieces(&seg, Some(total)).unwrap_err();
        assert_eq!(
            err,
            LayoutError::Overruns {
                kind: *b"mdat",
                at: 98,
                size: 1 << 62,
                total
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "its 'mdat' box at byte 98 claims 4611686018427387904 bytes, past the \
                 segment's end ({total} bytes)"
            )
        );
        // Size unknown: refused at the end, as a box the segment ended inside.
        let err = fed_in_pieces(&seg, None).unwrap_err();
        assert!(
            matches!(err, LayoutError::Truncated { kind: Some(k), at: 98, .. } if &k == b"mdat"),
            "{err:?}"
        );
        // A size that overflows u64 from its offset.
        let mut seg = bx(b"moof", 90);
        seg.extend(large(b"mdat", u64::MAX, 8));
        assert!(matches!(
            fed_in_pieces(&seg, None),
            Err(LayoutError::Overruns { size: u64::MAX, .. })
        ));
    }

    #[test]
    fn impossible_sizes_and_truncations_are_named() {
        let mut tiny = bx(b"moof", 4);
        tiny.extend_from_slice(&[0, 0, 0, 5, b'm', b'd', b'a', b't']);
        assert_eq!(
            fed_in_pieces(&tiny, None),
            Err(LayoutError::TooSmall {
                kind: *b"mdat",
                at: 12,
                size: 5
            })
        );
        let short = &bx(b"mdat", 100)[..50];
        let err = fed_in_pieces(short, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "it ends at byte 50, inside its 'mdat' box at byte 0 of 108 bytes"
        );
        let mut half_header = bx(b"moof", 4);
        half_header.extend_from_slice(&[0, 0, 0]);
        assert_eq!(
            fed_in_pieces(&half_header, None).unwrap_err().to_string(),
            "it ends at byte 15, inside the box header at byte 12"
        );
        let odd = large(&[0, 1, 2, 3], 1 << 40, 0);
        assert!(check(&odd).unwrap_err().to_string().contains("'????' box"));
    }
}
