//! FireFly, the metadata GraphQL API (async-graphql): tracks, albums, artists and playlists,
//! with the seed's auth modes, query-size and entity limits, market retargeting and flags.

use async_graphql::extensions::{
    Analyzer, Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo,
};
use async_graphql::{
    Context, EmptyMutation, EmptySubscription, ErrorExtensionValues, ErrorExtensions, Object,
    Schema, ServerError, ServerResult, SimpleObject, Value, ID,
};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};
use time::format_description::well_known::Rfc3339;

use super::checks::{check_token, require_api_key, ApiError, DEFAULT_MARKET};
use crate::content::catalog::{Catalog, PlaylistSpec, Tier, TrackSpec};
use crate::state::AppState;

/// A query of this many characters or more is refused with 413.
pub const MAX_QUERY_CHARS: usize = 4096;
/// At most this many entities of one type are hydrated per query; the rest are blocked.
pub const MAX_ENTITIES_PER_TYPE: usize = 300;
/// The complexity budget reported by the `complexity` feature flag (and enforced).
pub const COMPLEXITY_BUDGET: usize = 2000;
pub const MAX_DEPTH: usize = 16;

pub type FireflySchema = Schema<Query, EmptyMutation, EmptySubscription>;

pub fn schema() -> FireflySchema {
    Schema::build(Query, EmptyMutation, EmptySubscription)
        .extension(Analyzer)
        .extension(TraceFactory)
        .limit_complexity(COMPLEXITY_BUDGET)
        .limit_depth(MAX_DEPTH)
        .finish()
}

/// `POST /graphql`, over a schema this router builds once and owns.
pub fn router() -> Router<Arc<AppState>> {
    let schema = schema();
    Router::new().route(
        "/graphql",
        post(
            move |State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes| {
                let schema = schema.clone();
                async move { graphql(state, schema, headers, body).await }
            },
        ),
    )
}

/// How the caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    Bearer,
    AmznMusic,
    Anonymous,
}

impl AuthMode {
    fn name(self) -> &'static str {
        match self {
            AuthMode::Bearer => "bearer",
            AuthMode::AmznMusic => "amznmusic",
            AuthMode::Anonymous => "anonymous",
        }
    }
}

/// Counts hydrated entities per type for the 300-entity limit.
#[derive(Default)]
struct Hydration {
    counts: Mutex<BTreeMap<&'static str, (usize, usize)>>,
}

impl Hydration {
    /// Whether one more entity of `kind` may be hydrated; counts it either way.
    fn admit(&self, kind: &'static str) -> bool {
        let mut g = self.counts.lock().unwrap();
        let e = g.entry(kind).or_default();
        if e.0 < MAX_ENTITIES_PER_TYPE {
            e.0 += 1;
            true
        } else {
            e.1 += 1;
            false
        }
    }

    fn blocked(&self) -> BTreeMap<&'static str, usize> {
        self.counts
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, (_, b))| *b > 0)
            .map(|(k, (_, b))| (*k, *b))
            .collect()
    }
}

/// Per-request context of the resolvers.
struct Ctx {
    state: Arc<AppState>,
    market: String,
    auth_mode: AuthMode,
    hydration: Arc<Hydration>,
}

fn cx<'a>(ctx: &Context<'a>) -> &'a Ctx {
    ctx.data_unchecked::<Ctx>()
}

/// An album as the catalogue has it, or as its tracks describe it when it is not listed.
#[derive(Debug, Clone)]
pub struct AlbumView {
    pub id: String,
    pub title: String,
    pub artist: String,
    pub track_ids: Vec<String>,
}

pub fn album_view(catalog: &Catalog, id: &str) -> Option<AlbumView> {
    if let Some(a) = catalog.album(id) {
        return Some(AlbumView {
            id: a.id.clone(),
            title: a.title.clone(),
            artist: a.artist.clone(),
            track_ids: a.track_ids.clone(),
        });
    }
    let mut tracks: Vec<&TrackSpec> = catalog.tracks.iter().filter(|t| t.album_id == id).collect();
    tracks.sort_by_key(|t| (t.disc_number, t.track_number));
    let first = tracks.first()?;
    Some(AlbumView {
        id: id.to_string(),
        title: first.album.clone(),
        artist: first.album_artist.clone(),
        track_ids: tracks.iter().map(|t| t.id.clone()).collect(),
    })
}

