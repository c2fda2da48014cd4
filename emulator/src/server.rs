//! The HTTP server: CDN, services, admin endpoints, shaping and faults on one port.

use anyhow::Result;
use std::path::Path;
use std::sync::Arc;

use crate::content::catalog::Catalog;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: String,
}

pub fn run(_args: ServeArgs, _data_dir: &Path, _catalog: Arc<Catalog>) -> Result<()> {
    anyhow::bail!("serve: not built yet")
}
