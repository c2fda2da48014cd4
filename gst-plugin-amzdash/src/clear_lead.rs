//! Marks the clear-lead fragments of constant-IV (`cbcs`) tracks as clear, explicitly, in the
//! fragmented-MP4 byte stream we hand to `qtdemux`.
//!
//! Why: a protected track's clear lead is a run of fragments whose samples use the clear sample
//! entry and carry no sample auxiliary information (`senc`/`saiz`/`saio`). GStreamer 1.22's
//! `qtdemux` ignores which sample entry a fragment uses: for a track whose `tenc` has a constant
//! IV it attaches the track's default protection meta (`encrypted=true`, no subsamples) to every
//! such sample, so a decryptor cannot tell the clear lead from encrypted audio. FLAC frames can be
//! told apart by their header, Opus packets cannot: the decryptor "decrypted" the clear lead into
//! noise. The fix is in-band and standard: for those fragments we add auxiliary information that
//! describes every sample as one clear subsample with no protected byte, so `qtdemux` attaches
//! meta that any CENC decryptor (ours, or a licensed CDM's) passes through unchanged.
//!
//! Only fragments of tracks whose protected sample entry has a constant IV
//! (`default_Per_Sample_IV_Size` = 0) and that carry no auxiliary information or `seig` sample
//! group are touched; anything this module does not fully understand passes through unchanged.

use bytes::{Bytes, BytesMut};

/// A `moof` larger than this is passed through untouched (real ones are a few KB).
const MAX_MOOF: usize = 4 << 20;
/// A `moof` describing more samples than this is passed through untouched: a `trun` without
/// per-sample sizes names any count in 8 bytes, and each sample costs the marker an entry (a
/// 10 s fragment of 20 ms Opus frames has 500).
const MAX_SAMPLES: usize = 1 << 16;
/// The largest sample one all-clear `senc` entry can describe: an auxiliary information entry
/// is at most 255 bytes (`saiz`), 2 + 6 per subsample of at most 65 535 clear bytes.
const MAX_CLEAR_SAMPLE: u32 = (255 - 2) / 6 * 0xffff;

/// Rewrites the media byte stream that follows one initialization segment.
#[derive(Debug)]
pub struct ClearLeadMarker {
    /// `(track_ID, trex default_sample_size)` of the constant-IV protected tracks.
    tracks: Vec<(u32, u32)>,
    /// Bytes of a box header or `moof` being gathered.
    pending: BytesMut,
    /// Bytes of the current non-`moof` box still to pass through.
    passthrough: u64,
    /// Set when a box of size 0 (to the end of the stream) was seen.
    to_end: bool,
    rewritten: u64,
}

impl ClearLeadMarker {
    /// A marker for the media that follows `init`, or `None` when no track of it needs one.
    pub fn from_init(init: &[u8]) -> Option<ClearLeadMarker> {
        let moov = children(init).find(|(t, _)| t == b"moov")?.1;
        let mut tracks = Vec::new();
        let trex: Vec<(u32, u32)> = children(moov)
            .filter(|(t, _)| t == b"mvex")
            .flat_map(|(_, mvex)| children(mvex))
            .filter(|(t, _)| t == b"trex")
            .filter_map(|(_, b)| Some((be32(b, 4)?, be32(b, 16)?)))
            .collect();
        for (_, trak) in children(moov).filter(|(t, _)| t == b"trak") {
            let Some(id) = track_id(trak) else { continue };
            if constant_iv_protected(trak) {
                let default_size = trex.iter().find(|(t, _)| *t == id).map_or(0, |(_, s)| *s);
                tracks.push((id, default_size));
            }
        }
        (!tracks.is_empty()).then_some(ClearLeadMarker {
            tracks,
            pending: BytesMut::new(),
            passthrough: 0,
            to_end: false,
            rewritten: 0,
        })
    }

