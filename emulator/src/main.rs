//! `amzmusic-emulator`: serve the emulated Amazon Music services, or inspect the content.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

use amzmusic_emulator::content::catalog::{Addressing, Catalog, Scheme};
use amzmusic_emulator::content::store::{default_data_dir, Store, Variant};
use amzmusic_emulator::export;

#[derive(Parser)]
#[command(
    name = "amzmusic-emulator",
    version,
    about = "A local stand-in for the Amazon Music services"
)]
struct Cli {
    /// Where generated content is cached (default: the user's cache dir).
    #[arg(long, global = true, env = "AMZMUSIC_EMULATOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Encrypt every track with this scheme instead of the catalogue's choice.
    #[arg(long, global = true)]
    scheme: Option<Scheme>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the emulated services until killed; prints `ready <base-url>` first.
    Serve(amzmusic_emulator::server::ServeArgs),
    /// Print the catalogue as JSON.
    Catalog,
    /// Write the source samples a representation was encoded from to stdout (raw, LE): exact
    /// for a lossless one, the alignment and length reference for a lossy one (16-bit).
    Pcm {
        id: String,
        #[arg(long)]
        representation: String,
    },
    /// Print one `KID:KEY` line per content key of a track (synthetic content only).
    Keys { id: String },
    /// Write a track's manifest and media files as the CDN serves them.
    Export {
        id: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "list")]
        addressing: Addressing,
        /// Write clear content (no encryption at all).
        #[arg(long)]
        clear: bool,
        /// The `<amz:LicenseUrl>` to write into the manifest.
        #[arg(long)]
        license_url: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let data_dir = cli.data_dir.unwrap_or_else(default_data_dir);
    let catalog = Arc::new(Catalog::builtin(cli.scheme));
    match cli.cmd {
        Cmd::Serve(args) => amzmusic_emulator::server::run(args, &data_dir, catalog),
        Cmd::Catalog => {
            let store = Store::new(&data_dir, catalog)?;
            let v = export::catalog_json(&store, false)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        Cmd::Pcm { id, representation } => {
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            export::write_pcm(&catalog, &id, &representation, &mut lock)
        }
        Cmd::Keys { id } => {
            for line in export::keys(&catalog, &id)? {
                println!("{line}");
            }
            Ok(())
        }
        Cmd::Export {
            id,
            out,
            addressing,
            clear,
            license_url,
        } => {
            let store = Store::new(&data_dir, catalog.clone())?;
            let variant = if clear {
                Variant::Clear
            } else {
                let t = catalog
                    .track(&id)
                    .ok_or_else(|| anyhow::anyhow!("unknown track {id}"))?;
                Variant::Encrypted(t.scheme)
            };
            export::export(
                &store,
                &id,
                &out,
                addressing,
                variant,
                license_url.as_deref(),
            )
        }
    }
}
