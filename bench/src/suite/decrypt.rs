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
    /// This backend's MB/s over `cenc::decrypt_in_place`'s (the element's own AES, in process).
    pub vs_in_process: Option<f64>,
    pub error: Option<String>,
}

/// Each scheme through the in-process Clear Key CDM and through the two FFI backends with the
/// workspace's test modules (built beside the bench), beside `in_process` MB/s per scheme.
pub(super) fn cdm_rows(opts: &Options, in_process: &[DecryptRow]) -> Vec<CdmRow> {
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
        let base = in_process
            .iter()
            .find(|r| r.scheme == name)
            .and_then(|r| r.in_process_mbs);
        for b in &backends {
            let m = crate::decrypt::measure_cdm(b, scheme, budget);
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