    /// How many fragments were marked clear so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Feeds the next bytes of the media stream; returns what can be pushed now (possibly
    /// empty while a `moof` is being gathered). Bytes come out in order, none added except the
    /// auxiliary information of clear fragments.
    pub fn feed(&mut self, mut data: Bytes) -> Bytes {
        // The common case, inside an mdat (or after a box running to the end): no copy.
        if self.pending.is_empty() && (self.to_end || self.passthrough >= data.len() as u64) {
            if !self.to_end {
                self.passthrough -= data.len() as u64;
            }
            return data;
        }
        let mut out = BytesMut::new();
        while !data.is_empty() {
            if self.to_end {
                out.extend_from_slice(&data);
                break;
            }
            if self.passthrough > 0 {
                let n = self.passthrough.min(data.len() as u64) as usize;
                out.extend_from_slice(&data.split_to(n));
                self.passthrough -= n as u64;
                continue;
            }
            // At a box boundary: gather the header (and the whole box if it is a moof).
            let need_header = if self.pending.len() >= 8 && be32(&self.pending, 0) == Some(1) {
                16
            } else {
                8
            };
            if self.pending.len() < need_header {
                let n = (need_header - self.pending.len()).min(data.len());
                self.pending.extend_from_slice(&data.split_to(n));
                continue;
            }
            let size = match be32(&self.pending, 0) {
                Some(1) => be64(&self.pending, 8).unwrap_or(0),
                Some(s) => u64::from(s),
                None => 0,
            };
            let is_moof = &self.pending[4..8] == b"moof";
            if size == 0 || size < need_header as u64 || !is_moof || size > MAX_MOOF as u64 {
                // Not ours to touch: pass the header and the rest of the box through.
                out.extend_from_slice(&self.pending.split());
                if size == 0 || size < need_header as u64 {
                    self.to_end = true;
                } else {
                    self.passthrough = size - need_header as u64;
                }
                continue;
            }
            let size = size as usize;
            let n = (size - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data.split_to(n));
            if self.pending.len() == size {
                let moof = self.pending.split();
                match self.mark(&moof) {
                    Some(new) => {
                        self.rewritten += 1;
                        out.extend_from_slice(&new);
                    }
                    None => out.extend_from_slice(&moof),
                }
            }
        }
        out.freeze()
    }

