// SPDX-License-Identifier: MPL-2.0
//! Resolves what the source runs with (property > environment > token file > default) and
//! which qualities to ask for given the decoders that are installed.

use std::path::PathBuf;

use crate::http::Secret;
use crate::token::{default_token_path, TokenFile, TokenSource};
use amzmusic_common::http::TlsProxy;

pub const ENV_API_ENDPOINT: &str = "AMAZONMUSIC_API_ENDPOINT";
pub const ENV_LWA_ENDPOINT: &str = "AMAZONMUSIC_LWA_ENDPOINT";
pub const ENV_GRAPHQL_ENDPOINT: &str = "AMAZONMUSIC_GRAPHQL_ENDPOINT";
pub const ENV_API_KEY: &str = "AMAZONMUSIC_API_KEY";
pub const ENV_CLIENT_ID: &str = "AMAZONMUSIC_CLIENT_ID";
pub const ENV_TOKEN_FILE: &str = "AMAZONMUSIC_TOKEN_FILE";
pub const ENV_ACCESS_TOKEN: &str = "AMAZONMUSIC_ACCESS_TOKEN";
pub const ENV_MARKET: &str = "AMAZONMUSIC_MARKET";

pub const DEFAULT_MARKET: &str = "US";
pub const DEFAULT_DEVICE_TYPE: &str = "A1GSTAMZMUSIC";

pub fn default_user_agent() -> String {
    format!(
        "gst-amazonmusic/{} GStreamer/{}",
        env!("CARGO_PKG_VERSION"),
        gst::version_string()
    )
}

/// What the element's properties say (None: not set).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub api_endpoint: Option<String>,
    pub lwa_endpoint: Option<String>,
    pub graphql_endpoint: Option<String>,
    pub api_key: Option<Secret>,
    pub client_id: Option<String>,
    pub access_token: Option<Secret>,
    pub refresh_token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub device_id: Option<String>,
    pub device_type: Option<String>,
    pub market: Option<String>,
    pub user_agent: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub proxy: Option<String>,
    pub feature_flags: Option<String>,
}

/// What the source runs with.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub api_endpoint: String,
    pub lwa_endpoint: Option<String>,
    pub graphql_endpoint: Option<String>,
    pub api_key: Option<Secret>,
    pub client_id: Option<String>,
    pub tokens: TokenSource,
    pub device_id: String,
    pub device_type: String,
    pub market: String,
    pub user_agent: String,
    /// `ca-file` and `proxy` (the environment's CA file is read when the client is built).
    pub tls: TlsProxy,
    pub feature_flags: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no music API endpoint: set the api-endpoint property or {ENV_API_ENDPOINT}, or run `amzmusic-login --api-endpoint …` so the token file records it")]
    NoApiEndpoint,
    #[error("no access token: run `amzmusic-login` (token file {0}), or set the access-token property or {ENV_ACCESS_TOKEN}")]
    NoToken(String),
    #[error("{0}")]
    TokenFile(String),
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Applies the precedence: a property overrides the environment, which overrides the token
/// file. `env` looks a variable up (the process environment in the element).
pub fn resolve(
    p: &Overrides,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Resolved, ConfigError> {
    let env = |k: &str| non_empty(env(k));
    let explicit_file = p
        .token_file
        .clone()
        .or_else(|| env(ENV_TOKEN_FILE).map(PathBuf::from));
    let file_path = explicit_file.clone().or_else(default_token_path);
    let file = match &file_path {
        Some(path) if path.exists() => {
            Some(TokenFile::load(path).map_err(|e| ConfigError::TokenFile(e.to_string()))?)
        }
        _ => None,
    };
    let f = file.clone().unwrap_or_default();

    let prop_or_env_token = p
        .access_token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| env(ENV_ACCESS_TOKEN).map(Secret::new));
    let refresh_from_prop = p.refresh_token.clone().filter(|t| !t.is_empty());
    let refresh_token = refresh_from_prop.clone().or(f.refresh_token.clone());
    let mut tokens = TokenFile {
        refresh_token: refresh_token.clone(),
        ..f.clone()
    };
    if let Some(t) = prop_or_env_token {
        // A token from outside comes with no lifetime: refresh on 401 only.
        tokens.access_token = t;
        tokens.issued_at = 0;
        tokens.expires_at = 0;
    }
    if tokens.access_token.is_empty() && refresh_token.is_none() {
        return Err(ConfigError::NoToken(
            file_path
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "unknown".into()),
        ));
    }
    // Write refreshed tokens back only to the file the refresh token came from.
    let write_back = if refresh_from_prop.is_none() && file.is_some() {
        file_path.clone()
    } else {
        None
    };

    let api_endpoint = non_empty(p.api_endpoint.clone())
        .or_else(|| env(ENV_API_ENDPOINT))
        .or(f.api_endpoint.clone())
        .ok_or(ConfigError::NoApiEndpoint)?;
    let lwa_endpoint = non_empty(p.lwa_endpoint.clone())
        .or_else(|| env(ENV_LWA_ENDPOINT))
        .or(f.lwa_endpoint.clone());
    let graphql_endpoint = non_empty(p.graphql_endpoint.clone())
        .or_else(|| env(ENV_GRAPHQL_ENDPOINT))
        .or(f.graphql_endpoint.clone());
    let api_key = p
        .api_key
        .clone()
        .filter(|k| !k.is_empty())
        .or_else(|| env(ENV_API_KEY).map(Secret::new))
        .or(f.api_key.clone());
    let client_id = non_empty(p.client_id.clone())
        .or_else(|| env(ENV_CLIENT_ID))
        .or(f.client_id.clone());
    let market = non_empty(p.market.clone())
        .or_else(|| env(ENV_MARKET))
        .or(f.market.clone())
        .unwrap_or_else(|| DEFAULT_MARKET.into())
        .to_ascii_uppercase();
    let device_id = non_empty(p.device_id.clone())
        .or(f.device_id.clone())
        .unwrap_or_else(random_device_id);
    let device_type = non_empty(p.device_type.clone())
        .or(f.device_type.clone())
        .unwrap_or_else(|| DEFAULT_DEVICE_TYPE.into());
    Ok(Resolved {
        api_endpoint,
        lwa_endpoint,
        graphql_endpoint,
        api_key,
        client_id,
        tokens: TokenSource { tokens, write_back },
        device_id,
        device_type,
        market,
        user_agent: non_empty(p.user_agent.clone()).unwrap_or_else(default_user_agent),
        tls: TlsProxy {
            ca_file: p.ca_file.clone(),
            proxy: p.proxy.clone(),
        },
        feature_flags: p.feature_flags.clone().unwrap_or_default(),
    })
}

