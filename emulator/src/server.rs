// SPDX-License-Identifier: MPL-2.0
//! The HTTP server: CDN, services and admin endpoints on one port, every service response paced
//! by the shaper, every request logged and open to fault injection. It composes the routers
//! over one [`AppState`]; no service imports this module.

use anyhow::{Context, Result};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cdn;
use crate::content::catalog::{Addressing, Catalog, KeySystem};
use crate::content::store::Store;
use crate::observe::{self, FaultAction, FaultRule, LoggedRequest};
use crate::services;
use crate::shaping::{paced_body, Schedule};
use crate::tls::Connection;

pub use crate::config::Config;
pub use crate::state::AppState;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: String,
    /// Also serve an unauthenticated clear mirror at /open/<id>/manifest.mpd (SegmentTemplate).
    #[arg(long)]
    pub open_mirror: bool,
    /// Addressing of the manifests the CDN hands out: list (as the service), template or base.
    #[arg(long, default_value = "list")]
    pub addressing: Addressing,
    /// The DRM system encrypted content is offered for: widevine (Amazon's) or clearkey (a
    /// Common System pssh and the emulator's Clear Key license server, for Clear Key CDMs).
    #[arg(long, default_value = "widevine", env = "AMZMUSIC_EMULATOR_KEY_SYSTEM")]
    pub key_system: KeySystem,
    /// Shape the network with a named scenario (stable-high, stable-low, wifi-to-4g, outage,
    /// noisy-mobile).
    #[arg(long)]
    pub network: Option<String>,
    /// Seed of the network scenario.
    #[arg(long, default_value_t = 1)]
    pub seed: u32,
    /// Shape the network with a trace file (`seconds kbps latency_ms [outage]` lines, or JSON).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Seconds an audio object (its manifest and segment URLs and headers) stays valid.
    #[arg(long, default_value_t = 3600)]
    pub audio_object_lifetime: u64,
    /// Seconds an LWA access token stays valid.
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime: u64,
    /// Seconds the emulator's clock runs ahead of this machine's (negative: behind): what its
    /// audio objects expire by and its `Date` header says.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_offset: i64,
    /// Seconds an LWA device code (and its user code) stays valid.
    #[arg(long, default_value_t = 600)]
    pub device_code_lifetime: u64,
    /// Seconds a device must wait between two token polls (the codepair's `interval`).
    #[arg(long, default_value_t = 5)]
    pub device_poll_interval: u64,
    /// Seconds a license stays valid unless the request's `x-amz-music-license-expiration-secs`
    /// says otherwise; 0 means it never expires.
    #[arg(long, default_value_t = 3600)]
    pub license_duration: u64,
    /// FireFly GraphQL requests per second per API key (also the burst); 0 means unlimited.
    #[arg(long, default_value_t = 25)]
    pub graphql_rate_limit: u32,
    /// Write shell exports pointing the plugins at this emulator to this file.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Serve HTTPS with a CA made at start (written to <env-file>.ca.pem, or
    /// <data-dir>/emulator-ca.pem, and exported as AMAZONMUSIC_CA_FILE). Plain HTTP on the
    /// port is then for the admin API (/_emulator/) only.
    #[arg(long, env = "AMZMUSIC_EMULATOR_TLS")]
    pub tls: bool,
}

pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(cdn::router())
        .merge(services::router())
        .merge(admin_router())
        .fallback(|| async { cdn::error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(middleware::from_fn_with_state(state.clone(), observe_layer))
        .with_state(state)
}

/// Logs every request and applies injected faults and the link's latency and outages.
async fn observe_layer(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let at_ms = state.log.now_ms();
    let method = req.method().as_str().to_string();
    let path = observe::redact_uri(req.uri());
    let service = observe::service_of(req.uri().path()).to_string();
    let headers = observe::loggable_headers(req.headers());
    let http_version = format!("{:?}", req.version());
    let admin = service == "admin";
    let conn = req.extensions().get::<Connection>().copied();
    let tls = conn.is_some_and(|c| c.tls);
    let peer = conn.map(|c| c.peer.to_string()).unwrap_or_default();
    let fault = if admin {
        None
    } else {
        state.faults.take(&method, req.uri().path())
    };
    if !admin {
        let delay = state.shaper.request_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    let plain_refused = state.tls.is_enabled() && !tls && !admin;
    let resp = match &fault {
        _ if plain_refused => cdn::error(
            StatusCode::FORBIDDEN,
            "https_required",
            "this emulator serves its services over https (serve --tls); plain HTTP is for /_emulator/ only",
        ),
        Some(FaultAction::Status(code)) => services::injected_error(&service, *code),
        Some(FaultAction::Stall { seconds }) => {
            tokio::time::sleep(Duration::from_secs(*seconds)).await;
            cdn::error(StatusCode::GATEWAY_TIMEOUT, "injected", "stalled")
        }
        Some(FaultAction::Delay { ms }) => {
            tokio::time::sleep(Duration::from_millis(*ms)).await;
            next.run(req).await
        }
        Some(FaultAction::Reset) => cut_body(next.run(req).await, 0),
        Some(FaultAction::Truncate { bytes }) => cut_body(next.run(req).await, *bytes),
        Some(FaultAction::Oversize { bytes }) => oversize_body(*bytes),
        Some(FaultAction::HugeHeader { bytes }) => Response::builder()
            .status(StatusCode::OK)
            .header(
                "x-filler",
                axum::http::HeaderValue::from_bytes(&vec![b'a'; (*bytes).min(1 << 30) as usize])
                    .expect("letters are a valid header value"),
            )
            .body(Body::from("{}"))
            .unwrap(),
        Some(FaultAction::Patch { at, hex }) => patch_body(next.run(req).await, *at, hex).await,
        Some(FaultAction::RedirectLoop) => Response::builder()
            .status(StatusCode::FOUND)
            .header(axum::http::header::LOCATION, req.uri().to_string())
            .body(Body::empty())
            .unwrap(),
        None => next.run(req).await,
    };
    let resp = if admin {
        resp
    } else {
        let (mut parts, body) = resp.into_parts();
        // The emulator's clock, which clock_offset_s may set apart from the client's.
        let date = std::time::UNIX_EPOCH + Duration::from_secs(state.now_unix());
        if let Ok(v) = axum::http::HeaderValue::from_str(&httpdate::fmt_http_date(date)) {
            parts.headers.insert(axum::http::header::DATE, v);
        }
        Response::from_parts(parts, paced_body(body, state.shaper.clone()))
    };
    let status = resp.status().as_u16();
    tracing::info!(target: "amzmusic_emulator::requests", "{method} {path} -> {status}");
    state.log.push(LoggedRequest {
        seq: 0,
        at_ms,
        method,
        path,
        service,
        status,
        duration_ms: started.elapsed().as_millis() as u64,
        headers,
        fault: fault.map(|f| format!("{f:?}")),
        http_version,
        tls,
        peer,
    });
    resp
}

/// Keeps the headers (and Content-Length) but ends the body with an error after `limit` bytes,
/// so the client sees the connection drop mid-response.
fn cut_body(resp: Response, limit: u64) -> Response {
    let (parts, body) = resp.into_parts();
    let allowed = body.into_data_stream().scan(limit, |left, chunk| {
        if *left == 0 {
            return futures::future::ready(None);
        }
        futures::future::ready(Some(match chunk {
            Ok(c) => {
                let n = (c.len() as u64).min(*left);
                *left -= n;
                Ok::<Bytes, std::io::Error>(c.slice(..n as usize))
            }
            Err(e) => Err(std::io::Error::other(e)),
        }))
    });
    let ended = allowed.chain(futures::stream::once(async {
        // Let the server flush the headers and the allowed bytes before the connection drops.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fault injected: connection dropped",
        ))
    }));
    Response::from_parts(parts, Body::from_stream(ended))
}

