//! The Open Inference Protocol front end on S0's host (axum on tokio).
//!
//! Where it sits: between querying users and the serving cluster ([`super::cluster`]). It is
//! untrusted: it relays sealed queries and sealed answers (base64 in `BYTES` tensors) and
//! cannot read either. It enforces the limits (body size, queries per request, requests in
//! flight, time to answer) and turns every bad request into a 4xx and every cluster failure
//! into a 503 with the reason, without ever stopping the server.
//!
//! Endpoints: `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2`, `GET /v2/models/{name}`,
//! `GET /v2/models/{name}/ready`, `POST /v2/models/{name}/infer`, and the extension
//! `GET /v2/models/{name}/attestation?nonce=HEX`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use goten_enclave::Role;
use goten_enclave::attest::Evidence;
use serde_json::json;
use tokio::sync::Semaphore;

use super::cluster::{Ready, Status, Work};
use super::oip::{self, Attestation, InferRequest, InferResponse, RoleEvidence, Tensor};
use crate::RuntimeError;

/// What the front end needs of a serving cluster (local today; a deployment's S0 later).
pub trait ServeBackend: Send + Sync + 'static {
    /// Where the cluster stands.
    fn status(&self) -> Status;
    /// Hands work to the cluster.
    fn submit(&self, w: Work) -> Result<(), String>;
    /// Hands the model owner's sealed model to the cluster: `Err`: the cluster cannot take it
    /// now; `Ok(Err)`: the enclaves refused it.
    fn provision(&self, sealed: Vec<u8>) -> Result<Result<(), String>, String>;
    /// E0's and E1's evidence for `nonce` over the current service key, and in simulation
    /// the simulated roots (platform keys, measurement).
    #[allow(clippy::type_complexity)]
    fn attestation(
        &self,
        nonce: &[u8; 32],
    ) -> Result<(Vec<(Role, Evidence)>, Option<(Vec<[u8; 32]>, [u8; 32])>), String>;
}

/// The front end's limits.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Largest request body, bytes.
    pub max_body: usize,
    /// Most sealed queries in one request.
    pub max_queries: usize,
    /// Most requests answered at once; more get 429.
    pub max_in_flight: usize,
    /// How long a request waits for the cluster before a 503.
    pub reply_timeout: Duration,
    /// Largest sealed model the owner may provision, bytes.
    pub max_model: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body: 16 << 20,
            max_queries: 64,
            max_in_flight: 64,
            reply_timeout: Duration::from_secs(60),
            max_model: 1 << 30,
        }
    }
}

struct App {
    backend: Arc<dyn ServeBackend>,
    limits: HttpLimits,
    in_flight: Semaphore,
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, axum::Json(json!({ "error": msg.into() }))).into_response()
}

/// A refusal: its status and message (the OIP error body).
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn ready(app: &App) -> Result<Ready, ApiError> {
    match app.backend.status() {
        Status::Ready(r) => Ok(r),
        Status::Starting => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the serving cluster is starting (key exchange and model loading)".into(),
        )),
        Status::Failed(why) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the serving cluster is down and restarting: {why}"),
        )),
        Status::AwaitingModel(r) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "awaiting the model owner's {} model (goten provision-model; POST /v2/models/{}/provision)",
                r.info.kind, r.name
            ),
        )),
    }
}

/// The model of `name`, serving or awaited (metadata, attestation, provisioning).
fn known(app: &App, name: &str) -> Result<(Ready, bool), ApiError> {
    let (r, serving) = match app.backend.status() {
        Status::AwaitingModel(r) => (r, false),
        _ => (ready(app)?, true),
    };
    if r.name != name {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no model named {name:?}; this server serves {:?}", r.name),
        ));
    }
    Ok((r, serving))
}

fn model(app: &App, name: &str) -> Result<Ready, ApiError> {
    let r = ready(app)?;
    if r.name != name {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no model named {name:?}; this server serves {:?}", r.name),
        ));
    }
    Ok(r)
}

async fn live() -> Response {
    axum::Json(json!({"live": true})).into_response()
}

