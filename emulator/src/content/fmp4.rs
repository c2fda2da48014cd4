//! CMAF fragmented-MP4 writer for one audio track: init segment (with `enca`/`sinf`/`tenc` and
//! a Widevine `pssh` when protected), `moof`+`mdat` fragments with `senc`/`saiz`/`saio`, `sidx`.

use super::catalog::Scheme;

pub fn bx(typ: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 8);
    v.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
    v.extend_from_slice(typ);
    v.extend_from_slice(body);
    v
}

pub fn full_box(typ: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 4);
    b.push(version);
    b.extend_from_slice(&flags.to_be_bytes()[1..]);
    b.extend_from_slice(body);
    bx(typ, &b)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const MATRIX: [u32; 9] = [0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x4000_0000];

fn matrix() -> Vec<u8> {
    MATRIX.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// Widevine's DRM system id.
pub const WIDEVINE_SYSTEM_ID: [u8; 16] = [
    0xed, 0xef, 0x8b, 0xa9, 0x79, 0xd6, 0x4a, 0xce, 0xa3, 0xc8, 0x27, 0xdc, 0xd5, 0x1d, 0x21, 0xed,
];

/// The boxes of `data` in order, as (type, whole box); None if a size does not fit.
fn split_boxes(data: &[u8]) -> Option<Vec<([u8; 4], &[u8])>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let size = u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize;
        let typ: [u8; 4] = data.get(at + 4..at + 8)?.try_into().ok()?;
        if size < 8 {
            return None;
        }
        out.push((typ, data.get(at..at + size)?));
        at += size;
    }
    Some(out)
}

/// `init` with the `pssh` boxes in its `moov` replaced by `pssh` (another DRM system's). The
/// rest of the init segment is byte-identical. `init` is the emulator's own, so a box that does
/// not parse is a bug: the init is returned unchanged.
pub fn with_pssh(init: &[u8], pssh: &[u8]) -> Vec<u8> {
    let Some(top) = split_boxes(init) else {
        return init.to_vec();
    };
    let mut out = Vec::with_capacity(init.len() + pssh.len());
    for (typ, whole) in top {
        if &typ != b"moov" {
            out.extend_from_slice(whole);
            continue;
        }
        let Some(children) = split_boxes(&whole[8..]) else {
            return init.to_vec();
        };
        let mut body: Vec<u8> = children
            .iter()
            .filter(|(t, _)| t != b"pssh")
            .flat_map(|(_, b)| b.iter().copied())
            .collect();
        body.extend_from_slice(pssh);
        out.extend_from_slice(&bx(b"moov", &body));
    }
    out
}

/// How the track is protected, as written in `tenc`.
#[derive(Debug, Clone)]
pub struct Protection {
    pub scheme: Scheme,
    pub kid: [u8; 16],
    /// cbcs: the constant IV; cenc: None (8-byte per-sample IVs).
    pub constant_iv: Option<[u8; 16]>,
    /// cbcs pattern (crypt, skip) in 16-byte blocks.
    pub pattern: (u8, u8),
    pub pssh: Vec<u8>,
}