/// A device id for this run when none is configured (32 hex digits).
pub fn random_device_id() -> String {
    (0..16)
        .map(|_| format!("{:02X}", rand::random::<u8>()))
        .collect()
}

/// The `quality` property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    Auto,
    Sd,
    Hd,
    Uhd,
    Atmos,
    Ra360,
}

/// A decoder the source knows, and the package that ships it.
pub struct Decoder {
    pub codec: &'static str,
    pub element: &'static str,
    pub package: &'static str,
}

/// DASH `codecs` values of the catalogue and the GStreamer decoders that play them.
pub const DECODERS: &[Decoder] = &[
    Decoder {
        codec: "flac",
        element: "flacdec",
        package: "gst-plugins-good",
    },
    Decoder {
        codec: "opus",
        element: "opusdec",
        package: "gst-plugins-base",
    },
    Decoder {
        codec: "ec-3",
        element: "avdec_eac3",
        package: "gst-libav",
    },
    Decoder {
        codec: "ac-3",
        element: "avdec_ac3",
        package: "gst-libav",
    },
    Decoder {
        codec: "mp4a",
        element: "avdec_aac",
        package: "gst-libav",
    },
];

pub fn decoder_for(codec: &str) -> Option<&'static Decoder> {
    let c = codec.trim().to_ascii_lowercase();
    DECODERS
        .iter()
        .find(|d| c == d.codec || c.starts_with(&format!("{}.", d.codec)))
}

/// The `X-Amzn-Audio-Device-Capability` value for `quality`. `auto` lists what the installed
/// decoders play (`has` says whether an element exists): flacdec gives HD and UHD, avdec_eac3
/// gives ATMOS, opusdec gives SD. Err names the plugins to install when nothing is playable.
pub fn capability(quality: Quality, has: impl Fn(&str) -> bool) -> Result<String, String> {
    let list: &[&str] = match quality {
        Quality::Sd => &["SD"],
        Quality::Hd => &["SD", "HD"],
        Quality::Uhd => &["SD", "HD", "UHD"],
        Quality::Atmos => &["SD", "HD", "UHD", "ATMOS"],
        Quality::Ra360 => &["SD", "HD", "UHD", "360RA"],
        Quality::Auto => {
            let mut v = Vec::new();
            if has("opusdec") {
                v.push("SD");
            }
            if has("flacdec") {
                v.extend(["HD", "UHD"]);
            }
            if has("avdec_eac3") {
                v.push("ATMOS");
            }
            if v.is_empty() {
                return Err(
                    "no decoder for any Amazon Music format is installed: install \
                            opusdec (gst-plugins-base) or flacdec (gst-plugins-good)"
                        .into(),
                );
            }
            return Ok(v.join(","));
        }
    };
    Ok(list.join(","))
}