    /// The `moof` with clear-lead auxiliary information added, or `None` to keep it as is.
    fn mark(&self, moof: &[u8]) -> Option<Vec<u8>> {
        // Plan every traf first: any traf we do not understand leaves the moof untouched.
        let mut plans = Vec::new();
        let mut any = false;
        let mut samples = 0usize;
        let mut clear_aux = 0usize;
        // The moof is written back box by box with 32-bit headers: any other layout (a 64-bit
        // size, bytes after the last box) would change its length under the sizes we write.
        if be32(moof, 0) == Some(1) || !canonical(&moof[8..]) {
            return None;
        }
        for (t, body) in children(&moof[8..]) {
            if t != *b"traf" {
                continue;
            }
            if !canonical(body) {
                return None;
            }
            let tfhd = children(body).find(|(t, _)| t == b"tfhd")?.1;
            let flags = be32(tfhd, 0)? & 0x00ff_ffff;
            if flags & 0x1 != 0 {
                return None; // absolute base-data-offset: moving the mdat would break it
            }
            if !plans.is_empty() && flags & 0x02_0000 == 0 {
                return None; // a later traf's base is the previous traf's data, not the moof
            }
            let id = be32(tfhd, 4)?;
            let Some(&(_, trex_size)) = self.tracks.iter().find(|(t, _)| *t == id) else {
                plans.push(None);
                continue;
            };
            // qtdemux reads auxiliary information only through saiz/saio; a seig group is
            // its own signal. Either present: qtdemux knows, leave the traf alone.
            let located = children(body).any(|(t, b)| {
                t == *b"saiz" || t == *b"saio" || (t == *b"sbgp" && b.get(4..8) == Some(b"seig"))
            });
            if located {
                plans.push(None);
                continue;
            }
            let mut at = 8;
            if flags & 0x2 != 0 {
                at += 4;
            }
            if flags & 0x8 != 0 {
                at += 4;
            }
            let default_size = if flags & 0x10 != 0 {
                be32(tfhd, at)?
            } else {
                trex_size
            };
            let mut sizes = Vec::new();
            for (_, trun) in children(body).filter(|(t, _)| t == b"trun") {
                let run = trun_sizes(trun, default_size)?;
                samples += run.len();
                if samples > MAX_SAMPLES {
                    return None;
                }
                sizes.extend(run);
            }
            if sizes.is_empty() {
                plans.push(None);
                continue;
            }
            let entries = match children(body).find(|(t, _)| t == b"senc") {
                // No encryption information at all: the clear lead. Sized before anything is
                // built: no sample larger than one entry describes, no moof past MAX_MOOF.
                None => {
                    for size in &sizes {
                        if *size > MAX_CLEAR_SAMPLE {
                            return None;
                        }
                        clear_aux += 2 + 6 * (*size as usize).div_ceil(0xffff).max(1);
                    }
                    if moof.len() + clear_aux > MAX_MOOF {
                        return None;
                    }
                    sizes.iter().map(|s| split(*s, Coverage::Clear)).collect()
                }
                // Encrypted, but described only by an senc qtdemux does not find without a
                // saiz (Shaka's full-sample cbcs audio: empty entries). Left so, qtdemux would
                // apply the stale information of the previous (marked) fragment and let these
                // samples out with no meta at all; described explicitly, they decrypt.
                Some((_, senc)) => senc_entries(senc, &sizes)?,
            };
            let replaced = children(body)
                .find(|(t, _)| t == b"senc")
                .map_or(0, |(_, b)| b.len() + 8);
            any = true;
            plans.push(Some((aux_boxes(&entries)?, replaced)));
        }
        if !any {
            return None;
        }
        let grown: usize = plans.iter().flatten().map(|(a, _)| a.len()).sum();
        let removed: usize = plans.iter().flatten().map(|(_, r)| *r).sum();
        // Never negative: the explicit senc is at least as long as the one it replaces.
        let added = grown.checked_sub(removed)?;
        if moof.len() + added > MAX_MOOF {
            return None;
        }
        let mut out = Vec::with_capacity(moof.len() + added);
        out.extend_from_slice(&((moof.len() + added) as u32).to_be_bytes());
        out.extend_from_slice(b"moof");
        let mut plan = plans.into_iter();
        for (t, body) in children(&moof[8..]) {
            if t != *b"traf" {
                put_box(&mut out, &t, body);
                continue;
            }
            let (aux, replaced) = match plan.next().flatten() {
                Some((a, r)) => (Some(a), r),
                None => (None, 0),
            };
            let traf_start = out.len();
            let traf_len = 8 + body.len() - replaced + aux.as_ref().map_or(0, |a| a.len());
            out.extend_from_slice(&(traf_len as u32).to_be_bytes());
            out.extend_from_slice(b"traf");
            for (ct, cb) in children(body) {
                if ct == *b"senc" && aux.is_some() {
                    continue; // replaced by the explicit one appended below
                }
                let at = out.len();
                put_box(&mut out, &ct, cb);
                if ct == *b"trun" {
                    shift_data_offset(&mut out[at + 8..], added)?;
                }
            }
            if let Some(mut aux) = aux {
                // saio points (from the moof's first byte, as default-base-is-moof and the
                // first traf's implicit base both say) at senc's first entry: past saiz, saio
                // (20 bytes) and senc's header (size, type, version/flags, sample_count).
                let saiz_len = be32(&aux, 0)? as usize;
                let senc_entries = out.len() + saiz_len + 20 + 16;
                aux[saiz_len + 16..saiz_len + 20]
                    .copy_from_slice(&u32::try_from(senc_entries).ok()?.to_be_bytes());
                out.extend_from_slice(&aux);
            }
            debug_assert_eq!(out.len() - traf_start, traf_len);
        }
        Some(out)
    }
}

/// How a sample without subsample information is described.
#[derive(Clone, Copy)]
enum Coverage {
    /// Every byte clear (the clear lead).
    Clear,
    /// Every byte in the protected range (full-sample encryption: for cbcs the same blocks).
    Protected,
}

/// One sample as subsamples of at most 65 535 clear bytes (the field is 16 bits).
fn split(size: u32, coverage: Coverage) -> Vec<(u16, u32)> {
    match coverage {
        Coverage::Protected => vec![(0, size)],
        Coverage::Clear => {
            let mut out = Vec::new();
            let mut left = size;
            while left > 0 || out.is_empty() {
                let clear = left.min(0xffff);
                out.push((clear as u16, 0));
                left -= clear;
            }
            out
        }
    }
}