impl Protection {
    pub fn per_sample_iv_size(&self) -> u8 {
        if self.constant_iv.is_some() {
            0
        } else {
            8
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrackInfo {
    pub timescale: u32,
    pub sample_rate: u32,
    pub channels: u16,
    pub sample_size: u16,
    /// `fLaC`, `Opus` or `ec-3`.
    pub format: [u8; 4],
    /// The codec configuration box (`dfLa`, `dOps`, `dec3`).
    pub codec_box: Vec<u8>,
    pub protection: Option<Protection>,
    /// The edit list's one edit, for a codec with priming: (presentation duration, media_time),
    /// both in `timescale` (which is then also the movie timescale).
    pub edit: Option<(u64, u32)>,
}

/// The Widevine `pssh` box (version 0) with a `WidevinePsshData` protobuf: key ids (field 2),
/// content id (field 4), protection scheme (field 9, the scheme fourcc as an integer).
pub fn widevine_pssh(key_ids: &[[u8; 16]], content_id: &[u8], scheme: Scheme) -> Vec<u8> {
    let mut pb = Vec::new();
    for kid in key_ids {
        pb.push(0x12);
        pb.push(16);
        pb.extend_from_slice(kid);
    }
    pb.push(0x22);
    pb.push(content_id.len() as u8);
    pb.extend_from_slice(content_id);
    pb.push(0x48);
    let mut v = u32::from_be_bytes(*scheme.fourcc()) as u64;
    while v >= 0x80 {
        pb.push((v as u8) | 0x80);
        v >>= 7;
    }
    pb.push(v as u8);
    let body = cat(&[&WIDEVINE_SYSTEM_ID, &(pb.len() as u32).to_be_bytes(), &pb]);
    full_box(b"pssh", 0, 0, &body)
}

fn audio_sample_entry(typ: &[u8; 4], info: &TrackInfo, children: &[&[u8]]) -> Vec<u8> {
    let mut b = vec![0u8; 6];
    b.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
    b.extend_from_slice(&[0u8; 8]);
    b.extend_from_slice(&info.channels.to_be_bytes());
    b.extend_from_slice(&info.sample_size.to_be_bytes());
    b.extend_from_slice(&[0u8; 4]);
    // 16.16 fixed point; rates that do not fit are carried by the codec box (as ffmpeg does).
    let rate = if info.sample_rate <= 0xffff {
        info.sample_rate << 16
    } else {
        0
    };
    b.extend_from_slice(&rate.to_be_bytes());
    for c in children {
        b.extend_from_slice(c);
    }
    bx(typ, &b)
}

fn tenc(p: &Protection) -> Vec<u8> {
    let (version, pattern) = match p.scheme {
        Scheme::Cenc => (0u8, 0u8),
        Scheme::Cbcs => (1, (p.pattern.0 << 4) | (p.pattern.1 & 0x0f)),
    };
    let mut b = vec![0u8, pattern, 1, p.per_sample_iv_size()];
    b.extend_from_slice(&p.kid);
    if let Some(iv) = p.constant_iv {
        b.push(16);
        b.extend_from_slice(&iv);
    }
    full_box(b"tenc", version, 0, &b)
}

pub fn init_segment(info: &TrackInfo) -> Vec<u8> {
    let ftyp = bx(
        b"ftyp",
        &cat(&[
            b"iso6",
            &0u32.to_be_bytes(),
            b"iso6",
            b"cmfc",
            b"dash",
            b"mp41",
        ]),
    );
    let mvhd = full_box(
        b"mvhd",
        0,
        0,
        &cat(&[
            &[0u8; 8],
            // The movie timescale is the track's, so the edit list is exact to the sample.
            &info.timescale.to_be_bytes(),
            &0u32.to_be_bytes(),
            &0x0001_0000u32.to_be_bytes(),
            &0x0100u16.to_be_bytes(),
            &[0u8; 10],
            &matrix(),
            &[0u8; 24],
            &2u32.to_be_bytes(),
        ]),
    );
    let tkhd = full_box(
        b"tkhd",
        0,
        7,
        &cat(&[
            &[0u8; 8],
            &1u32.to_be_bytes(),
            &[0u8; 4],
            &0u32.to_be_bytes(),
            &[0u8; 8],
            &0u16.to_be_bytes(),
            &0u16.to_be_bytes(),
            &0x0100u16.to_be_bytes(),
            &[0u8; 2],
            &matrix(),
            &[0u8; 8],
        ]),
    );
    let mdhd = full_box(
        b"mdhd",
        0,
        0,
        &cat(&[
            &[0u8; 8],
            &info.timescale.to_be_bytes(),
            &0u32.to_be_bytes(),
            &0x55c4u16.to_be_bytes(), // "und"
            &[0u8; 2],
        ]),
    );
    let hdlr = full_box(
        b"hdlr",
        0,
        0,
        &cat(&[&[0u8; 4], b"soun", &[0u8; 12], b"SoundHandler\0"]),
    );
    let smhd = full_box(b"smhd", 0, 0, &[0u8; 4]);
    let dinf = bx(
        b"dinf",
        &full_box(
            b"dref",
            0,
            0,
            &cat(&[&1u32.to_be_bytes(), &full_box(b"url ", 0, 1, &[])]),
        ),
    );
    let clear_entry = audio_sample_entry(&info.format, info, &[&info.codec_box]);
    let stsd_body = match &info.protection {
        Some(p) => {
            let sinf = bx(
                b"sinf",
                &cat(&[
                    &bx(b"frma", &info.format),
                    &full_box(
                        b"schm",
                        0,
                        0,
                        &cat(&[p.scheme.fourcc(), &0x0001_0000u32.to_be_bytes()]),
                    ),
                    &bx(b"schi", &tenc(p)),
                ]),
            );
            // Entry 1 protected, entry 2 clear: clear-lead fragments point at entry 2.
            let enca = audio_sample_entry(b"enca", info, &[&info.codec_box, &sinf]);
            cat(&[&2u32.to_be_bytes(), &enca, &clear_entry])
        }
        None => cat(&[&1u32.to_be_bytes(), &clear_entry]),
    };
    let stbl = bx(
        b"stbl",
        &cat(&[
            &full_box(b"stsd", 0, 0, &stsd_body),
            &full_box(b"stts", 0, 0, &0u32.to_be_bytes()),
            &full_box(b"stsc", 0, 0, &0u32.to_be_bytes()),
            &full_box(b"stsz", 0, 0, &[0u8; 8]),
            &full_box(b"stco", 0, 0, &0u32.to_be_bytes()),
        ]),
    );
    let minf = bx(b"minf", &cat(&[&smhd, &dinf, &stbl]));
    let mdia = bx(b"mdia", &cat(&[&mdhd, &hdlr, &minf]));
    // The encoder delay as packagers write it (ISO/IEC 14496-12 8.6.6; for Opus, the Opus in
    // ISOBMFF mapping's media_time = pre-skip): one edit presenting the source's samples from
    // media_time on, version 1 so that long durations fit.
    let edts = info.edit.map(|(duration, media_time)| {
        bx(
            b"edts",
            &full_box(
                b"elst",
                1,
                0,
                &cat(&[
                    &1u32.to_be_bytes(),
                    &duration.to_be_bytes(),
                    &(media_time as u64).to_be_bytes(),
                    &1u16.to_be_bytes(),
                    &0u16.to_be_bytes(),
                ]),
            ),
        )
    });
    let trak = bx(
        b"trak",
        &cat(&[&tkhd, edts.as_deref().unwrap_or_default(), &mdia]),
    );
    let trex = full_box(
        b"trex",
        0,
        0,
        &cat(&[
            &1u32.to_be_bytes(),
            &1u32.to_be_bytes(),
            &0u32.to_be_bytes(),
            &0u32.to_be_bytes(),
            &0u32.to_be_bytes(),
        ]),
    );
    let mvex = bx(b"mvex", &trex);
    let pssh = info
        .protection
        .as_ref()
        .map(|p| p.pssh.clone())
        .unwrap_or_default();
    let moov = bx(b"moov", &cat(&[&mvhd, &trak, &mvex, &pssh]));
    cat(&[&ftyp, &moov])
}

/// Per-sample encryption info for `senc`.
#[derive(Debug, Clone, Default)]
pub struct SampleAux {
    pub iv: Vec<u8>,
    /// (clear bytes, protected bytes) pairs; empty for whole-sample encryption.
    pub subsamples: Vec<(u16, u32)>,
}

/// One `moof`+`mdat` fragment. `aux` is Some for an encrypted fragment (one entry a sample),
/// None for a clear one (which then uses the clear sample entry when the track is protected).
pub fn fragment(
    sequence: u32,
    base_time: u64,
    samples: &[(Vec<u8>, u32)],
    protected_track: bool,
    aux: Option<&[SampleAux]>,
) -> Vec<u8> {
    let sdi: u32 = if protected_track && aux.is_none() {
        2
    } else {
        1
    };
    let mfhd = full_box(b"mfhd", 0, 0, &sequence.to_be_bytes());
    // default-base-is-moof | sample-description-index-present
    let tfhd = full_box(
        b"tfhd",
        0,
        0x020002,
        &cat(&[&1u32.to_be_bytes(), &sdi.to_be_bytes()]),
    );
    let tfdt = full_box(b"tfdt", 1, 0, &base_time.to_be_bytes());
    let trun_len = 8 + 4 + 4 + 4 + samples.len() * 8;
    let mut enc_boxes_len = 0;
    let mut senc = Vec::new();
    let mut saiz = Vec::new();
    if let Some(aux) = aux {
        let with_sub = aux.iter().any(|a| !a.subsamples.is_empty());
        let mut body = (aux.len() as u32).to_be_bytes().to_vec();
        let mut sizes = Vec::with_capacity(aux.len());
        for a in aux {
            let start = body.len();
            body.extend_from_slice(&a.iv);
            if with_sub {
                body.extend_from_slice(&(a.subsamples.len() as u16).to_be_bytes());
                for (c, p) in &a.subsamples {
                    body.extend_from_slice(&c.to_be_bytes());
                    body.extend_from_slice(&p.to_be_bytes());
                }
            }
            sizes.push((body.len() - start) as u8);
        }
        senc = full_box(b"senc", 0, if with_sub { 2 } else { 0 }, &body);
        if sizes.iter().any(|s| *s > 0) {
            let uniform = sizes.windows(2).all(|w| w[0] == w[1]);
            let mut b = vec![if uniform { sizes[0] } else { 0 }];
            b.extend_from_slice(&(sizes.len() as u32).to_be_bytes());
            if !uniform {
                b.extend_from_slice(&sizes);
            }
            saiz = full_box(b"saiz", 0, 0, &b);
            enc_boxes_len = saiz.len() + 20; // + saio
        }
        enc_boxes_len += senc.len();
    }
    let traf_len = 8 + tfhd.len() + tfdt.len() + trun_len + enc_boxes_len;
    let moof_len = 8 + mfhd.len() + traf_len;
    let mut trun_body = Vec::with_capacity(trun_len);
    trun_body.extend_from_slice(&(samples.len() as u32).to_be_bytes());
    trun_body.extend_from_slice(&((moof_len + 8) as i32).to_be_bytes());
    for (data, dur) in samples {
        trun_body.extend_from_slice(&dur.to_be_bytes());
        trun_body.extend_from_slice(&(data.len() as u32).to_be_bytes());
    }
    // data-offset | sample-duration | sample-size
    let trun = full_box(b"trun", 0, 0x000301, &trun_body);
    let mut traf_body = cat(&[&tfhd, &tfdt, &trun]);
    if !saiz.is_empty() {
        // saio points at the first sample's aux data inside senc, relative to the moof.
        let senc_data = 8 + mfhd.len() + 8 + traf_body.len() + saiz.len() + 20 + 16;
        let saio = full_box(
            b"saio",
            0,
            0,
            &cat(&[&1u32.to_be_bytes(), &(senc_data as u32).to_be_bytes()]),
        );
        traf_body.extend_from_slice(&saiz);
        traf_body.extend_from_slice(&saio);
    }
    traf_body.extend_from_slice(&senc);
    let traf = bx(b"traf", &traf_body);
    let moof = bx(b"moof", &cat(&[&mfhd, &traf]));
    debug_assert_eq!(moof.len(), moof_len);
    let mdat_len: usize = samples.iter().map(|(d, _)| d.len()).sum();
    let mut out = moof;
    out.reserve(mdat_len + 8);
    out.extend_from_slice(&((mdat_len + 8) as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for (d, _) in samples {
        out.extend_from_slice(d);
    }
    out
}

/// A `sidx` (version 1) indexing fragments that follow it back to back.
pub fn sidx(timescale: u32, earliest: u64, refs: &[(u32, u32)]) -> Vec<u8> {
    let mut b = cat(&[
        &1u32.to_be_bytes(),
        &timescale.to_be_bytes(),
        &earliest.to_be_bytes(),
        &0u64.to_be_bytes(),
        &0u16.to_be_bytes(),
        &(refs.len() as u16).to_be_bytes(),
    ]);
    for (size, duration) in refs {
        b.extend_from_slice(&(size & 0x7fff_ffff).to_be_bytes());
        b.extend_from_slice(&duration.to_be_bytes());
        b.extend_from_slice(&0x9000_0000u32.to_be_bytes()); // starts with SAP, type 1
    }
    full_box(b"sidx", 1, 0, &b)
}

/// `dfLa`: the FLAC metadata blocks for the sample entry (STREAMINFO only, marked last).
pub fn dfla(streaminfo: &[u8]) -> Vec<u8> {
    let mut b = vec![0x80, 0, 0, streaminfo.len() as u8];
    b.extend_from_slice(streaminfo);
    full_box(b"dfLa", 0, 0, &b)
}

/// `dOps` from an OpusHead (RFC 7845 little-endian header to the ISOBMFF big-endian box).
pub fn dops(opus_head: &[u8]) -> Option<Vec<u8>> {
    if opus_head.len() < 19 || &opus_head[..8] != b"OpusHead" {
        return None;
    }
    let channels = opus_head[9];
    let pre_skip = u16::from_le_bytes([opus_head[10], opus_head[11]]);
    let rate = u32::from_le_bytes([opus_head[12], opus_head[13], opus_head[14], opus_head[15]]);
    let gain = i16::from_le_bytes([opus_head[16], opus_head[17]]);
    let family = opus_head[18];
    let mut b = vec![0u8, channels];
    b.extend_from_slice(&pre_skip.to_be_bytes());
    b.extend_from_slice(&rate.to_be_bytes());
    b.extend_from_slice(&gain.to_be_bytes());
    b.push(family);
    if family != 0 {
        b.extend_from_slice(opus_head.get(19..)?);
    }
    Some(bx(b"dOps", &b))
}

/// `dec3` (ETSI TS 102 366 Annex F) from the first E-AC-3 sync frame.
pub fn dec3(frame: &[u8], data_rate_kbps: u16) -> Option<Vec<u8>> {
    if frame.len() < 8 || frame[0] != 0x0b || frame[1] != 0x77 {
        return None;
    }
    let mut r = BitReader::new(&frame[2..]);
    let _strmtyp = r.bits(2)?;
    let _substreamid = r.bits(3)?;
    let _frmsiz = r.bits(11)?;
    let fscod = r.bits(2)?;
    // fscod2 when fscod is 3, else numblkscod: two bits either way.
    r.bits(2)?;
    let acmod = r.bits(3)?;
    let lfeon = r.bits(1)?;
    let bsid = r.bits(5)?;
    let mut w = BitWriter::default();
    w.put(data_rate_kbps as u32, 13);
    w.put(0, 3); // num_ind_sub - 1
    w.put(fscod, 2);
    w.put(bsid, 5);
    w.put(0, 1); // reserved
    w.put(0, 1); // asvc
    w.put(0, 3); // bsmod: main audio, complete
    w.put(acmod, 3);
    w.put(lfeon, 1);
    w.put(0, 3); // reserved
    w.put(0, 4); // num_dep_sub
    w.put(0, 1); // reserved
    Some(bx(b"dec3", &w.finish()))
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }
    fn bits(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            v = (v << 1) | ((byte >> (7 - self.pos % 8)) & 1) as u32;
            self.pos += 1;
        }
        Some(v)
    }
}

#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    bits: usize,
}

impl BitWriter {
    fn put(&mut self, v: u32, n: usize) {
        for i in (0..n).rev() {
            if self.bits.is_multiple_of(8) {
                self.out.push(0);
            }
            let bit = ((v >> i) & 1) as u8;
            let last = self.out.last_mut().expect("pushed above");
            *last |= bit << (7 - self.bits % 8);
            self.bits += 1;
        }
    }
    fn finish(self) -> Vec<u8> {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(data: &[u8]) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off + 8 <= data.len() {
            let size = u32::from_be_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            out.push((
                String::from_utf8_lossy(&data[off + 4..off + 8]).into(),
                size,
            ));
            off += size;
        }
        assert_eq!(off, data.len(), "boxes must tile the buffer");
        out
    }

    #[test]
    fn fragment_offsets_are_consistent() {
        let samples = vec![(vec![1u8; 100], 960), (vec![2u8; 50], 960)];
        let aux = vec![
            SampleAux {
                iv: vec![0; 8],
                subsamples: vec![],
            };
            2
        ];
        let f = fragment(3, 1920, &samples, true, Some(&aux));
        let b = boxes(&f);
        assert_eq!(b[0].0, "moof");
        assert_eq!(b[1], ("mdat".into(), 158));
        // trun data_offset points right after the mdat header.
        let moof_len = b[0].1;
        let pos = f.windows(4).position(|w| w == b"trun").unwrap();
        let off = i32::from_be_bytes(f[pos + 12..pos + 16].try_into().unwrap());
        assert_eq!(off as usize, moof_len + 8);
        assert_eq!(&f[off as usize..off as usize + 100], &[1u8; 100][..]);
        // saio points at the first IV in senc.
        let saio = f.windows(4).position(|w| w == b"saio").unwrap();
        let senc_data = u32::from_be_bytes(f[saio + 12..saio + 16].try_into().unwrap());
        let senc = f.windows(4).position(|w| w == b"senc").unwrap();
        assert_eq!(senc_data as usize, senc - 4 + 16);
    }

    #[test]
    fn init_segment_tiles_and_protects() {
        let info = TrackInfo {
            timescale: 44100,
            sample_rate: 44100,
            channels: 2,
            sample_size: 16,
            format: *b"fLaC",
            codec_box: dfla(&[0u8; 34]),
            protection: Some(Protection {
                scheme: Scheme::Cbcs,
                kid: [7; 16],
                constant_iv: Some([9; 16]),
                pattern: (1, 9),
                pssh: widevine_pssh(&[[7; 16]], b"B0", Scheme::Cbcs),
            }),
            edit: None,
        };
        let init = init_segment(&info);
        assert!(!init.windows(4).any(|w| w == b"elst"));
        let b = boxes(&init);
        assert_eq!(
            b.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["ftyp", "moov"]
        );
        for needle in [
            &b"enca"[..],
            b"frma",
            b"schm",
            b"tenc",
            b"pssh",
            b"fLaC",
            b"dfLa",
        ] {
            assert!(init.windows(4).any(|w| w == needle));
        }
    }

    #[test]
    fn another_systems_pssh_replaces_the_widevine_one_and_nothing_else() {
        let info = TrackInfo {
            timescale: 44100,
            sample_rate: 44100,
            channels: 2,
            sample_size: 16,
            format: *b"fLaC",
            codec_box: dfla(&[0u8; 34]),
            protection: Some(Protection {
                scheme: Scheme::Cenc,
                kid: [7; 16],
                constant_iv: None,
                pattern: (0, 0),
                pssh: widevine_pssh(&[[7; 16]], b"B0", Scheme::Cenc),
            }),
            edit: None,
        };
        let init = init_segment(&info);
        let other = full_box(b"pssh", 1, 0, &[0x10; 40]);
        let out = with_pssh(&init, &other);
        assert_eq!(boxes(&out).len(), 2);
        let moov = &out[boxes(&out)[0].1 + 8..];
        let kids = boxes(moov);
        assert_eq!(kids.iter().filter(|(t, _)| t == "pssh").count(), 1);
        assert!(out.windows(other.len()).any(|w| w == other));
        assert!(!out
            .windows(WIDEVINE_SYSTEM_ID.len())
            .any(|w| w == WIDEVINE_SYSTEM_ID));
        // Everything before the pssh is the same bytes; only moov's size changed.
        let wv = widevine_pssh(&[[7; 16]], b"B0", Scheme::Cenc);
        assert_eq!(out.len(), init.len() - wv.len() + other.len());
        let moov_at = boxes(&init)[0].1;
        assert_eq!(
            out[moov_at + 8..out.len() - other.len()],
            init[moov_at + 8..init.len() - wv.len()]
        );
    }

    #[test]
    fn priming_is_one_edit_in_the_track_timescale() {
        let info = TrackInfo {
            timescale: 48_000,
            sample_rate: 48_000,
            channels: 2,
            sample_size: 16,
            format: *b"Opus",
            codec_box: vec![],
            protection: None,
            edit: Some((1_152_000, 960)),
        };
        let init = init_segment(&info);
        let at = init.windows(4).position(|w| w == b"elst").unwrap() + 4;
        let elst = &init[at..at + 28];
        // version 1, one entry: segment_duration, media_time, rate 1.0
        assert_eq!(elst[0], 1);
        assert_eq!(u32::from_be_bytes(elst[4..8].try_into().unwrap()), 1);
        assert_eq!(
            u64::from_be_bytes(elst[8..16].try_into().unwrap()),
            1_152_000
        );
        assert_eq!(u64::from_be_bytes(elst[16..24].try_into().unwrap()), 960);
        assert_eq!(&elst[24..28], &[0, 1, 0, 0]);
        let mvhd = init.windows(4).position(|w| w == b"mvhd").unwrap() + 4;
        assert_eq!(
            u32::from_be_bytes(init[mvhd + 12..mvhd + 16].try_into().unwrap()),
            48_000
        );
        // edts sits between tkhd and mdia
        let pos = |n: &[u8]| init.windows(4).position(|w| w == n).unwrap();
        assert!(pos(b"tkhd") < pos(b"edts") && pos(b"edts") < pos(b"mdia"));
    }

    #[test]
    fn dops_converts_endianness() {
        let mut head = b"OpusHead".to_vec();
        head.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0]);
        let d = dops(&head).unwrap();
        assert_eq!(&d[8..], &[0, 2, 0x01, 0x38, 0, 0, 0xbb, 0x80, 0, 0, 0]);
    }
}
