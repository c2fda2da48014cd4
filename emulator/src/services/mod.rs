//! The emulated Amazon services other than the CDN: Login with Amazon, the music API, FireFly
//! GraphQL and the license server.

use axum::Router;
use std::path::Path;
use std::sync::Arc;

use crate::server::AppState;

/// Where the license server listens (the manifests' `<amz:LicenseUrl>`).
pub const LICENSE_PATH: &str = "/license/v1/widevine";

/// Runtime state of the services (tokens, device codes, rate limits).
#[derive(Default)]
pub struct ServicesState {}

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
}

/// Writes `KEY=value` shell exports pointing the plugins at this emulator.
pub fn write_env_file(state: &AppState, path: &Path) -> anyhow::Result<()> {
    let base = state.base_url();
    let text = format!(
        "AMZMUSIC_EMULATOR_URL={base}\nAMZMUSIC_API_ENDPOINT={base}\nAMZMUSIC_LWA_ENDPOINT={base}\nAMZMUSIC_GRAPHQL_ENDPOINT={base}/graphql\n"
    );
    std::fs::write(path, text)?;
    Ok(())
}