/// The body with `hex`'s bytes written over it from offset `at` (what lies past its end is
/// dropped); a `hex` that does not parse leaves it as it was, and says so in the log.
async fn patch_body(resp: Response, at: u64, hex: &str) -> Response {
    let (parts, body) = resp.into_parts();
    let Ok(mut data) = axum::body::to_bytes(body, 256 << 20).await.map(Vec::from) else {
        return cdn::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected",
            "body too large",
        );
    };
    match hex::decode(hex) {
        Ok(patch) => {
            for (i, b) in patch.into_iter().enumerate() {
                if let Some(d) = usize::try_from(at)
                    .ok()
                    .and_then(|at| at.checked_add(i))
                    .and_then(|j| data.get_mut(j))
                {
                    *d = b;
                }
            }
        }
        Err(e) => tracing::warn!("patch fault: {hex:?} is not hex ({e}); body unchanged"),
    }
    Response::from_parts(parts, Body::from(data))
}

/// 200 with `total` bytes of filler, 64 KiB at a time, made as the client reads them.
fn oversize_body(total: u64) -> Response {
    const CHUNK: u64 = 64 * 1024;
    let filler = Bytes::from(vec![b' '; CHUNK as usize]);
    let chunks = futures::stream::unfold(total, move |left| {
        let filler = filler.clone();
        async move {
            (left > 0).then(|| {
                let n = left.min(CHUNK);
                (
                    Ok::<Bytes, std::io::Error>(filler.slice(..n as usize)),
                    left - n,
                )
            })
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .body(Body::from_stream(chunks))
        .unwrap()
}

#[derive(Deserialize)]
struct SinceQuery {
    #[serde(default)]
    since: u64,
}

#[derive(Deserialize)]
struct ShapingRequest {
    scenario: Option<String>,
    #[serde(default = "one")]
    seed: u32,
    /// A trace in the `--trace` file format.
    trace: Option<String>,
}

fn one() -> u32 {
    1
}

fn admin_router() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/_emulator/requests",
            get(
                |State(s): State<Arc<AppState>>,
                 axum::extract::Query(q): axum::extract::Query<SinceQuery>| async move {
                    Json(s.log.since(q.since))
                },
            )
            .delete(|State(s): State<Arc<AppState>>| async move {
                s.log.clear();
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/_emulator/faults",
            get(|State(s): State<Arc<AppState>>| async move { Json(s.faults.list()) })
                .post(
                    |State(s): State<Arc<AppState>>, Json(rule): Json<FaultRule>| async move {
                        let id = s.faults.add(rule);
                        (StatusCode::CREATED, Json(json!({ "id": id })))
                    },
                )
                .delete(|State(s): State<Arc<AppState>>| async move {
                    s.faults.clear();
                    StatusCode::NO_CONTENT
                }),
        )
        .route(
            "/_emulator/shaping",
            get(|State(s): State<Arc<AppState>>| async move { Json(s.shaper.status()) })
                .post(set_shaping)
                .delete(|State(s): State<Arc<AppState>>| async move {
                    s.shaper.set(None);
                    StatusCode::NO_CONTENT
                }),
        )
        .route(
            "/_emulator/config",
            get(|State(s): State<Arc<AppState>>| async move {
                Json(s.config.lock().unwrap().clone())
            })
            .post(set_config),
        )
        .route(
            "/_emulator/catalog",
            get(|State(s): State<Arc<AppState>>| async move { Json(s.catalog.as_ref().clone()) }),
        )
        .route(
            "/_emulator/clearkey",
            post(crate::services::clearkey::register),
        )
        .route("/_emulator/health", get(|| async { "ok" }))
        .route(
            "/_emulator/tls",
            get(|State(s): State<Arc<AppState>>| async move { Json(s.tls.report()) }),
        )
        .route(
            "/_emulator/prepare",
            post(
                |State(s): State<Arc<AppState>>, Json(ids): Json<Vec<String>>| async move {
                    // Generates content ahead of time so tests do not time the generation.
                    for id in ids {
                        let st = s.clone();
                        let variant = crate::content::store::Variant::Encrypted(
                            match s.catalog.track(&id) {
                                Some(t) => t.scheme,
                                None => {
                                    return cdn::error(
                                        StatusCode::NOT_FOUND,
                                        "unknown_track",
                                        "no such track",
                                    )
                                }
                            },
                        );
                        let r = tokio::task::spawn_blocking(move || st.store.packaged(&id, variant))
                            .await;
                        if !matches!(r, Ok(Ok(_))) {
                            return cdn::error(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "server_error",
                                "content generation failed",
                            );
                        }
                    }
                    StatusCode::NO_CONTENT.into_response()
                },
            ),
        )
}

async fn set_shaping(State(s): State<Arc<AppState>>, Json(req): Json<ShapingRequest>) -> Response {
    let schedule = match (req.scenario, req.trace) {
        (Some(name), None) => match Schedule::scenario(&name, req.seed) {
            Some(s) => s,
            None => {
                return cdn::error(
                    StatusCode::BAD_REQUEST,
                    "unknown_scenario",
                    &format!(
                        "unknown scenario {name:?}; known: {}",
                        crate::shaping::SCENARIOS.join(", ")
                    ),
                )
            }
        },
        (None, Some(trace)) => match Schedule::from_trace("trace", &trace) {
            Ok(s) => s,
            Err(e) => return cdn::error(StatusCode::BAD_REQUEST, "bad_trace", &e),
        },
        _ => {
            return cdn::error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give exactly one of scenario or trace",
            )
        }
    };
    s.shaper.set(Some(schedule));
    Json(s.shaper.status()).into_response()
}

#[derive(Deserialize)]
struct ConfigPatch {
    audio_object_lifetime_s: Option<u64>,
    token_lifetime_s: Option<u64>,
    addressing: Option<String>,
    open_mirror: Option<bool>,
    device_code_lifetime_s: Option<u64>,
    device_poll_interval_s: Option<u64>,
    license_duration_s: Option<u64>,
    graphql_rate_limit: Option<u32>,
    clock_offset_s: Option<i64>,
}

async fn set_config(State(s): State<Arc<AppState>>, Json(p): Json<ConfigPatch>) -> Response {
    let mut c = s.config.lock().unwrap();
    if let Some(v) = p.audio_object_lifetime_s {
        c.audio_object_lifetime_s = v;
    }
    if let Some(v) = p.token_lifetime_s {
        c.token_lifetime_s = v;
    }
    if let Some(v) = p.clock_offset_s {
        c.clock_offset_s = v;
    }
    if let Some(a) = p.addressing {
        match a.parse() {
            Ok(a) => c.addressing = a,
            Err(e) => return cdn::error(StatusCode::BAD_REQUEST, "bad_addressing", &e),
        }
    }
    if let Some(v) = p.open_mirror {
        c.open_mirror = v;
    }
    if let Some(v) = p.device_code_lifetime_s {
        c.device_code_lifetime_s = v;
    }
    if let Some(v) = p.device_poll_interval_s {
        c.device_poll_interval_s = v;
    }
    if let Some(v) = p.license_duration_s {
        c.license_duration_s = v;
    }
    if let Some(v) = p.graphql_rate_limit {
        c.graphql_rate_limit = v;
    }
    Json(c.clone()).into_response()
}

/// A running emulator inside this process (for tests and embedding).
pub struct Running {
    pub base_url: String,
    pub state: Arc<AppState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds and serves plain HTTP on the current tokio runtime.
pub async fn start(addr: &str, state: Arc<AppState>) -> Result<Running> {
    start_with(addr, state, None).await
}

/// Binds and serves on the current tokio runtime: HTTPS with `tls` (a connection whose first
/// byte is not a TLS handshake is served plain, for the admin API only), else plain HTTP.
pub async fn start_with(
    addr: &str,
    state: Arc<AppState>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let base = match tls {
        // `https://[::1]:port` for an IPv6 listener, as SocketAddr prints it.
        Some(_) => format!("https://{local}"),
        None => format!("http://{local}"),
    };
    if tls.is_some() {
        state.tls.enable();
    }
    state.set_base_url(&base);
    let router = app(state.clone());
    let conn_state = state.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let router = router.clone();
            let tls = tls.clone();
            let state = conn_state.clone();
            tokio::spawn(async move {
                let Some(acceptor) = tls else {
                    return serve(tcp, Connection { tls: false, peer }, router).await;
                };
                // A TLS client speaks first with a handshake record (0x16).
                let mut first = [0u8; 1];
                let peeked =
                    tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await;
                match peeked {
                    Ok(Ok(1)) if first[0] == 0x16 => {}
                    Ok(Ok(1)) => return serve(tcp, Connection { tls: false, peer }, router).await,
                    _ => return,
                }
                match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                {
                    Ok(Ok(stream)) => {
                        state.tls.completed();
                        serve(stream, Connection { tls: true, peer }, router).await
                    }
                    Ok(Err(e)) => {
                        tracing::info!("TLS handshake with {peer} failed: {e}");
                        state.tls.failed(e.to_string());
                    }
                    Err(_) => state.tls.failed("handshake timed out".into()),
                }
            });
        }
    });
    Ok(Running {
        base_url: base,
        state,
        task,
    })
}