async fn health_ready(State(app): State<Arc<App>>) -> Response {
    match ready(&app) {
        Ok(_) => axum::Json(json!({"ready": true})).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn server_meta() -> Response {
    axum::Json(json!({
        "name": "goten",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["goten-sealed-queries", "goten-attestation"],
    }))
    .into_response()
}

async fn model_meta(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let r = match known(&app, &name) {
        Ok((r, _)) => r,
        Err(e) => return e.into_response(),
    };
    let meta = |n: &str| oip::TensorMeta {
        name: n.into(),
        datatype: oip::BYTES.into(),
        shape: vec![-1],
    };
    axum::Json(oip::ModelMetadata {
        name: r.name.clone(),
        versions: vec!["1".into()],
        platform: "goten-sealed".into(),
        inputs: vec![meta(oip::INPUT)],
        outputs: vec![meta(oip::OUTPUT)],
        parameters: oip::SealedParameters {
            kind: r.info.kind.into(),
            image_shape: r.info.input.to_vec(),
            classes: r.info.classes,
            max_images_per_query: goten_enclave::session::serve::MAX_IMAGES_PER_QUERY,
            format: "goten/query/v2 (HPKE X25519-SHA256/AES-256-GCM, answer key exported); see DESIGN.md section 21"
                .into(),
        },
    })
    .into_response()
}

async fn model_ready(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    match model(&app, &name) {
        Ok(r) => axum::Json(json!({"name": r.name, "ready": true})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn attestation(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let r = match known(&app, &name) {
        Ok((r, _)) => r,
        Err(e) => return e.into_response(),
    };
    let nonce: [u8; 32] = match q.get("nonce").map(|n| oip::unhex(n)) {
        Some(Some(b)) if b.len() == 32 => b.try_into().expect("32 bytes"),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "pass a fresh nonce of 32 bytes as 64 hex digits: ?nonce=HEX",
            );
        }
    };
    let backend = app.backend.clone();
    let got = tokio::task::spawn_blocking(move || backend.attestation(&nonce)).await;
    let (ev, roots) = match got {
        Ok(Ok(x)) => x,
        Ok(Err(why)) => return error(StatusCode::SERVICE_UNAVAILABLE, why),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    axum::Json(Attestation {
        model: r.name,
        service_key: oip::hex(&r.service_key),
        nonce: oip::hex(&nonce),
        evidence: ev
            .iter()
            .map(|(role, e)| RoleEvidence {
                role: role.to_string(),
                evidence: oip::hex(&goten_party::wire::encode_evidence(e)),
            })
            .collect(),
        simulated: roots.map(|(keys, m)| oip::SimulatedRoots {
            platform_keys: keys.iter().map(|k| oip::hex(k)).collect(),
            measurement: oip::hex(&m),
            warning: goten_party::cluster::SIMULATION_NOTICE.into(),
        }),
    })
    .into_response()
}

/// The sealed queries of a request body, or the 4xx that says what is wrong with it.
fn parse_infer(app: &App, body: &[u8]) -> Result<(Option<String>, Vec<Vec<u8>>), ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let req: InferRequest = serde_json::from_slice(body)
        .map_err(|e| bad(format!("malformed inference request (JSON): {e}")))?;
    let [input] = req.inputs.as_slice() else {
        return Err(bad(format!(
            "{} input tensors; exactly one named {:?} is expected",
            req.inputs.len(),
            oip::INPUT
        )));
    };
    if input.name != oip::INPUT {
        return Err(bad(format!(
            "input {:?}: the only input is {:?}",
            input.name,
            oip::INPUT
        )));
    }
    if input.datatype != oip::BYTES {
        return Err(bad(format!(
            "input datatype {:?}: queries are sealed, so the datatype is BYTES",
            input.datatype
        )));
    }
    let n = input.data.len();
    if input.shape != [n as i64] {
        return Err(bad(format!(
            "input shape {:?} does not match its {n} elements (expected [{n}])",
            input.shape
        )));
    }
    if n == 0 || n > app.limits.max_queries {
        return Err(bad(format!(
            "{n} sealed queries in one request; 1 to {} are accepted",
            app.limits.max_queries
        )));
    }
    let queries = input
        .data
        .iter()
        .enumerate()
        .map(|(i, s)| {
            STANDARD
                .decode(s)
                .map_err(|e| bad(format!("element {i} is not base64: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((req.id, queries))
}

async fn infer(State(app): State<Arc<App>>, Path(name): Path<String>, body: Body) -> Response {
    let r = match model(&app, &name) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Ok(_permit) = app.in_flight.try_acquire() else {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} requests are in flight (the limit); retry shortly",
                app.limits.max_in_flight
            ),
        );
    };
    // A client that sends its body slowly (or never) gets 408, not a held worker.
    let read = axum::body::to_bytes(body, app.limits.max_body);
    let bytes = match tokio::time::timeout(app.limits.reply_timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than {} bytes (--max-body)",
                    app.limits.max_body
                ),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    app.limits.reply_timeout.as_secs()
                ),
            );
        }
    };
    let (id, queries) = match parse_infer(&app, &bytes) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    // The host cannot count the images inside a sealed query; batch by size (pixels plus a
    // share of the header and the HPKE overhead).
    let per_image = r.info.input.iter().product::<usize>() + 64;
    let images = queries
        .iter()
        .map(|q| q.len() / per_image)
        .sum::<usize>()
        .max(1);
    let n = queries.len();
    let (tx, rx) = tokio::sync::oneshot::channel();
    if let Err(why) = app.backend.submit(Work {
        queries,
        images,
        reply: tx,
    }) {
        return error(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    let limit = app.limits.reply_timeout;
    let replies = match tokio::time::timeout(limit, rx).await {
        Ok(Ok(Ok(replies))) => replies,
        Ok(Ok(Err(why))) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the serving cluster failed: {why}"),
            );
        }
        Ok(Err(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the serving cluster stopped before answering",
            );
        }
        Err(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the serving cluster did not answer within {} s",
                    limit.as_secs()
                ),
            );
        }
    };
    let mut data = Vec::with_capacity(n);
    for (i, reply) in replies.into_iter().enumerate() {
        match reply {
            Ok(sealed) => data.push(STANDARD.encode(sealed)),
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, format!("query {i}: {e}"));
            }
        }
    }
    axum::Json(InferResponse {
        model_name: r.name,
        id,
        outputs: vec![Tensor {
            name: oip::OUTPUT.into(),
            shape: vec![data.len() as i64],
            datatype: oip::BYTES.into(),
            data,
        }],
    })
    .into_response()
}