/// The subsamples of every sample of an `senc` body, for a constant-IV track (no per-sample
/// IV): its own where it has them, the whole sample protected where it has none.
fn senc_entries(senc: &[u8], sizes: &[u32]) -> Option<Vec<Vec<(u16, u32)>>> {
    let flags = be32(senc, 0)? & 0x00ff_ffff;
    if flags & 0x1 != 0 {
        return None; // overridden track encryption parameters: not ours to restate
    }
    let count = be32(senc, 4)? as usize;
    if count != sizes.len() {
        return None;
    }
    let mut at = 8;
    let mut out = Vec::with_capacity(count);
    for &size in sizes {
        if flags & 0x2 == 0 {
            out.push(split(size, Coverage::Protected));
            continue;
        }
        let n = u16::from_be_bytes(senc.get(at..at + 2)?.try_into().ok()?) as usize;
        at += 2;
        let mut subs = Vec::with_capacity(n);
        for _ in 0..n {
            let clear = u16::from_be_bytes(senc.get(at..at + 2)?.try_into().ok()?);
            subs.push((clear, be32(senc, at + 2)?));
            at += 6;
        }
        out.push(subs);
    }
    Some(out)
}

/// `saiz` + `saio` (offset filled in later) + `senc` stating every sample's subsamples.
fn aux_boxes(entries: &[Vec<(u16, u32)>]) -> Option<Vec<u8>> {
    let entry_sizes: Vec<usize> = entries.iter().map(|e| 2 + 6 * e.len()).collect();
    if entry_sizes.is_empty() || entry_sizes.iter().any(|e| *e > 255) {
        return None;
    }
    let uniform = entry_sizes.windows(2).all(|w| w[0] == w[1]);
    let mut saiz = Vec::new();
    saiz.extend_from_slice(&0u32.to_be_bytes()); // version 0, flags 0
    saiz.push(if uniform { entry_sizes[0] as u8 } else { 0 });
    saiz.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    if !uniform {
        saiz.extend(entry_sizes.iter().map(|e| *e as u8));
    }
    let mut saio = Vec::new();
    saio.extend_from_slice(&0u32.to_be_bytes());
    saio.extend_from_slice(&1u32.to_be_bytes());
    saio.extend_from_slice(&0u32.to_be_bytes()); // filled in by the caller
    let mut senc = Vec::new();
    senc.extend_from_slice(&0x2u32.to_be_bytes()); // subsample information present
    senc.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for subs in entries {
        senc.extend_from_slice(&(subs.len() as u16).to_be_bytes());
        for (clear, protected) in subs {
            senc.extend_from_slice(&clear.to_be_bytes());
            senc.extend_from_slice(&protected.to_be_bytes());
        }
    }
    let mut out = Vec::new();
    put_box(&mut out, b"saiz", &saiz);
    put_box(&mut out, b"saio", &saio);
    put_box(&mut out, b"senc", &senc);
    Some(out)
}

/// Sample sizes of a `trun` body (after the box header).
fn trun_sizes(trun: &[u8], default_size: u32) -> Option<Vec<u32>> {
    let flags = be32(trun, 0)? & 0x00ff_ffff;
    let count = be32(trun, 4)? as usize;
    if flags & 0x1 == 0 {
        return None; // data must be addressed from the moof to be moved safely
    }
    let mut at = 12;
    if flags & 0x4 != 0 {
        at += 4;
    }
    let per_sample = [0x100u32, 0x200, 0x400, 0x800]
        .iter()
        .filter(|f| flags & **f != 0)
        .count()
        * 4;
    if count > MAX_SAMPLES || (per_sample > 0 && at + count * per_sample > trun.len()) {
        return None;
    }
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        let mut field = at + i * per_sample;
        if flags & 0x100 != 0 {
            field += 4;
        }
        let size = if flags & 0x200 != 0 {
            be32(trun, field)?
        } else {
            default_size
        };
        if size == 0 {
            return None;
        }
        sizes.push(size);
    }
    Some(sizes)
}

