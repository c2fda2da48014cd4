//! Encodes rendered PCM with GStreamer's own encoders (flacenc, opusenc, avenc_eac3), streaming
//! frame by frame so that memory stays bounded whatever the track length.

use anyhow::{anyhow, bail, Context, Result};
use gst::prelude::*;
use std::sync::Once;

use super::catalog::{Codec, RepresentationSpec};
use super::synth::{pack_le, quantize, Composition};

/// What the sample entry's codec box needs.
#[derive(Debug, Clone)]
pub enum CodecConfig {
    /// The 34-byte FLAC STREAMINFO block body.
    Flac { streaminfo: Vec<u8> },
    /// The OpusHead identification header (RFC 7845).
    Opus { opus_head: Vec<u8> },
    /// The fields of the first E-AC-3 sync frame a `dec3` box needs.
    Eac3 { first_frame: Vec<u8> },
}

/// One coded frame (an MP4 sample) and its duration in samples at the track's rate.
#[derive(Debug)]
pub struct Frame {
    pub data: Vec<u8>,
    pub duration: u32,
}

static GST_INIT: Once = Once::new();

pub fn init_gst() -> Result<()> {
    let mut res = Ok(());
    GST_INIT.call_once(|| res = gst::init().map_err(|e| anyhow!("GStreamer init: {e}")));
    res
}

/// Frames of `rep` rendered per push: 1 s keeps latency and memory low.
const CHUNK_SECONDS: u64 = 1;

/// The FLAC block size for `rate`: a divisor of a 10 s segment within the streamable subset,
/// so segment boundaries fall exactly on frame boundaries.
pub fn flac_blocksize(rate: u32) -> u32 {
    match rate {
        44_100 => 4_410,
        48_000 => 4_000,
        96_000 => 4_800,
        192_000 => 9_600,
        r => r / 10,
    }
}

/// Samples per coded frame, for codecs whose frame length is fixed.
pub fn frame_samples(rep: &RepresentationSpec) -> u32 {
    match rep.codec {
        Codec::Flac => flac_blocksize(rep.sample_rate),
        Codec::Opus => 960,
        Codec::Eac3 => 1536,
    }
}

/// The encoder delay (priming) of a codec as the emulator packages it, in samples: one whole
/// frame for the lossy codecs, signalled by the init segment's edit list (`elst` media_time)
/// and, for Opus, by the OpusHead pre-skip. A whole frame keeps every segment boundary on a
/// frame boundary in presentation time (Opus: 10 s = 500 frames after the priming frame).
pub fn priming(codec: Codec) -> u32 {
    match codec {
        Codec::Flac => 0,
        Codec::Opus => 960,
        Codec::Eac3 => 1536,
    }
}

/// The delay the encoder itself adds before the first source sample, measured: libopus's
/// lookahead at 48 kHz with 20 ms frames (its OpusHead pre-skip, checked when it arrives) and
/// ffmpeg's E-AC-3 encoder's one block of 256 samples (`avenc_eac3` then `avdec_eac3` puts an
/// impulse 256 samples late).
fn encoder_delay(codec: Codec) -> u32 {
    match codec {
        Codec::Flac => 0,
        Codec::Opus => 312,
        Codec::Eac3 => 256,
    }
}

/// Silence fed to the encoder before the source, so that its delay grows to [`priming`].
fn priming_pad(codec: Codec) -> u32 {
    priming(codec) - encoder_delay(codec)
}

/// The exact source samples a representation encodes: the composition over the track's frame
/// range, quantized to the representation's depth (lossy codecs get 16-bit input).
pub fn source_pcm(
    comp: &Composition,
    rep: &RepresentationSpec,
    first: u64,
    count: usize,
) -> Vec<i32> {
    quantize(
        &comp.render(rep.sample_rate, rep.channels, first, count),
        rep.bit_depth,
    )
}

