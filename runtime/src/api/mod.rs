//! `clawrun serve`: the host's HTTP server.
//!
//! - `/v1/...`: the management API, each request acting in the organisation
//!   of its bearer token ([`routes`]);
//! - `/openapi.json`: the API's OpenAPI document, generated from the routes;
//! - `/`: the dashboard, a page that signs in with a token and drives the
//!   same API;
//! - `/healthz`: liveness;
//! - `/metrics` (Prometheus) on its own listener, for the operator only: its
//!   labels name every organisation's claws.

pub mod dashboard;
pub mod error;
mod metrics;
pub mod routes;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::service::Host;
use error::ApiError;

/// Largest JSON body accepted, in bytes.
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

/// How long a management request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a run request may take: the cage's own deadline ends a run
/// first; this only bounds a stuck connection.
const RUN_TIMEOUT: Duration = Duration::from_secs(330);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "clawrun",
        description = "Manage an organisation's provider keys, claws, runs, usage and audit log. \
            Every `/v1` route needs `Authorization: Bearer TOKEN`; objects of other \
            organisations answer 404.",
    ),
    modifiers(&BearerAuth),
    security(("token" = [])),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route with a body may also answer 413 (too large) and 415 (not
/// JSON), from the extractors rather than the handler.
struct BodyErrors;

impl Modify for BodyErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |text: &str| {
            ResponseBuilder::new()
                .description(text)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for operation in [&mut item.post, &mut item.put].into_iter().flatten() {
                if operation.request_body.is_some() {
                    let responses = &mut operation.responses.responses;
                    responses.insert("413".into(), error("The body is too large").into());
                    responses.insert(
                        "415".into(),
                        error("The body is not sent as application/json").into(),
                    );
                }
            }
        }
    }
}

/// The API routes and their OpenAPI document.
pub fn api() -> (Router<Arc<Host>>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::routes())
        .split_for_parts();
    // After the merge: only then are the routes' operations in the document.
    BodyErrors.modify(&mut doc);
    (router, doc)
}

/// The OpenAPI document, as served at `/openapi.json`.
pub fn openapi_json() -> String {
    api().1.to_pretty_json().unwrap_or_default()
}

/// Every route of the main listener over `host`.
pub fn router(host: Arc<Host>) -> Router {
    let (api, doc) = api();
    let doc = Arc::new(doc.to_pretty_json().unwrap_or_default());
    // Runs may take as long as the cage allows; everything else is quick.
    let api = api.layer(DefaultBodyLimit::max(JSON_BODY_LIMIT));
    Router::new()
        .merge(api)
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], (*doc).clone()) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(dashboard::routes())
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route: see /openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method: see /openapi.json",
            )
        })
        .with_state(host)
        .layer(axum::middleware::from_fn(timeouts))
}

/// Bounds each request: runs by [`RUN_TIMEOUT`], the rest by
/// [`REQUEST_TIMEOUT`]; a request past it answers 408.
async fn timeouts(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let limit = if request.uri().path().ends_with("/runs") {
        RUN_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!("the request took longer than {} s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// The operator's listener: Prometheus metrics of every organisation.
pub fn metrics_router(host: Arc<Host>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_route))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(host)
}

async fn metrics_route(State(host): State<Arc<Host>>) -> impl IntoResponse {
    let samples = tokio::task::spawn_blocking(move || host.metric_samples()).await;
    match samples {
        Ok(Ok(samples)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            metrics::render(&samples),
        )
            .into_response(),
        _ => {
            tracing::error!("metrics: the ledger could not be read");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the ledger could not be read\n",
            )
                .into_response()
        }
    }
}

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The API and dashboard.
    pub listen: SocketAddr,
    /// The metrics, when given.
    pub metrics_listen: Option<SocketAddr>,
    /// After SIGTERM, how long running requests (claws) may take to finish
    /// before they are cancelled; a cancelled call records its estimated
    /// usage.
    pub grace: Duration,
}

/// Serves until `shutdown` resolves, then stops accepting connections and
/// lets running requests finish for `options.grace`; requests still running
/// then are dropped, and each provider call among them records its usage
/// as it is dropped.
///
/// # Errors
///
/// When an address cannot be bound or serving fails.
pub async fn serve(
    host: Arc<Host>,
    options: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let metrics = match options.metrics_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    println!("clawrun serving on http://{}", listener.local_addr()?);
    if let Some(m) = &metrics {
        println!("metrics on http://{}/metrics", m.local_addr()?);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(m) = metrics {
        let app = metrics_router(host.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            if let Err(e) = axum::serve(m, app).with_graceful_shutdown(stopped).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }
    let mut rx = stop_rx.clone();
    let ledger = host.clone();
    let server = axum::serve(listener, router(host)).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let grace = options.grace;
    let expired = async move {
        let _ = rx.wait_for(|stop| *stop).await;
        tracing::info!(
            grace_s = grace.as_secs(),
            "shutting down: letting running requests finish"
        );
        tokio::time::sleep(grace).await;
    };
    let served = tokio::select! {
        served = server => served,
        () = expired => {
            tracing::warn!("grace period over: cancelling the requests still running");
            Ok(())
        }
    };
    // Calls cut off above recorded their usage as they were dropped; put
    // it on disk before the process exits.
    if let Err(e) = ledger.sync_ledger().await {
        tracing::error!(error = %e, "usage records may not be on disk");
    }
    served
}