/// Checks that at least one of the manifest's `codecs` can be decoded here. Err names the
/// decoders (and packages) that are missing.
pub fn check_playable(codecs: &[String], has: impl Fn(&str) -> bool) -> Result<(), String> {
    if codecs.is_empty() {
        return Ok(());
    }
    let mut missing = Vec::new();
    for c in codecs {
        match decoder_for(c) {
            Some(d) if has(d.element) => return Ok(()),
            Some(d) => missing.push(format!("{} ({}, for {})", d.element, d.package, c)),
            None => missing.push(format!("a decoder for codec {c:?}")),
        }
    }
    Err(format!(
        "no installed decoder plays any format this track is offered in; install {}",
        missing.join(" or ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn write_file(dir: &std::path::Path) -> PathBuf {
        let path = dir.join("token.json");
        TokenFile {
            access_token: Secret::new("Atza|file"),
            refresh_token: Some(Secret::new("Atzr|file")),
            issued_at: 1,
            expires_at: 3601,
            api_endpoint: Some("http://file-api".into()),
            market: Some("jp".into()),
            client_id: Some("file-client".into()),
            ..Default::default()
        }
        .save_atomic(&path)
        .unwrap();
        path
    }

    #[test]
    fn property_beats_environment_beats_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path());
        let p = Overrides {
            token_file: Some(path.clone()),
            ..Default::default()
        };
        let r = resolve(&p, env_of(&[])).unwrap();
        assert_eq!(r.api_endpoint, "http://file-api");
        assert_eq!(r.market, "JP");
        assert_eq!(r.tokens.tokens.access_token.expose(), "Atza|file");
        assert_eq!(r.tokens.write_back.as_deref(), Some(path.as_path()));

        let env = env_of(&[
            (ENV_API_ENDPOINT, "http://env-api"),
            (ENV_MARKET, "DE"),
            (ENV_ACCESS_TOKEN, "Atza|env"),
        ]);
        let r = resolve(&p, &env).unwrap();
        assert_eq!(r.api_endpoint, "http://env-api");
        assert_eq!(r.market, "DE");
        assert_eq!(r.tokens.tokens.access_token.expose(), "Atza|env");
        // The file's refresh token still refreshes an outside token, and gets the result.
        assert_eq!(
            r.tokens.tokens.refresh_token.as_ref().unwrap().expose(),
            "Atzr|file"
        );
        assert_eq!(r.tokens.tokens.expires_at, 0);

        let p2 = Overrides {
            api_endpoint: Some("http://prop-api".into()),
            market: Some("fr".into()),
            access_token: Some(Secret::new("Atza|prop")),
            client_id: Some("prop-client".into()),
            ..p
        };
        let r = resolve(&p2, &env).unwrap();
        assert_eq!(r.api_endpoint, "http://prop-api");
        assert_eq!(r.market, "FR");
        assert_eq!(r.tokens.tokens.access_token.expose(), "Atza|prop");
        assert_eq!(r.client_id.as_deref(), Some("prop-client"));
    }

    #[test]
    fn environment_names_the_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_file(dir.path());
        let env = env_of(&[(ENV_TOKEN_FILE, path.to_str().unwrap())]);
        let r = resolve(&Overrides::default(), env).unwrap();
        assert_eq!(r.client_id.as_deref(), Some("file-client"));
    }

    #[test]
    fn missing_token_and_endpoint_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let p = Overrides {
            token_file: Some(dir.path().join("none.json")),
            ..Default::default()
        };
        let e = resolve(&p, env_of(&[])).unwrap_err();
        assert!(e.to_string().contains("amzmusic-login"), "{e}");
        let e = resolve(&p, env_of(&[(ENV_ACCESS_TOKEN, "Atza|x")])).unwrap_err();
        assert_eq!(e, ConfigError::NoApiEndpoint);
    }

    #[test]
    fn auto_quality_follows_decoders() {
        let all = |_: &str| true;
        assert_eq!(capability(Quality::Auto, all).unwrap(), "SD,HD,UHD,ATMOS");
        let only_opus = |e: &str| e == "opusdec";
        assert_eq!(capability(Quality::Auto, only_opus).unwrap(), "SD");
        let no_eac3 = |e: &str| e != "avdec_eac3";
        assert_eq!(capability(Quality::Auto, no_eac3).unwrap(), "SD,HD,UHD");
        let none = |_: &str| false;
        let e = capability(Quality::Auto, none).unwrap_err();
        assert!(e.contains("flacdec") && e.contains("opusdec"), "{e}");
        assert_eq!(capability(Quality::Hd, none).unwrap(), "SD,HD");
    }

    #[test]
    fn playable_check_names_missing_plugins() {
        let codecs = vec!["flac".to_string(), "opus".to_string()];
        assert!(check_playable(&codecs, |e| e == "opusdec").is_ok());
        let e = check_playable(&codecs, |_| false).unwrap_err();
        assert!(
            e.contains("flacdec (gst-plugins-good") && e.contains("opusdec"),
            "{e}"
        );
        let e = check_playable(&["ec-3".to_string()], |_| false).unwrap_err();
        assert!(e.contains("avdec_eac3 (gst-libav"), "{e}");
    }
}