/// Encodes frames `[first, end)` of `comp` for `rep`, calling `config` once with the codec
/// configuration and `on_frame` for every coded frame in order. The frames of a lossy codec start
/// [`priming`] samples before the source and end with it: the last frame's duration is trimmed to
/// the source's end and frames wholly past it are dropped, as packagers do.
pub fn encode(
    comp: &Composition,
    rep: &RepresentationSpec,
    first: u64,
    end: u64,
    mut config: impl FnMut(CodecConfig) -> Result<()>,
    mut on_frame: impl FnMut(Frame) -> Result<()>,
) -> Result<()> {
    init_gst()?;
    let (format, encoder) = match rep.codec {
        Codec::Flac => (
            if rep.bit_depth == 24 {
                "S24LE"
            } else {
                "S16LE"
            },
            format!(
                "flacenc quality=5 blocksize={} streamable-subset=true",
                flac_blocksize(rep.sample_rate)
            ),
        ),
        // CBR keeps the ladder's rungs where they are named (the manifest's bandwidth is the
        // worst segment): libopus's constrained VBR let one 10 s segment of the 150k rung reach
        // 260 kb/s on transient-heavy music.
        Codec::Opus => (
            "S16LE",
            format!(
                "opusenc bitrate={} bitrate-type=cbr frame-size=20 audio-type=generic",
                rep.target_bitrate
            ),
        ),
        Codec::Eac3 => (
            "F32LE",
            format!("avenc_eac3 bitrate={}", rep.target_bitrate),
        ),
    };
    let mask = match rep.channels {
        1 => 0x4u64,
        2 => 0x3,
        // FL FR FC LFE RL RR
        6 => 0x3f,
        n => bail!("unsupported channel count {n}"),
    };
    let desc = format!(
        "appsrc name=src format=time max-bytes=4000000 block=true \
         caps=audio/x-raw,format={format},layout=interleaved,rate={rate},channels={ch},channel-mask=(bitmask){mask:#x} \
         ! {encoder} ! appsink name=sink sync=false max-buffers=64",
        rate = rep.sample_rate,
        ch = rep.channels,
    );
    let pipeline = gst::parse::launch(&desc)
        .with_context(|| format!("building encoder pipeline for {}", rep.id))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| anyhow!("not a pipeline"))?;
    let appsrc = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| anyhow!("no appsrc"))?;
    let appsink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .ok_or_else(|| anyhow!("no appsink"))?;
    pipeline.set_state(gst::State::Playing)?;

    let rate = rep.sample_rate as u64;
    let comp = comp.clone();
    let rep_c = rep.clone();
    let pad = priming_pad(rep.codec) as u64;
    let pusher = std::thread::spawn(move || -> Result<()> {
        if pad > 0 {
            let bytes_per_sample = match rep_c.codec {
                Codec::Eac3 => 4,
                _ => 2,
            };
            let silence = vec![0u8; pad as usize * rep_c.channels as usize * bytes_per_sample];
            let mut buf = gst::Buffer::from_mut_slice(silence);
            {
                let b = buf.get_mut().expect("new buffer is writable");
                b.set_pts(gst::ClockTime::ZERO);
                b.set_duration(gst::ClockTime::from_nseconds(pad * 1_000_000_000 / rate));
            }
            if appsrc.push_buffer(buf).is_err() {
                return Ok(());
            }
        }
        let mut pos = first;
        while pos < end {
            let n = (rate * CHUNK_SECONDS).min(end - pos) as usize;
            let bytes = match rep_c.codec {
                Codec::Eac3 => comp
                    .render(rep_c.sample_rate, rep_c.channels, pos, n)
                    .iter()
                    .flat_map(|s| (*s as f32).to_le_bytes())
                    .collect(),
                _ => pack_le(&source_pcm(&comp, &rep_c, pos, n), rep_c.bit_depth),
            };
            let mut buf = gst::Buffer::from_mut_slice(bytes);
            {
                let b = buf.get_mut().expect("new buffer is writable");
                let t0 = (pad + pos - first) * 1_000_000_000 / rate;
                let t1 = (pad + pos - first + n as u64) * 1_000_000_000 / rate;
                b.set_pts(gst::ClockTime::from_nseconds(t0));
                b.set_duration(gst::ClockTime::from_nseconds(t1 - t0));
            }
            if appsrc.push_buffer(buf).is_err() {
                // The pipeline went away (error or shutdown); the main loop reports why.
                return Ok(());
            }
            pos += n as u64;
        }
        let _ = appsrc.end_of_stream();
        Ok(())
    });

    // Media time of the next frame, and where the source ends in media time.
    let media_end = priming(rep.codec) as u64 + (end - first);
    let mut media_t = 0u64;
    let result = (|| -> Result<()> {
        let mut configured = false;
        loop {
            let sample = match appsink.pull_sample() {
                Ok(s) => s,
                Err(_) => {
                    if let Some(msg) = pipeline
                        .bus()
                        .and_then(|b| b.pop_filtered(&[gst::MessageType::Error]))
                    {
                        if let gst::MessageView::Error(e) = msg.view() {
                            bail!("encoder for {} failed: {}", rep.id, e.error());
                        }
                    }
                    break;
                }
            };
            let buffer = sample
                .buffer()
                .ok_or_else(|| anyhow!("sample without buffer"))?;
            if !configured {
                let caps = sample
                    .caps()
                    .ok_or_else(|| anyhow!("sample without caps"))?;
                match rep.codec {
                    Codec::Flac => {
                        config(CodecConfig::Flac {
                            streaminfo: flac_streaminfo(caps)?,
                        })?;
                        configured = true;
                    }
                    Codec::Opus => {
                        config(CodecConfig::Opus {
                            opus_head: with_pre_skip(
                                first_streamheader(caps)?,
                                priming_pad(rep.codec),
                            )?,
                        })?;
                        configured = true;
                    }
                    Codec::Eac3 => {}
                }
            }
            if buffer.flags().contains(gst::BufferFlags::HEADER) {
                continue;
            }
            let map = buffer.map_readable()?;
            let data = map.as_slice().to_vec();
            if rep.codec == Codec::Eac3 && !configured {
                config(CodecConfig::Eac3 {
                    first_frame: data.clone(),
                })?;
                configured = true;
            }
            let coded = match rep.codec {
                Codec::Flac => flac_frame_blocksize(&data)
                    .ok_or_else(|| anyhow!("flacenc produced a buffer that is not a frame"))?,
                Codec::Opus => 960,
                Codec::Eac3 => 1536,
            };
            if media_t >= media_end {
                // Wholly past the source's end: the encoder's flush of its lookahead.
                continue;
            }
            let duration = (coded as u64).min(media_end - media_t) as u32;
            media_t += duration as u64;
            on_frame(Frame { data, duration })?;
        }
        Ok(())
    })();
    let _ = pipeline.set_state(gst::State::Null);
    pusher
        .join()
        .map_err(|_| anyhow!("PCM pusher thread panicked"))??;
    result
}

