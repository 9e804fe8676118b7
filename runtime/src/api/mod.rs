//! `clawrun serve`: the host's HTTP server.
//!
//! So far it serves the metrics (`GET /metrics`, Prometheus text format) and
//! a liveness check (`GET /healthz`); the management API and dashboard are
//! to come.

mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::service::Service;

/// The server's routes over `service`.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_route))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(service)
}

async fn metrics_route(State(service): State<Arc<Service>>) -> impl IntoResponse {
    let samples = tokio::task::spawn_blocking(move || service.metric_samples()).await;
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

/// Serves until SIGINT or SIGTERM, then shuts down gracefully.
///
/// # Errors
///
/// When the address cannot be bound or serving fails.
pub async fn serve(
    service: Arc<Service>,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("clawrun serving on http://{}", listener.local_addr()?);
    axum::serve(listener, router(service))
        .with_graceful_shutdown(shutdown)
        .await
}
