// SPDX-License-Identifier: MPL-2.0
//! The decryption section: widevinedecrypt's sample functions measured in process, beside the
//! criterion bench's figures when a full run runs `cargo bench`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Options;

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