/// Adds `by` to a `trun` body's data_offset (present: checked by [`trun_sizes`]).
fn shift_data_offset(trun: &mut [u8], by: usize) -> Option<()> {
    let old = i32::from_be_bytes(trun.get(8..12)?.try_into().ok()?);
    let new = old.checked_add(i32::try_from(by).ok()?)?;
    trun[8..12].copy_from_slice(&new.to_be_bytes());
    Some(())
}

/// Whether a `trak` has a protected sample entry whose `tenc` uses a constant IV.
fn constant_iv_protected(trak: &[u8]) -> bool {
    let Some(stsd) = path(trak, &[b"mdia", b"minf", b"stbl", b"stsd"]) else {
        return false;
    };
    let Some(entries) = stsd.get(8..) else {
        return false;
    };
    children(entries).any(|(t, entry)| {
        let skip = match &t {
            b"enca" => 28,
            b"encv" => 78,
            _ => return false,
        };
        let Some(rest) = entry.get(skip..) else {
            return false;
        };
        children(rest)
            .filter(|(t, _)| t == b"sinf")
            .filter_map(|(_, sinf)| path(sinf, &[b"schi", b"tenc"]))
            .any(|tenc| tenc.get(6) == Some(&1) && tenc.get(7) == Some(&0))
    })
}

fn track_id(trak: &[u8]) -> Option<u32> {
    let tkhd = children(trak).find(|(t, _)| t == b"tkhd")?.1;
    if *tkhd.first()? == 1 {
        be32(tkhd, 20)
    } else {
        be32(tkhd, 12)
    }
}

pub(crate) fn path<'a>(mut data: &'a [u8], names: &[&[u8; 4]]) -> Option<&'a [u8]> {
    for name in names {
        data = children(data).find(|(t, _)| t == *name)?.1;
    }
    Some(data)
}

/// The boxes directly in `data`: `(type, body)`; stops at the first malformed one.
pub(crate) fn children(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let size = be32(data, at)? as usize;
        let kind: [u8; 4] = data.get(at + 4..at + 8)?.try_into().ok()?;
        let (header, size) = match size {
            1 => (16, usize::try_from(be64(data, at + 8)?).ok()?),
            0 => (8, data.len() - at),
            s => (8, s),
        };
        let body = data.get(at + header..at.checked_add(size)?)?;
        at += size;
        Some((kind, body))
    })
}

/// Whether `data` is exactly a run of boxes with 32-bit sizes, nothing before, between or
/// after them: what [`put_box`] writes back byte for byte.
pub(crate) fn canonical(data: &[u8]) -> bool {
    let mut at = 0usize;
    while at < data.len() {
        match be32(data, at).map(|s| s as usize) {
            Some(size) if size >= 8 && size <= data.len() - at => at += size,
            _ => return false,
        }
    }
    true
}

pub(crate) fn put_box(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
}