/// Artists have no ids in the catalogue: derive a stable one from the name.
pub fn artist_id(name: &str) -> String {
    let d = Sha256::digest(name.as_bytes());
    format!("B0ART{}", hex::encode_upper(&d[..3]))
}

fn artist_by_id(catalog: &Catalog, id: &str) -> Option<String> {
    catalog
        .tracks
        .iter()
        .flat_map(|t| [&t.artist, &t.album_artist])
        .find(|n| artist_id(n) == id)
        .cloned()
}

fn image_for(state: &AppState, album_id: &str) -> Image {
    Image {
        url: format!("{}/images/{album_id}.png", state.base_url()),
    }
}

fn hydrate_track(ctx: &Context<'_>, id: &str) -> Option<TrackObj> {
    let c = cx(ctx);
    let t = c.state.catalog.track(id)?;
    if !t.available_in(&c.market) || !c.hydration.admit("Track") {
        return None;
    }
    Some(TrackObj(t.clone()))
}

fn hydrate_tracks(ctx: &Context<'_>, ids: &[String]) -> Vec<Option<TrackObj>> {
    ids.iter().map(|id| hydrate_track(ctx, id)).collect()
}

fn hydrate_album(ctx: &Context<'_>, id: &str) -> Option<AlbumObj> {
    let c = cx(ctx);
    let a = album_view(&c.state.catalog, id)?;
    c.hydration.admit("Album").then_some(AlbumObj(a))
}

fn hydrate_artist(ctx: &Context<'_>, name: &str) -> Option<ArtistObj> {
    cx(ctx).hydration.admit("Artist").then(|| ArtistObj {
        id: artist_id(name),
        name: name.to_string(),
    })
}

#[derive(SimpleObject)]
pub struct Image {
    url: String,
}

pub struct TrackObj(TrackSpec);

#[Object(name = "Track")]
impl TrackObj {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn artists(&self, ctx: &Context<'_>) -> Vec<Option<ArtistObj>> {
        vec![hydrate_artist(ctx, &self.0.artist)]
    }
    async fn album(&self, ctx: &Context<'_>) -> Option<AlbumObj> {
        hydrate_album(ctx, &self.0.album_id)
    }
    async fn track_number(&self) -> u32 {
        self.0.track_number
    }
    async fn disc_number(&self) -> u32 {
        self.0.disc_number
    }
    async fn duration_ms(&self) -> u64 {
        self.0.duration_ms
    }
    async fn isrc(&self) -> &str {
        &self.0.isrc
    }
    async fn explicit(&self) -> bool {
        self.0.explicit
    }
    /// Qualities as `X-Amzn-Audio-Device-Capability` names them, lowest first.
    async fn audio_qualities(&self) -> Vec<String> {
        let mut q: Vec<&str> = self
            .0
            .tiers()
            .into_iter()
            .map(|t| match t {
                Tier::Ld | Tier::Sd => "SD",
                Tier::Hd => "HD",
                Tier::Uhd => "UHD",
                Tier::Atmos => "ATMOS",
            })
            .collect();
        q.dedup();
        q.into_iter().map(str::to_string).collect()
    }
    async fn image(&self, ctx: &Context<'_>) -> Image {
        image_for(&cx(ctx).state, &self.0.album_id)
    }
}

pub struct AlbumObj(AlbumView);

#[Object(name = "Album")]
impl AlbumObj {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn artists(&self, ctx: &Context<'_>) -> Vec<Option<ArtistObj>> {
        vec![hydrate_artist(ctx, &self.0.artist)]
    }
    async fn image(&self, ctx: &Context<'_>) -> Image {
        image_for(&cx(ctx).state, &self.0.id)
    }
    async fn track_count(&self) -> usize {
        self.0.track_ids.len()
    }
    /// In play order; tracks not available in the market are null.
    async fn tracks(&self, ctx: &Context<'_>) -> Vec<Option<TrackObj>> {
        hydrate_tracks(ctx, &self.0.track_ids)
    }
}

