// SPDX-License-Identifier: MPL-2.0
//! The decryption section: widevinedecrypt's sample functions measured in process, beside the
//! criterion bench's figures when a full run runs `cargo bench`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Options;

/// One scheme through one CDM backend, beside the in-process figure of the same run.
#[derive(Debug, Clone)]
pub struct CdmRow {
    pub backend: &'static str,
    pub scheme: &'static str,
    pub mbs: Option<f64>,
    /// This backend's MB/s over `cenc::decrypt_in_place`'s (the element's own AES, in process),
    /// measured right before and after it.
    pub vs_in_process: Option<f64>,
    pub error: Option<String>,
}

/// Each scheme through the in-process Clear Key CDM and through the two FFI backends with the
/// workspace's test modules (built beside the bench), each beside the in-process AES measured
/// around it.
pub(super) fn cdm_rows(opts: &Options) -> Vec<CdmRow> {
    use crate::decrypt::Backend;
    let budget = Duration::from_millis(if opts.quick { 100 } else { 2000 });
    // The modules the workspace built beside this bench binary.
    let dir = &opts.profile_dir;
    let backends = [
        Backend::InProcess,
        Backend::Ocdm(dir.join("libamzmusic_test_ocdm.so")),
        Backend::Chromium(dir.join("libamzmusic_test_chromium_cdm.so")),
    ];
    let mut rows = Vec::new();
    for (name, scheme) in [
        ("cenc", gstwidevinestub::cenc::Scheme::Cenc),
        ("cbcs", gstwidevinestub::cenc::Scheme::Cbcs),
    ] {
        for b in &backends {
            // The in-process AES right before and after, so a machine's drift during the run
            // (another process, the CPU's clock) does not land in the ratio.
            let before = crate::decrypt::measure(scheme, budget).ok();
            let m = crate::decrypt::measure_cdm(b, scheme, budget);
            let after = crate::decrypt::measure(scheme, budget).ok();
            let base = before
                .zip(after)
                .map(|(a, b)| (a.mb_per_s + b.mb_per_s) / 2.0);
            let mbs = m.as_ref().ok().map(|t| t.mb_per_s);
            rows.push(CdmRow {
                backend: b.label(),
                scheme: name,
                mbs,
                vs_in_process: mbs.zip(base).map(|(m, b)| m / b),
                error: m.err().map(|e| format!("{e:#}")),
            });
        }
    }
    rows
}

#[derive(Debug, Clone)]
pub struct DecryptRow {
    pub scheme: &'static str,
    pub in_process_mbs: Option<f64>,
    pub criterion_mbs: Option<f64>,
    pub error: Option<String>,
}

pub(super) fn decrypt_rows(opts: &Options, command: &mut Option<String>) -> Vec<DecryptRow> {
    use gstwidevinestub::cenc::Scheme;
    let budget = Duration::from_millis(if opts.quick { 100 } else { 2000 });
    let mut criterion: BTreeMap<&str, Result<f64, String>> = BTreeMap::new();
    if opts.criterion {
        let cmd = "cargo bench -p gst-plugin-widevine-stub --bench decrypt";
        *command = Some(cmd.into());
        eprintln!("amzmusic-bench: {cmd} …");
        let st =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args([
                    "bench",
                    "-p",
                    "gst-plugin-widevine-stub",
                    "--bench",
                    "decrypt",
                ])
                .current_dir(&opts.repo)
                .status();
        let cdir = opts.repo.join("target").join("criterion");
        for id in ["cenc", "cbcs"] {
            let r = match &st {
                Ok(s) if s.success() => {
                    crate::decrypt::criterion_result(&cdir, &format!("decrypt/{id}"))
                        .map_err(|e| format!("{e:#}"))
                }
                Ok(s) => Err(format!("cargo bench failed: {s}")),
                Err(e) => Err(format!("cannot run cargo: {e}")),
            };
            criterion.insert(id, r);
        }
    }
    [("cenc", Scheme::Cenc), ("cbcs", Scheme::Cbcs)]
        .into_iter()
        .map(|(name, scheme)| {
            let m = crate::decrypt::measure(scheme, budget);
            let c = criterion.remove(name);
            DecryptRow {
                scheme: name,
                in_process_mbs: m.as_ref().ok().map(|t| t.mb_per_s),
                criterion_mbs: c.as_ref().and_then(|r| r.as_ref().ok().copied()),
                error: m
                    .err()
                    .map(|e| format!("{e:#}"))
                    .or_else(|| c.and_then(|r| r.err())),
            }
        })
        .collect()
}