pub(crate) fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) fn be64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [u32; 3] = [800, 801, 70_000];

    fn boxed(kind: &[u8; 4], parts: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = parts.concat();
        let mut out = Vec::new();
        put_box(&mut out, kind, &body);
        out
    }

    /// An init segment with one audio track (id 7): an `enca` entry whose `tenc` has
    /// `per_sample_iv_size` (0 = constant IV, cbcs) and a clear `Opus` entry.
    fn init(iv_size: u8) -> Vec<u8> {
        let mut tenc = vec![1, 0, 0, 0, 0, 0x19, 1, iv_size];
        tenc.extend_from_slice(&[0xab; 16]);
        if iv_size == 0 {
            tenc.push(16);
            tenc.extend_from_slice(&[0xcd; 16]);
        }
        let sinf = boxed(
            b"sinf",
            &[
                &boxed(b"frma", &[b"Opus"]),
                &boxed(b"schm", &[&[0; 4], b"cbcs", &[0, 1, 0, 0]]),
                &boxed(b"schi", &[&boxed(b"tenc", &[&tenc])]),
            ],
        );
        let enca = boxed(b"enca", &[&[0; 28], &boxed(b"dOps", &[&[0; 11]]), &sinf]);
        let opus = boxed(b"Opus", &[&[0; 28], &boxed(b"dOps", &[&[0; 11]])]);
        let stsd = boxed(b"stsd", &[&[0, 0, 0, 0, 0, 0, 0, 2], &enca, &opus]);
        let stbl = boxed(b"stbl", &[&stsd]);
        let mdia = boxed(b"mdia", &[&boxed(b"minf", &[&stbl])]);
        let mut tkhd = vec![0u8; 84];
        tkhd[12..16].copy_from_slice(&7u32.to_be_bytes());
        let trak = boxed(b"trak", &[&boxed(b"tkhd", &[&tkhd]), &mdia]);
        let mut trex = vec![0u8; 24];
        trex[4..8].copy_from_slice(&7u32.to_be_bytes());
        let mvex = boxed(b"mvex", &[&boxed(b"trex", &[&trex])]);
        [boxed(b"ftyp", &[b"iso6"]), boxed(b"moov", &[&trak, &mvex])].concat()
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Aux {
        /// No encryption information: a clear-lead fragment.
        None,
        /// Shaka's full-sample cbcs: an senc with one empty entry per sample, no saiz.
        EmptySenc,
        /// senc located by saiz/saio, as qtdemux needs.
        Located,
    }

    /// A moof + mdat of three samples for track 7, with the given encryption information.
    fn fragment(first: u8, aux: Aux) -> (Vec<u8>, Vec<Vec<u8>>) {
        let samples: Vec<Vec<u8>> = SIZES
            .iter()
            .enumerate()
            .map(|(i, s)| vec![first + i as u8; *s as usize])
            .collect();
        let tfhd = [
            &0x0002_0002u32.to_be_bytes()[..],
            &7u32.to_be_bytes(),
            &2u32.to_be_bytes(),
        ]
        .concat();
        let trun_body = |offset: i32| {
            let mut b = Vec::new();
            b.extend_from_slice(&0x0000_0201u32.to_be_bytes());
            b.extend_from_slice(&(SIZES.len() as u32).to_be_bytes());
            b.extend_from_slice(&offset.to_be_bytes());
            for s in SIZES {
                b.extend_from_slice(&s.to_be_bytes());
            }
            b
        };
        let n = (SIZES.len() as u32).to_be_bytes();
        let extra = match aux {
            Aux::None => vec![],
            Aux::EmptySenc => boxed(b"senc", &[&[0, 0, 0, 0], &n]),
            Aux::Located => [
                boxed(b"saiz", &[&[0, 0, 0, 0, 0], &n, &[0, 0, 0]]),
                boxed(b"saio", &[&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]]),
                boxed(b"senc", &[&[0, 0, 0, 0], &n]),
            ]
            .concat(),
        };
        let build = |offset: i32| {
            let traf = boxed(
                b"traf",
                &[
                    &boxed(b"tfhd", &[&tfhd]),
                    &boxed(b"trun", &[&trun_body(offset)]),
                    &extra,
                ],
            );
            boxed(b"moof", &[&boxed(b"mfhd", &[&[0; 8]]), &traf])
        };
        let moof_len = build(0).len();
        let moof = build(moof_len as i32 + 8);
        let mdat = boxed(b"mdat", &[&samples.concat()]);
        ([moof, mdat].concat(), samples)
    }

    /// Reads a stream of moof+mdat pairs back: per fragment, the samples the trun addresses and
    /// the senc subsamples saio points at (`None` without aux info).
    #[allow(clippy::type_complexity)]
    fn read(stream: &[u8]) -> Vec<(Vec<Vec<u8>>, Option<Vec<Vec<(u16, u32)>>>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let size = be32(stream, at).unwrap() as usize;
            if &stream[at + 4..at + 8] == b"moof" {
                let moof = &stream[at..at + size];
                let traf = children(&moof[8..]).find(|(t, _)| t == b"traf").unwrap().1;
                let trun = children(traf).find(|(t, _)| t == b"trun").unwrap().1;
                let n = be32(trun, 4).unwrap() as usize;
                let mut p = at + be32(trun, 8).unwrap() as usize;
                let mut samples = Vec::new();
                for i in 0..n {
                    let s = be32(trun, 12 + 4 * i).unwrap() as usize;
                    samples.push(stream[p..p + s].to_vec());
                    p += s;
                }
                // (The fixtures' own saio points nowhere: offset 0.)
                let saio = children(traf).find(|(t, b)| t == b"saio" && be32(b, 8) != Some(0));
                let aux = saio.map(|(_, saio)| {
                    let mut q = be32(saio, 8).unwrap() as usize;
                    (0..n)
                        .map(|_| {
                            let k = u16::from_be_bytes([moof[q], moof[q + 1]]);
                            q += 2;
                            (0..k)
                                .map(|_| {
                                    let c = u16::from_be_bytes([moof[q], moof[q + 1]]);
                                    let e = be32(moof, q + 2).unwrap();
                                    q += 6;
                                    (c, e)
                                })
                                .collect()
                        })
                        .collect()
                });
                out.push((samples, aux));
            }
            at += size;
        }
        out
    }

    #[test]
    fn clear_fragments_of_constant_iv_tracks_get_all_clear_subsamples() {
        let (clear, samples) = fragment(1, Aux::None);
        let (encrypted, enc_samples) = fragment(9, Aux::Located);
        let stream = [clear.clone(), encrypted.clone()].concat();
        let mut m = ClearLeadMarker::from_init(&init(0)).expect("constant-IV track");
        let out = m.feed(Bytes::from(stream.clone()));
        assert_eq!(m.rewritten(), 1);
        let frags = read(&out);
        assert_eq!(frags.len(), 2);
        assert_eq!(
            frags[0].0, samples,
            "the trun still addresses the same bytes"
        );
        let want: Vec<Vec<(u16, u32)>> =
            vec![vec![(800, 0)], vec![(801, 0)], vec![(65535, 0), (4465, 0)]];
        assert_eq!(frags[0].1.as_ref(), Some(&want));
        // The encrypted fragment (qtdemux finds its senc) is passed through byte for byte.
        assert_eq!(&out[out.len() - encrypted.len()..], &encrypted[..]);
        assert_eq!(frags[1].0, enc_samples);

        // Byte at a time, the output is the same.
        let mut m = ClearLeadMarker::from_init(&init(0)).unwrap();
        let mut bytewise = Vec::new();
        for b in stream {
            bytewise.extend_from_slice(&m.feed(Bytes::from(vec![b])));
        }
        assert_eq!(bytewise, out.to_vec());
    }

    #[test]
    fn an_senc_without_saiz_is_restated_with_the_whole_sample_protected() {
        let (frag, samples) = fragment(3, Aux::EmptySenc);
        let mut m = ClearLeadMarker::from_init(&init(0)).unwrap();
        let out = m.feed(Bytes::from(frag));
        assert_eq!(m.rewritten(), 1);
        let frags = read(&out);
        assert_eq!(frags[0].0, samples);
        let want: Vec<Vec<(u16, u32)>> = SIZES.iter().map(|s| vec![(0, *s)]).collect();
        assert_eq!(frags[0].1.as_ref(), Some(&want));
        let moof_len = be32(&out, 0).unwrap() as usize;
        let traf = children(&out[8..moof_len])
            .find(|(t, _)| t == b"traf")
            .unwrap()
            .1;
        assert_eq!(children(traf).filter(|(t, _)| t == b"senc").count(), 1);
    }

    #[test]
    fn per_sample_iv_tracks_and_clear_tracks_are_left_alone() {
        assert!(ClearLeadMarker::from_init(&init(8)).is_none());
        assert!(ClearLeadMarker::from_init(&boxed(b"moov", &[])).is_none());
        assert!(ClearLeadMarker::from_init(b"garbage").is_none());
    }

    /// A moof of track 7 whose one trun names `count` samples of the tfhd's default `size`
    /// (no per-sample fields), and an mdat of 16 bytes.
    fn default_size_fragment(count: u32, size: u32) -> Vec<u8> {
        let tfhd = [0x0002_0012u32, 7, 2, size].map(u32::to_be_bytes).concat();
        let trun = [
            &0x0000_0001u32.to_be_bytes()[..],
            &count.to_be_bytes(),
            &200i32.to_be_bytes(),
        ];
        let traf = boxed(
            b"traf",
            &[&boxed(b"tfhd", &[&tfhd]), &boxed(b"trun", &trun)],
        );
        let moof = boxed(b"moof", &[&boxed(b"mfhd", &[&[0; 8]]), &traf]);
        [moof, boxed(b"mdat", &[&[0; 16]])].concat()
    }

    #[test]
    fn a_few_bytes_naming_a_million_samples_pass_through() {
        // Found by fuzzing (fuzz/corpus/clear_lead/crash-*): samples near 4 GiB were each
        // split into 65 537 clear subsamples before the entry was found too long (2 KB of
        // input took 0.1 s and 60 MB); a trun without per-sample sizes naming 2^20 such
        // samples in 12 bytes ran out of memory, and 2^20 samples of 100 bytes took 0.3 s.
        for (count, size) in [(1 << 20, u32::MAX), (1 << 20, 100), (120, u32::MAX - 1)] {
            let frag = default_size_fragment(count, size);
            let mut m = ClearLeadMarker::from_init(&init(0)).unwrap();
            assert_eq!(m.feed(Bytes::from(frag.clone())).to_vec(), frag);
            assert_eq!(m.rewritten(), 0);
        }
        // Within the bounds, such a fragment is still marked.
        let mut m = ClearLeadMarker::from_init(&init(0)).unwrap();
        m.feed(Bytes::from(default_size_fragment(500, 1000)));
        assert_eq!(m.rewritten(), 1);
    }

    #[test]
    fn a_traf_with_bytes_after_its_last_box_passes_through() {
        // Found by fuzzing (fuzz/corpus/clear_lead/crash-traf-trailing-bytes): a traf whose
        // trun ended 2 bytes before the traf did was written back 2 bytes shorter than the
        // size the marker gave it (a debug assertion; in release, a corrupt moof).
        let (frag, _) = fragment(1, Aux::None);
        let moof_len = be32(&frag, 0).unwrap() as usize;
        let traf_at = 8 + 16; // after the moof header and the mfhd
        let mut odd = frag[..moof_len].to_vec();
        odd.splice(moof_len..moof_len, [0xee, 0xee]);
        for at in [0, traf_at] {
            let size = be32(&odd, at).unwrap() + 2;
            odd[at..at + 4].copy_from_slice(&size.to_be_bytes());
        }
        odd.extend_from_slice(&frag[moof_len..]);
        let mut m = ClearLeadMarker::from_init(&init(0)).unwrap();
        assert_eq!(m.feed(Bytes::from(odd.clone())).to_vec(), odd);
        assert_eq!(m.rewritten(), 0);
        // The same with a 64-bit size on the traf's first box.
        let mut m = ClearLeadMarker::from_init(&init(0)).unwrap();
        let tfhd = children(&frag[traf_at + 8..moof_len]).next().unwrap().1;
        let large = [
            &1u32.to_be_bytes()[..],
            b"tfhd",
            &(tfhd.len() as u64 + 16).to_be_bytes(),
            tfhd,
        ]
        .concat();
        let mut odd = [
            &frag[..traf_at + 8],
            &large[..],
            &frag[traf_at + 16 + tfhd.len()..],
        ]
        .concat();
        for at in [0, traf_at] {
            let size = be32(&odd, at).unwrap() + 8;
            odd[at..at + 4].copy_from_slice(&size.to_be_bytes());
        }
        assert_eq!(m.feed(Bytes::from(odd.clone())).to_vec(), odd);
        assert_eq!(m.rewritten(), 0);
    }

    #[test]
    fn what_it_does_not_understand_passes_through() {
        let mut m = ClearLeadMarker::from_init(&init(0)).unwrap();
        // A box of size 0 runs to the end; a truncated moof header is kept, never lost.
        let odd = [&[0, 0, 0, 0][..], b"mdat", &[1, 2, 3]].concat();
        assert_eq!(m.feed(Bytes::from(odd.clone())).to_vec(), odd);
        let mut m = ClearLeadMarker::from_init(&init(0)).unwrap();
        let (mut frag, _) = fragment(1, Aux::None);
        // A trun without data offset: not rewritten.
        let pos = frag.windows(4).position(|w| w == b"trun").unwrap();
        frag[pos + 7] = 0x00; // flags 0x000200: sizes only
        assert_eq!(m.feed(Bytes::from(frag.clone())).to_vec(), frag);
        assert_eq!(m.rewritten(), 0);
    }
}