pub struct ArtistObj {
    id: String,
    name: String,
}

#[Object(name = "Artist")]
impl ArtistObj {
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }
    async fn name(&self) -> &str {
        &self.name
    }
    async fn tracks(&self, ctx: &Context<'_>) -> Vec<Option<TrackObj>> {
        let ids: Vec<String> = cx(ctx)
            .state
            .catalog
            .tracks
            .iter()
            .filter(|t| t.artist == self.name)
            .map(|t| t.id.clone())
            .collect();
        hydrate_tracks(ctx, &ids)
    }
    async fn albums(&self, ctx: &Context<'_>) -> Vec<Option<AlbumObj>> {
        let mut ids: Vec<&str> = Vec::new();
        for t in &cx(ctx).state.catalog.tracks {
            if t.album_artist == self.name && !ids.contains(&t.album_id.as_str()) {
                ids.push(&t.album_id);
            }
        }
        ids.iter().map(|id| hydrate_album(ctx, id)).collect()
    }
}

pub struct PlaylistObj(PlaylistSpec);

#[Object(name = "Playlist")]
impl PlaylistObj {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn track_count(&self) -> usize {
        self.0.track_ids.len()
    }
    async fn tracks(&self, ctx: &Context<'_>) -> Vec<Option<TrackObj>> {
        hydrate_tracks(ctx, &self.0.track_ids)
    }
}

pub struct Query;

#[Object]
impl Query {
    /// A track, or null when there is none (an error says so when it exists in another market).
    async fn track(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<TrackObj>> {
        let c = cx(ctx);
        match c.state.catalog.track(&id) {
            Some(t) if !t.available_in(&c.market) => Err(async_graphql::Error::new(format!(
                "track {} is not available in market {}",
                *id, c.market
            ))
            .extend_with(|_, e| e.set("code", "NOT_AVAILABLE_IN_MARKET"))),
            _ => Ok(hydrate_track(ctx, &id)),
        }
    }
    /// Tracks in the order asked; unknown, unavailable or blocked ones are null.
    async fn tracks(&self, ctx: &Context<'_>, ids: Vec<ID>) -> Vec<Option<TrackObj>> {
        ids.iter().map(|id| hydrate_track(ctx, id)).collect()
    }
    async fn album(&self, ctx: &Context<'_>, id: ID) -> Option<AlbumObj> {
        hydrate_album(ctx, &id)
    }
    async fn artist(&self, ctx: &Context<'_>, id: ID) -> Option<ArtistObj> {
        let name = artist_by_id(&cx(ctx).state.catalog, &id)?;
        hydrate_artist(ctx, &name)
    }
    async fn playlist(&self, ctx: &Context<'_>, id: ID) -> Option<PlaylistObj> {
        let c = cx(ctx);
        let p = c.state.catalog.playlist(&id)?;
        c.hydration
            .admit("Playlist")
            .then(|| PlaylistObj(p.clone()))
    }
    /// The market read queries resolve in (the account's, or the `market` header's).
    async fn market(&self, ctx: &Context<'_>) -> String {
        cx(ctx).market.clone()
    }
    /// How this request authenticated: bearer, amznmusic or anonymous.
    async fn auth_mode(&self, ctx: &Context<'_>) -> &'static str {
        cx(ctx).auth_mode.name()
    }
}

/// Resolver timings for the `trace` feature flag.
struct TraceLog {
    started: Instant,
    resolvers: Mutex<Vec<serde_json::Value>>,
}

struct TraceFactory;

impl ExtensionFactory for TraceFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(TraceExtension)
    }
}

struct TraceExtension;

