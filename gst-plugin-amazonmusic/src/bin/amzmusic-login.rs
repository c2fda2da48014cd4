// SPDX-License-Identifier: MPL-2.0
//! `amzmusic-login`: signs in with Login with Amazon's device authorization flow and writes
//! the token file `amazonmusicsrc` reads (0600, replaced atomically).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;

use gstamazonmusic::config::{self, default_user_agent};
use gstamazonmusic::http::{self, Secret, API_RETRY, RUNTIME};
use gstamazonmusic::token::{
    default_token_path, now_unix, CodePair, LwaClient, PollOutcome, TokenError, TokenFile, SCOPE,
};

#[derive(Parser, Debug)]
#[command(
    name = "amzmusic-login",
    version,
    about = "Sign in to Amazon Music (Login with Amazon device authorization) and write the token file amazonmusicsrc uses"
)]
struct Args {
    /// Base URL of Login with Amazon.
    #[arg(long, env = config::ENV_LWA_ENDPOINT)]
    lwa_endpoint: String,
    /// The LWA client id (security profile) of this application.
    #[arg(long, env = config::ENV_CLIENT_ID)]
    client_id: String,
    /// Where to write the tokens (default: $AMAZONMUSIC_TOKEN_FILE, then
    /// ~/.config/amazonmusic/token.json).
    #[arg(long, env = config::ENV_TOKEN_FILE)]
    token_file: Option<PathBuf>,
    /// Scopes to ask for, space-separated.
    #[arg(long, default_value = SCOPE)]
    scope: String,
    /// Music API base URL, recorded in the token file for the element.
    #[arg(long, env = config::ENV_API_ENDPOINT)]
    api_endpoint: Option<String>,
    /// FireFly GraphQL URL, recorded in the token file for the element.
    #[arg(long, env = config::ENV_GRAPHQL_ENDPOINT)]
    graphql_endpoint: Option<String>,
    /// Application API key (x-api-key), recorded in the token file for the element.
    #[arg(long, env = config::ENV_API_KEY, hide_env_values = true)]
    api_key: Option<String>,
    /// Market (ISO country code), recorded in the token file for the element.
    #[arg(long, env = config::ENV_MARKET)]
    market: Option<String>,
    /// Device id and type, recorded in the token file (FireFly auth).
    #[arg(long)]
    device_id: Option<String>,
    #[arg(long)]
    device_type: Option<String>,
    /// Seconds between polls instead of the interval the server asks for. Polling faster
    /// earns `slow_down` answers, after which the tool waits longer.
    #[arg(long)]
    poll_interval: Option<f64>,
    /// How many times to start over with a new code when one expires unused.
    #[arg(long, default_value_t = 3)]
    max_restarts: u32,
    /// Give up after this many seconds in total.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
}

fn main() {
    let args = Args::parse();
    match RUNTIME.block_on(run(args)) {
        Ok(path) => {
            println!("Signed in. Tokens written to {}", path.display());
        }
        Err(e) => {
            eprintln!("amzmusic-login: {e:#}");
            std::process::exit(1);
        }
    }
}

fn print_code(pair: &CodePair) {
    println!(
        "To sign in, open {} and enter the code {} (valid for {} s).",
        pair.verification_uri, pair.user_code, pair.expires_in
    );
}

async fn run(args: Args) -> Result<PathBuf> {
    let path = args
        .token_file
        .clone()
        .or_else(default_token_path)
        .ok_or_else(|| anyhow!("no --token-file and no config directory to put one in"))?;
    let http =
        http::client(&default_user_agent(), &http::TlsProxy::default()).map_err(|e| anyhow!(e))?;
    let lwa = LwaClient::new(http, &args.lwa_endpoint, &args.client_id, API_RETRY);
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut restarts = 0;
    'pairs: loop {
        let pair = lwa
            .create_code_pair(&args.scope)
            .await
            .context("asking Login with Amazon for a code")?;
        print_code(&pair);
        let pair_deadline = Instant::now() + Duration::from_secs(pair.expires_in.max(1));
        let mut interval = match args.poll_interval {
            Some(s) if s > 0.0 => Duration::from_secs_f64(s),
            _ => Duration::from_secs(pair.interval.max(1)),
        };
        let step = Duration::from_secs(pair.interval.max(1));
        loop {
            if Instant::now() >= deadline {
                bail!("gave up after {} s without an approval", args.timeout);
            }
            tokio::time::sleep(interval).await;
            let outcome = if Instant::now() >= pair_deadline {
                PollOutcome::Expired
            } else {
                lwa.poll(&pair).await.map_err(|e| match e {
                    TokenError::Refused { code, message } => {
                        anyhow!("Login with Amazon refused the sign-in ({code}): {message}")
                    }
                    e => anyhow!(e),
                })?
            };
            match outcome {
                PollOutcome::Pending => continue,
                PollOutcome::SlowDown => {
                    // Poll less often from now on, by one server interval each time.
                    interval += step;
                    eprintln!(
                        "Login with Amazon asks to slow down: polling every {:.1} s",
                        interval.as_secs_f64()
                    );
                }
                PollOutcome::Expired => {
                    restarts += 1;
                    if restarts > args.max_restarts {
                        bail!(
                            "the code expired {} time(s) without an approval; run amzmusic-login again",
                            restarts
                        );
                    }
                    eprintln!("The code expired before it was approved; here is a new one.");
                    continue 'pairs;
                }
                PollOutcome::Granted(answer) => {
                    let mut file = TokenFile {
                        scope: Some(args.scope.clone()),
                        client_id: Some(args.client_id.clone()),
                        lwa_endpoint: Some(args.lwa_endpoint.clone()),
                        api_endpoint: args.api_endpoint.clone(),
                        graphql_endpoint: args.graphql_endpoint.clone(),
                        api_key: args.api_key.clone().map(Secret::new),
                        market: args.market.clone(),
                        device_id: args.device_id.clone(),
                        device_type: args.device_type.clone(),
                        ..Default::default()
                    };
                    file.apply(&answer, now_unix());
                    file.save_atomic(&path)?;
                    return Ok(path);
                }
            }
        }
    }
}
