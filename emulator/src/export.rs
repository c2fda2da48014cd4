//! The inspection commands' logic: catalogue JSON, source PCM, content keys, and exporting a
//! track as the CDN would serve it, so independent tools can check the packaging.

use anyhow::{anyhow, Context, Result};
use serde_json::json;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::content::catalog::{Addressing, Catalog, KeySystem};
use crate::content::encode::source_pcm;
use crate::content::mpd::{self, UrlStyle};
use crate::content::store::{content_keys, PackagedRep, Store, Variant};
use crate::content::synth::{pack_le, Composition};

/// The catalogue as JSON, with per-representation facts from the packaged content when it
/// exists (bandwidth needs the encoded sizes, so this generates content on first use). Each
/// track is described as served: encrypted with its own scheme, or all clear when `clear`.
pub fn catalog_json(store: &Store, clear: bool) -> Result<serde_json::Value> {
    let c = store.catalog();
    let mut tracks = Vec::new();
    for t in &c.tracks {
        let variant = if clear {
            Variant::Clear
        } else {
            Variant::Encrypted(t.scheme)
        };
        let packaged = if t.lazy {
            None
        } else {
            Some(store.packaged(&t.id, variant)?)
        };
        let reps: Vec<_> = t
            .representations
            .iter()
            .map(|r| {
                let p = packaged.as_ref().and_then(|p| p.rep(r.id));
                json!({
                    "id": r.id,
                    "codec": r.codec.codecs(),
                    "bandwidth": p.map(|p| p.peak_bitrate),
                    "mean_bitrate": p.map(|p| p.mean_bitrate),
                    "sample_rate": r.sample_rate,
                    "bit_depth": r.bit_depth,
                    "channels": r.channels,
                    "quality": r.tier.label(),
                    "lossless": r.is_lossless(),
                    "addressing": ["list", "template", "base"],
                    "encryption": match variant { Variant::Clear => "none", Variant::Encrypted(s) => s.name() },
                    "clear_lead_seconds": crate::content::store::CLEAR_LEAD_SECONDS,
                })
            })
            .collect();
        tracks.push(json!({
            "id": t.id,
            "title": t.title,
            "artist": t.artist,
            "album": t.album,
            "album_id": t.album_id,
            "track_number": t.track_number,
            "disc_number": t.disc_number,
            "duration_ms": t.duration_ms,
            "duration": t.duration_ms as f64 / 1000.0,
            "isrc": t.isrc,
            "explicit": t.explicit,
            "markets": t.markets,
            "lazy": t.lazy,
            "representations": reps,
        }));
    }
    Ok(json!({ "tracks": tracks, "albums": c.albums, "playlists": c.playlists }))
}

/// Writes the source samples a representation was encoded from as raw little-endian PCM: for a
/// lossless one what it decodes to exactly, for a lossy one (16-bit) the reference a decode must
/// line up with from its first sample and match in length.
pub fn write_pcm(
    catalog: &Catalog,
    track_id: &str,
    rep_id: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let t = catalog
        .track(track_id)
        .ok_or_else(|| anyhow!("unknown track {track_id}"))?;
    let r = t
        .representation(rep_id)
        .ok_or_else(|| anyhow!("track {track_id} has no representation {rep_id}"))?;
    let comp = Composition::new(t.seed, t.recording_ms as f64 / 1000.0);
    let (first, end) = t.frame_range(r.sample_rate);
    let mut pos = first;
    while pos < end {
        let n = (r.sample_rate as u64).min(end - pos) as usize;
        out.write_all(&pack_le(&source_pcm(&comp, r, pos, n), r.bit_depth))?;
        pos += n as u64;
    }
    out.flush()?;
    Ok(())
}

/// `KID:KEY` lines, one per content key.
pub fn keys(catalog: &Catalog, track_id: &str) -> Result<Vec<String>> {
    let t = catalog
        .track(track_id)
        .ok_or_else(|| anyhow!("unknown track {track_id}"))?;
    Ok(content_keys(t)
        .into_iter()
        .map(|(_, kid, key)| format!("{}:{}", hex::encode(kid), hex::encode(key)))
        .collect())
}

fn copy_range(rep: &PackagedRep, out: &mut fs::File) -> Result<()> {
    let mut f = fs::File::open(&rep.media_path)?;
    f.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    Ok(())
}

/// Writes `dir/manifest.mpd` and the media files, laid out as the CDN serves them.
pub fn export(
    store: &Store,
    track_id: &str,
    dir: &Path,
    addressing: Addressing,
    variant: Variant,
    license_url: Option<&str>,
) -> Result<()> {
    let t = store
        .catalog()
        .track(track_id)
        .ok_or_else(|| anyhow!("unknown track {track_id}"))?
        .clone();
    let packaged = store.packaged(track_id, variant)?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for rep in &packaged.reps {
        match addressing {
            Addressing::List | Addressing::Base => {
                let mut f = fs::File::create(dir.join(format!("{}.mp4", rep.id)))?;
                f.write_all(&rep.init)?;
                if addressing == Addressing::Base {
                    f.write_all(&rep.sidx())?;
                }
                copy_range(rep, &mut f)?;
            }
            Addressing::Template => {
                let rdir = dir.join(&rep.id);
                fs::create_dir_all(&rdir)?;
                fs::write(rdir.join("init.mp4"), &rep.init)?;
                let mut media = fs::File::open(&rep.media_path)?;
                for (i, s) in rep.segments.iter().enumerate() {
                    let mut buf = vec![0u8; s.size as usize];
                    media.seek(SeekFrom::Start(s.offset))?;
                    media.read_exact(&mut buf)?;
                    fs::write(rdir.join(format!("{:05}.m4s", i + 1)), buf)?;
                }
            }
        }
    }
    let mpd = mpd::write_mpd(
        &t,
        &packaged,
        &t.representations,
        addressing,
        &UrlStyle {
            query: "",
            license_url,
            key_system: KeySystem::Widevine,
        },
    );
    fs::write(dir.join("manifest.mpd"), mpd)?;
    Ok(())
}