#[async_graphql::async_trait::async_trait]
impl Extension for TraceExtension {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        // Only requests with the `trace` flag carry a TraceLog.
        let Some(log) = ctx.data_opt::<Arc<TraceLog>>() else {
            return next.run(ctx, info).await;
        };
        let path = info.path_node.to_string();
        let parent = info.parent_type.to_string();
        let field = info.name.to_string();
        let start = Instant::now();
        let r = next.run(ctx, info).await;
        let entry = serde_json::json!({
            "path": path,
            "parentType": parent,
            "fieldName": field,
            "startOffsetUs": start.duration_since(log.started).as_micros() as u64,
            "durationUs": start.elapsed().as_micros() as u64,
        });
        log.resolvers.lock().unwrap().push(entry);
        r
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

#[derive(Deserialize)]
struct AmznMusicAuth {
    access_token: String,
    #[serde(rename = "deviceId")]
    device_id: String,
    #[serde(rename = "deviceType")]
    device_type: String,
}

/// The seed's auth modes; returns the mode and the market read queries resolve in.
fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<(AuthMode, String), ApiError> {
    let retarget =
        match header(headers, "market").or_else(|| header(headers, "music-territory")) {
            Some(m) if m.len() == 2 && m.chars().all(|c| c.is_ascii_alphabetic()) => {
                Some(m.to_ascii_uppercase())
            }
            Some(_) => return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_market",
                "market / music-territory must be a 2-letter MusicTerritory code such as US or JP",
            )),
            None => None,
        };
    let unauthorized = |code: &str, msg: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, msg);
    let mode = match header(headers, "authorization") {
        Some(auth) => {
            let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
            match scheme.to_ascii_lowercase().as_str() {
                "bearer" => {
                    check_token(state, rest.trim())?;
                    AuthMode::Bearer
                }
                "amznmusic" => {
                    let a: AmznMusicAuth = base64::engine::general_purpose::STANDARD
                        .decode(rest.trim())
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok())
                        .filter(|a: &AmznMusicAuth| {
                            !a.device_id.is_empty() && !a.device_type.is_empty()
                        })
                        .ok_or_else(|| {
                            unauthorized(
                                "malformed_authorization",
                                "AmznMusic auth is base64 of JSON {access_token, deviceId, deviceType}",
                            )
                        })?;
                    check_token(state, &a.access_token)?;
                    AuthMode::AmznMusic
                }
                _ => {
                    return Err(unauthorized(
                        "unsupported_authorization",
                        "use Authorization: Bearer <token>, AmznMusic <base64 JSON>, or no Authorization header (anonymous)",
                    ))
                }
            }
        }
        None => {
            let missing: Vec<&str> = [
                ("device-id", header(headers, "device-id").is_some()),
                ("device-type", header(headers, "device-type").is_some()),
                ("market or music-territory", retarget.is_some()),
                (
                    "x-amzn-session-id",
                    header(headers, "x-amzn-session-id").is_some(),
                ),
            ]
            .into_iter()
            .filter(|(_, present)| !present)
            .map(|(n, _)| n)
            .collect();
            if !missing.is_empty() {
                return Err(unauthorized(
                    "anonymous_auth_incomplete",
                    &format!(
                        "anonymous calls (no Authorization header) need these headers: {}",
                        missing.join(", ")
                    ),
                ));
            }
            AuthMode::Anonymous
        }
    };
    Ok((mode, retarget.unwrap_or_else(|| DEFAULT_MARKET.to_string())))
}

fn feature_flags(headers: &HeaderMap) -> Vec<String> {
    header(headers, "x-amzn-feature-flags")
        .unwrap_or("")
        .split(',')
        .map(|f| f.trim().to_ascii_lowercase())
        .filter(|f| !f.is_empty())
        .collect()
}

fn to_gql(v: serde_json::Value) -> Value {
    Value::from_json(v).unwrap_or(Value::Null)
}

