// SPDX-License-Identifier: MPL-2.0
//! The emulated Amazon services other than the CDN: Login with Amazon, the music API, FireFly
//! GraphQL and the license server (the checks they share are in `checks`), and the env file.

pub mod api;
pub mod checks;
pub mod clearkey;
pub mod graphql;
pub mod images;
pub mod license;
pub mod lwa;
pub mod tokens;

use axum::Router;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::state::AppState;

pub use crate::state::{IssuedAudioObject, ServicesState, LICENSE_PATH};
pub use checks::{
    check_token, injected_error, market, require_api_key, require_bearer, require_scope, ApiError,
    DEFAULT_MARKET, MUSIC_SCOPE,
};

/// The LWA client id and API key the `--env-file` exports name. The emulator accepts any
/// non-empty client id and API key; these are the ones it suggests.
pub const EMULATOR_CLIENT_ID: &str = "amzn1.application-oa2-client.amzmusicemulator";
pub const EMULATOR_API_KEY: &str = "amzn1.application.amzmusicemulator";

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .merge(lwa::router())
        .merge(api::router())
        .merge(graphql::router())
        .merge(license::router())
        .merge(clearkey::router())
        .merge(images::router())
}

/// The token file written next to an env file: `<env-file>.token.json`.
pub fn token_file_path(env_file: &Path) -> PathBuf {
    let mut name = env_file.as_os_str().to_owned();
    name.push(".token.json");
    PathBuf::from(name)
}

/// Writes `export KEY='value'` lines pointing the plugins at this emulator, with a freshly
/// issued token (scope `amazon_music:access`), and the token as JSON in `<path>.token.json`.
/// With `ca_file` (`serve --tls`), `AMAZONMUSIC_CA_FILE` names the CA's PEM and every URL is
/// https.
pub fn write_env_file(state: &AppState, path: &Path, ca_file: Option<&Path>) -> anyhow::Result<()> {
    let base = state.base_url();
    let lifetime = state.config.lock().unwrap().token_lifetime_s;
    let pair = state.services.lwa.lock().unwrap().issue(
        EMULATOR_CLIENT_ID,
        vec![MUSIC_SCOPE.to_string()],
        Duration::from_secs(lifetime),
        Instant::now(),
    );
    let token_file = token_file_path(path);
    let now = crate::signing::now_unix();
    // The shape amzmusic-login writes, so the element reads either file the same way.
    let token_json = json!({
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": "bearer",
        "issued_at": now,
        "expires_at": now + lifetime,
        "expires_in": lifetime,
        "scope": MUSIC_SCOPE,
        "client_id": EMULATOR_CLIENT_ID,
        "lwa_endpoint": base,
        "api_endpoint": base,
        "graphql_endpoint": format!("{base}/graphql"),
        "api_key": EMULATOR_API_KEY,
    });
    write_private(&token_file, &serde_json::to_vec_pretty(&token_json)?)?;
    let mut vars = vec![
        ("AMZMUSIC_EMULATOR_URL", base.to_string()),
        ("AMAZONMUSIC_API_ENDPOINT", base.to_string()),
        ("AMAZONMUSIC_LWA_ENDPOINT", base.to_string()),
        ("AMAZONMUSIC_GRAPHQL_ENDPOINT", format!("{base}/graphql")),
        ("AMAZONMUSIC_API_KEY", EMULATOR_API_KEY.to_string()),
        ("AMAZONMUSIC_CLIENT_ID", EMULATOR_CLIENT_ID.to_string()),
        ("AMAZONMUSIC_ACCESS_TOKEN", pair.access_token.clone()),
        (
            "AMAZONMUSIC_TOKEN_FILE",
            std::path::absolute(&token_file)?.display().to_string(),
        ),
    ];
    if let Some(ca) = ca_file {
        vars.push(("AMAZONMUSIC_CA_FILE", ca.display().to_string()));
    }
    let mut text = String::from("# Written by amzmusic-emulator serve --env-file: source it.\n");
    for (k, v) in vars {
        // Single quotes: tokens contain `|`. Nothing written here contains a single quote.
        text.push_str(&format!("export {k}='{}'\n", v.replace('\'', "")));
    }
    write_private(path, text.as_bytes())?;
    Ok(())
}

/// Writes a file only its owner can read (it holds a token).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}