async fn provision(State(app): State<Arc<App>>, Path(name): Path<String>, body: Body) -> Response {
    match known(&app, &name) {
        Ok((_, false)) => {}
        Ok((r, true)) => {
            return error(
                StatusCode::CONFLICT,
                format!(
                    "this server already serves {}; a new model needs a new serving folder",
                    r.name
                ),
            );
        }
        Err(e) => return e.into_response(),
    }
    let read = axum::body::to_bytes(body, app.limits.max_model);
    let bytes = match tokio::time::timeout(app.limits.reply_timeout * 10, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the sealed model is larger than {} bytes",
                    app.limits.max_model
                ),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the sealed model did not arrive in time",
            );
        }
    };
    let backend = app.backend.clone();
    match tokio::task::spawn_blocking(move || backend.provision(bytes.to_vec())).await {
        Ok(Ok(Ok(()))) => axum::Json(json!({"name": name, "provisioned": true})).into_response(),
        Ok(Ok(Err(why))) => error(StatusCode::BAD_REQUEST, why),
        Ok(Err(why)) => error(StatusCode::SERVICE_UNAVAILABLE, why),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; see GET /v2 and /v2/models/{name}",
    )
}

/// The router of the front end.
pub fn router(backend: Arc<dyn ServeBackend>, limits: HttpLimits) -> Router {
    let app = Arc::new(App {
        in_flight: Semaphore::new(limits.max_in_flight),
        backend,
        limits,
    });
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(health_ready))
        .route("/v2", get(server_meta))
        .route("/v2/models/{name}", get(model_meta))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/attestation", get(attestation))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/provision", post(provision))
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

/// A running front end.
pub struct HttpServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` and serves on a background runtime of `workers` threads.
    pub fn start(
        addr: &str,
        backend: Arc<dyn ServeBackend>,
        limits: HttpLimits,
        workers: usize,
    ) -> Result<Self, RuntimeError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .enable_all()
            .build()
            .map_err(|e| RuntimeError::config(format!("cannot start the HTTP runtime: {e}")))?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(|e| RuntimeError::config(format!("cannot listen for HTTP on {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| RuntimeError::config(format!("{addr}: {e}")))?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = router(backend, limits);
        let thread = std::thread::Builder::new()
            .name("goten-http".into())
            .spawn(move || {
                rt.block_on(async move {
                    let r = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                    if let Err(e) = r {
                        eprintln!("HTTP server stopped: {e}");
                    }
                });
            })
            .map_err(|e| RuntimeError::config(format!("cannot start the HTTP thread: {e}")))?;
        Ok(HttpServer {
            addr: bound,
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until the process is stopped.
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