fn iso(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

async fn graphql(
    state: Arc<AppState>,
    schema: FireflySchema,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match run_graphql(state, &schema, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run_graphql(
    state: Arc<AppState>,
    schema: &FireflySchema,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let api_key = require_api_key(&headers)?;
    let per_s = state.config.lock().unwrap().graphql_rate_limit;
    state
        .services
        .take_rate(&api_key, per_s, Instant::now())
        .map_err(|secs| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                format!("more than {per_s} requests a second for this API key: retry later"),
            )
            .retry_after(secs)
        })?;
    let (auth_mode, market) = authenticate(&state, &headers)?;
    let request: async_graphql::Request = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body must be JSON {{\"query\", \"variables\"}}: {e}"),
        )
    })?;
    let chars = request.query.chars().count();
    if chars >= MAX_QUERY_CHARS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the query has {chars} characters; FireFly takes fewer than {MAX_QUERY_CHARS}: split it into several calls"
            ),
        ));
    }
    let flags = feature_flags(&headers);
    let hydration = Arc::new(Hydration::default());
    let mut request = request.data(Ctx {
        state: state.clone(),
        market: market.clone(),
        auth_mode,
        hydration: hydration.clone(),
    });
    let trace = flags.iter().any(|f| f == "trace").then(|| {
        Arc::new(TraceLog {
            started: Instant::now(),
            resolvers: Mutex::new(Vec::new()),
        })
    });
    if let Some(t) = &trace {
        request = request.data(t.clone());
    }
    let start_wall = SystemTime::now();
    let mut resp = schema.execute(request).await;

    let analyzer = resp.extensions.remove("analyzer");
    if flags.iter().any(|f| f == "complexity") {
        let (mut score, mut depth) = (Value::Null, Value::Null);
        if let Some(Value::Object(a)) = analyzer {
            score = a.get("complexity").cloned().unwrap_or(Value::Null);
            depth = a.get("depth").cloned().unwrap_or(Value::Null);
        }
        let mut m = async_graphql::indexmap::IndexMap::new();
        m.insert(async_graphql::Name::new("score"), score);
        m.insert(
            async_graphql::Name::new("budget"),
            Value::from(COMPLEXITY_BUDGET as u64),
        );
        m.insert(async_graphql::Name::new("depth"), depth);
        resp.extensions
            .insert("complexity".into(), Value::Object(m));
    }
    if let Some(t) = trace {
        let resolvers = std::mem::take(&mut *t.resolvers.lock().unwrap());
        resp.extensions.insert(
            "trace".into(),
            to_gql(serde_json::json!({
                "startTime": iso(start_wall),
                "endTime": iso(SystemTime::now()),
                "durationUs": t.started.elapsed().as_micros() as u64,
                "resolvers": resolvers,
            })),
        );
    }
    let blocked = hydration.blocked();
    if !blocked.is_empty() {
        for (kind, n) in &blocked {
            let mut err = ServerError::new(
                format!(
                    "entity hydration limit: at most {MAX_ENTITIES_PER_TYPE} {kind} entities per query; {n} blocked (split the query)"
                ),
                None,
            );
            let mut ext = ErrorExtensionValues::default();
            ext.set("code", "ENTITY_LIMIT");
            ext.set("type", *kind);
            ext.set("blocked", *n as u64);
            err.extensions = Some(ext);
            resp.errors.push(err);
        }
        resp.extensions
            .insert("blockedEntities".into(), to_gql(serde_json::json!(blocked)));
    }
    tracing::debug!(
        "graphql: {} request in market {market}, {} error(s), flags {flags:?}",
        auth_mode.name(),
        resp.errors.len()
    );
    Ok(async_graphql_axum::GraphQLResponse::from(resp).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hydration_blocks_past_the_limit_per_type() {
        let h = Hydration::default();
        for _ in 0..MAX_ENTITIES_PER_TYPE {
            assert!(h.admit("Track"));
        }
        assert!(!h.admit("Track"));
        assert!(!h.admit("Track"));
        assert!(h.admit("Album"), "each type has its own budget");
        assert_eq!(h.blocked(), BTreeMap::from([("Track", 2)]));
    }

    #[test]
    fn artist_ids_are_stable_and_distinct() {
        assert_eq!(artist_id("Kilohertz"), artist_id("Kilohertz"));
        assert_ne!(artist_id("Kilohertz"), artist_id("Regional"));
        assert!(artist_id("Kilohertz").starts_with("B0ART"));
    }

    #[test]
    fn albums_known_only_from_tracks_are_in_track_order() {
        let c = Catalog::builtin(None);
        let a = album_view(&c, "B0EMUUHA01").unwrap();
        assert_eq!(a.title, "High Rates");
        assert_eq!(a.track_ids, ["B0EMUUHD01", "B0EMUUHD02"]);
        assert!(album_view(&c, "B0NOSUCH00").is_none());
    }
}
