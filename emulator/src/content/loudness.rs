// SPDX-License-Identifier: MPL-2.0
//! The loudness a track's manifest reports (`urn:mpeg:mpegB:cicp:ProgramLoudness`), measured
//! on the track's source: ITU-R BS.1770-4 integrated loudness with EBU R128 gating, by the
//! `ebur128` crate, on the composition rendered at 48 kHz stereo over the track's range.
//! Every representation is an encoding of that programme, so one figure serves the manifest.

use anyhow::{anyhow, Result};

use super::catalog::TrackSpec;
use super::synth::Composition;

/// The rate the programme is measured at.
const RATE: u32 = 48_000;

/// Integrated loudness of `track`'s source, in LUFS.
pub fn programme_loudness(track: &TrackSpec) -> Result<f64> {
    let comp = Composition::new(track.seed, track.recording_ms as f64 / 1000.0);
    let (first, end) = track.frame_range(RATE);
    let mut meter = ebur128::EbuR128::new(2, RATE, ebur128::Mode::I)
        .map_err(|e| anyhow!("loudness meter: {e}"))?;
    let mut pos = first;
    while pos < end {
        let n = (RATE as u64).min(end - pos) as usize;
        meter
            .add_frames_f64(&comp.render(RATE, 2, pos, n))
            .map_err(|e| anyhow!("loudness meter: {e}"))?;
        pos += n as u64;
    }
    let lufs = meter
        .loudness_global()
        .map_err(|e| anyhow!("loudness meter: {e}"))?;
    if !lufs.is_finite() {
        return Err(anyhow!("{}: the source is silent", track.id));
    }
    Ok(lufs)
}

/// A loudness as the service's manifests write it: `-13.5 LUFS`.
pub fn manifest_value(lufs: f64) -> String {
    format!("{lufs:.1} LUFS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_services_format() {
        assert_eq!(manifest_value(-13.549), "-13.5 LUFS");
        assert_eq!(manifest_value(-9.0), "-9.0 LUFS");
    }
}