/// The OpusHead with its pre-skip grown by `pad` samples of silence fed before the source,
/// checked against the delay [`priming`] assumes (a libopus that primed differently would
/// otherwise shift every Opus rung silently).
fn with_pre_skip(mut head: Vec<u8>, pad: u32) -> Result<Vec<u8>> {
    if head.len() < 19 || !head.starts_with(b"OpusHead") {
        bail!("opusenc's first header is not an OpusHead");
    }
    let own = u16::from_le_bytes([head[10], head[11]]) as u32;
    if own != encoder_delay(Codec::Opus) {
        bail!(
            "opusenc's pre-skip is {own} samples, not the {} this emulator primes for",
            encoder_delay(Codec::Opus)
        );
    }
    head[10..12].copy_from_slice(&((own + pad) as u16).to_le_bytes());
    Ok(head)
}

fn first_streamheader(caps: &gst::CapsRef) -> Result<Vec<u8>> {
    streamheaders(caps)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("no streamheader"))
}

fn streamheaders(caps: &gst::CapsRef) -> Result<Vec<Vec<u8>>> {
    let s = caps.structure(0).ok_or_else(|| anyhow!("empty caps"))?;
    let arr = s
        .get::<gst::ArrayRef>("streamheader")
        .map_err(|_| anyhow!("encoder caps carry no streamheader: {caps}"))?;
    arr.iter()
        .map(|v| {
            let b = v.get::<gst::Buffer>()?;
            let m = b.map_readable()?;
            Ok(m.as_slice().to_vec())
        })
        .collect()
}

/// The STREAMINFO body out of flacenc's streamheader (`fLaC` marker, then metadata blocks).
fn flac_streaminfo(caps: &gst::CapsRef) -> Result<Vec<u8>> {
    for h in streamheaders(caps)? {
        // GStreamer's first FLAC header buffer is "\x7fFLAC" + version + count + "fLaC" + block.
        let body = if h.starts_with(b"\x7fFLAC") {
            &h[9..]
        } else {
            &h[..]
        };
        let body = body.strip_prefix(b"fLaC").unwrap_or(body);
        if body.len() >= 38 && body[0] & 0x7f == 0 {
            return Ok(body[4..38].to_vec());
        }
    }
    bail!("no STREAMINFO in flacenc's streamheader")
}

/// The block size of a FLAC frame from its header (RFC 9639 §9.1), or None if not a frame.
pub fn flac_frame_blocksize(frame: &[u8]) -> Option<u32> {
    if frame.len() < 6 || frame[0] != 0xff || frame[1] & 0xfe != 0xf8 {
        return None;
    }
    let bs_code = frame[2] >> 4;
    // Skip the UTF-8 coded frame/sample number to reach the optional block-size bytes.
    let lead = frame[4];
    let num_len = if lead & 0x80 == 0 {
        1
    } else {
        (lead.leading_ones() as usize).max(1)
    };
    let p = 4 + num_len;
    match bs_code {
        1 => Some(192),
        2..=5 => Some(576 << (bs_code - 2)),
        6 => frame.get(p).map(|b| *b as u32 + 1),
        7 => frame
            .get(p..p + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]) as u32 + 1),
        8..=15 => Some(256 << (bs_code - 8)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flac_blocksizes_divide_ten_seconds() {
        for r in [44_100u32, 48_000, 96_000, 192_000] {
            assert_eq!((r * 10) % flac_blocksize(r), 0);
        }
    }

    #[test]
    fn flac_frame_header_blocksize() {
        // sync, blocksize code 7 (16-bit follows), rate code 9; frame number 0; bs-1 = 4409
        let f = [0xff, 0xf8, 0x79, 0x08, 0x00, 0x11, 0x39, 0x00];
        assert_eq!(flac_frame_blocksize(&f), Some(4410));
        assert_eq!(flac_frame_blocksize(&[0, 1, 2, 3, 4, 5]), None);
    }
}