/// Serves one connection (HTTP/1.1 or HTTP/2, which hyper tells apart by the preface), every
/// request carrying what [`Connection`] says.
async fn serve<IO>(io: IO, conn: Connection, router: Router)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = tower::ServiceExt::map_request(
        router,
        move |mut req: axum::http::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(conn);
            req
        },
    );
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc))
        .await;
}

pub fn run(args: ServeArgs, data_dir: &Path, catalog: Arc<Catalog>) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AMZMUSIC_EMULATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let store = Arc::new(Store::new(data_dir, catalog.clone())?);
    let config = Config {
        audio_object_lifetime_s: args.audio_object_lifetime,
        token_lifetime_s: args.token_lifetime,
        addressing: args.addressing,
        open_mirror: args.open_mirror,
        device_code_lifetime_s: args.device_code_lifetime,
        device_poll_interval_s: args.device_poll_interval,
        license_duration_s: args.license_duration,
        graphql_rate_limit: args.graphql_rate_limit,
        clock_offset_s: args.clock_offset,
        key_system: args.key_system,
    };
    let state = Arc::new(AppState::new(catalog, store, config));
    if let Some(name) = &args.network {
        let s = Schedule::scenario(name, args.seed).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown network scenario {name:?}; known: {}",
                crate::shaping::SCENARIOS.join(", ")
            )
        })?;
        state.shaper.set(Some(s));
    }
    if let Some(path) = &args.trace {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading trace {}", path.display()))?;
        state.shaper.set(Some(
            Schedule::from_trace("trace", &text).map_err(anyhow::Error::msg)?,
        ));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let tls = if args.tls {
        let t = crate::tls::generate()?;
        let path = crate::tls::ca_file_path(args.env_file.as_deref(), data_dir);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, &t.ca_pem).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "amzmusic-emulator: HTTPS, CA certificate in {}",
            path.display()
        );
        Some((t.acceptor, std::path::absolute(&path)?))
    } else {
        None
    };
    rt.block_on(async move {
        let (acceptor, ca_file) = tls.unzip();
        let running = start_with(&args.addr, state.clone(), acceptor).await?;
        if let Some(path) = &args.env_file {
            services::write_env_file(&state, path, ca_file.as_deref())?;
        }
        let mut out = std::io::stdout();
        writeln!(out, "ready {}", running.base_url)?;
        out.flush()?;
        shutdown_signal().await;
        drop(running);
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
