//! The ISO BMFF `sidx` (segment index) box that SegmentBase@indexRange points at: it gives the
//! exact byte size and duration of every media segment of a single-file representation.

/// One media subsegment referenced by a `sidx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidxReference {
    /// Absolute byte offset in the file.
    pub offset: u64,
    pub size: u64,
    /// In `Sidx::timescale` units, from the presentation start.
    pub start: u64,
    pub duration: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidx {
    pub timescale: u64,
    pub references: Vec<SidxReference>,
}

fn be(b: &[u8], at: usize, n: usize) -> Result<u64, String> {
    let s = b
        .get(at..at + n)
        .ok_or_else(|| format!("sidx truncated at byte {at}"))?;
    Ok(s.iter().fold(0u64, |a, x| (a << 8) | *x as u64))
}

/// Parses the `sidx` box at the start of `data`, which was read from file offset `data_offset`
/// (segment offsets are relative to the end of the box).
pub fn parse(data: &[u8], data_offset: u64) -> Result<Sidx, String> {
    // Skip boxes before the sidx (some packagers put a `styp` or `free` in the index range).
    let mut pos = 0usize;
    loop {
        let size = be(data, pos, 4)? as usize;
        let kind = data.get(pos + 4..pos + 8).ok_or("sidx truncated")?;
        if size < 8 {
            return Err(format!("bad box size {size} in the index range"));
        }
        if kind == b"sidx" {
            break;
        }
        pos += size;
    }
    let box_size = be(data, pos, 4)?;
    let version = data.get(pos + 8).copied().ok_or("sidx truncated")?;
    let mut at = pos + 12;
    let _reference_id = be(data, at, 4)?;
    let timescale = be(data, at + 4, 4)?;
    if timescale == 0 {
        return Err("sidx timescale is 0".into());
    }
    at += 8;
    let (earliest, first_offset) = if version == 0 {
        let r = (be(data, at, 4)?, be(data, at + 4, 4)?);
        at += 8;
        r
    } else {
        let r = (be(data, at, 8)?, be(data, at + 8, 8)?);
        at += 16;
        r
    };
    at += 2; // reserved
    let count = be(data, at, 2)? as usize;
    at += 2;
    if data.len() < at + count * 12 {
        return Err(format!(
            "sidx announces {count} references but the index range holds fewer"
        ));
    }
    // Every offset and time is checked here, so that the segments built from them need no
    // checks of their own: an end past u64, or past the longest presentation accepted, is refused.
    let limit = (crate::mpd::MAX_PRESENTATION.as_secs() as u128 * timescale as u128)
        .min(u64::MAX as u128) as u64;
    let overflow = |what: &str| format!("sidx {what} runs past the end of the file or of time");
    let mut offset = data_offset
        .checked_add(pos as u64)
        .and_then(|o| o.checked_add(box_size))
        .and_then(|o| o.checked_add(first_offset))
        .ok_or_else(|| overflow("first_offset"))?;
    if earliest > limit {
        return Err(overflow("earliest_presentation_time"));
    }
    let mut start = earliest;
    let mut references = Vec::with_capacity(count);
    for _ in 0..count {
        let word = be(data, at, 4)?;
        if word & 0x8000_0000 != 0 {
            return Err(
                "hierarchical sidx (references to other sidx boxes) is not supported".into(),
            );
        }
        let size = word & 0x7fff_ffff;
        if size == 0 {
            return Err(format!(
                "sidx reference {} has size 0",
                references.len() + 1
            ));
        }
        let duration = be(data, at + 4, 4)?;
        references.push(SidxReference {
            offset,
            size,
            start,
            duration,
        });
        offset = offset
            .checked_add(size)
            .ok_or_else(|| overflow("reference size"))?;
        start = start
            .checked_add(duration)
            .filter(|s| *s <= limit)
            .ok_or_else(|| overflow("subsegment duration"))?;
        at += 12;
    }
    Ok(Sidx {
        timescale,
        references,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-0 sidx with the given (size, duration) references.
    pub fn build(timescale: u32, earliest: u32, first_offset: u32, refs: &[(u32, u32)]) -> Vec<u8> {
        let mut b = Vec::new();
        let size = 32 + 12 * refs.len() as u32;
        b.extend(size.to_be_bytes());
        b.extend(b"sidx");
        b.extend([0, 0, 0, 0]);
        b.extend(1u32.to_be_bytes());
        b.extend(timescale.to_be_bytes());
        b.extend(earliest.to_be_bytes());
        b.extend(first_offset.to_be_bytes());
        b.extend([0, 0]);
        b.extend((refs.len() as u16).to_be_bytes());
        for (s, d) in refs {
            b.extend(s.to_be_bytes());
            b.extend(d.to_be_bytes());
            b.extend(0x9000_0000u32.to_be_bytes());
        }
        b
    }

    #[test]
    fn offsets_follow_the_box_end() {
        let data = build(48000, 0, 0, &[(1000, 96000), (900, 96000), (500, 48000)]);
        let s = parse(&data, 700).unwrap();
        assert_eq!(s.timescale, 48000);
        let end = 700 + data.len() as u64;
        assert_eq!(s.references[0].offset, end);
        assert_eq!(s.references[1].offset, end + 1000);
        assert_eq!(s.references[2].start, 192000);
        assert_eq!(s.references[2].size, 500);
    }

    /// A version-1 sidx (64-bit earliest time and first offset) with one reference.
    fn build_v1(earliest: u64, first_offset: u64, size: u32, duration: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(52u32.to_be_bytes());
        b.extend(b"sidx");
        b.extend([1, 0, 0, 0]);
        b.extend(1u32.to_be_bytes());
        b.extend(48000u32.to_be_bytes());
        b.extend(earliest.to_be_bytes());
        b.extend(first_offset.to_be_bytes());
        b.extend([0, 0]);
        b.extend(1u16.to_be_bytes());
        b.extend(size.to_be_bytes());
        b.extend(duration.to_be_bytes());
        b.extend(0x9000_0000u32.to_be_bytes());
        b
    }

    #[test]
    fn impossible_offsets_and_times_are_refused() {
        assert_eq!(
            parse(&build_v1(0, 0, 1000, 96000), 0)
                .unwrap()
                .references
                .len(),
            1
        );
        let e = parse(&build_v1(0, u64::MAX, 1000, 96000), 0).unwrap_err();
        assert!(e.contains("first_offset"), "{e}");
        let e = parse(&build_v1(u64::MAX, 0, 1000, 96000), 0).unwrap_err();
        assert!(e.contains("earliest_presentation_time"), "{e}");
        // The last byte of the last reference past u64.
        let e = parse(&build_v1(0, u64::MAX - 1000, 0x7fff_ffff, 96000), 0).unwrap_err();
        assert!(e.contains("first_offset") || e.contains("size"), "{e}");
        // A start just under the week's limit, and a duration that takes it past.
        let limit = crate::mpd::MAX_PRESENTATION.as_secs() * 48000;
        let e = parse(&build_v1(limit - 10, 0, 1000, 96000), 0).unwrap_err();
        assert!(e.contains("duration"), "{e}");
        let e = parse(&build(48000, 0, 0, &[(0, 96000)]), 0).unwrap_err();
        assert!(e.contains("size 0"), "{e}");
    }

    #[test]
    fn truncated_and_hierarchical_fail() {
        let data = build(48000, 0, 0, &[(1000, 96000), (900, 96000)]);
        assert!(parse(&data[..40], 0).is_err());
        let mut h = build(48000, 0, 0, &[(1000, 96000)]);
        h[32] |= 0x80;
        assert!(parse(&h, 0).unwrap_err().contains("hierarchical"));
        assert!(parse(&[0, 0, 0, 0, b's', b'i', b'd', b'x'], 0).is_err());
    }
}
