//! `ember-serve`: many compressed models behind one OpenAI-compatible HTTP endpoint, sharing
//! one memory budget.
//!
//! Every model idles at its compressed size; the one that answers decodes (or multiplies fused)
//! what it needs, within one decoded-weight budget for all of them. Requests to the same model
//! are decoded together — sequences join and leave the running batch at token boundaries, each
//! with its own positions and stop conditions — and each model has its own worker, so requests
//! to different models interleave.
//!
//! The data path: [`options`] (the command line) → [`registry`] (models resolved to containers,
//! the shared cache, one [`engine`] worker per model) → [`routes`] (the OpenAI endpoints,
//! [`openai`] bodies, [`error`]s) → [`metrics`].

pub mod engine;
pub mod error;
pub mod metrics;
pub mod openai;
pub mod options;
pub mod registry;
pub mod routes;
pub mod stops;

use std::sync::Arc;

use anyhow::{Context, Result};

pub use options::Options;

/// Loads the models, binds the address and serves until SIGTERM or Ctrl-C; then stops accepting
/// connections, lets running requests finish for up to `--shutdown-grace` seconds, and returns.
pub async fn serve(options: Options) -> Result<()> {
    options.check()?;
    let max_body = options.max_body_bytes()?;
    let addr = options.addr()?;
    let load_options = options.clone();
    let registry =
        tokio::task::spawn_blocking(move || registry::load(&load_options)).await.context("loading models")??;
    let state = Arc::new(routes::AppState::new(registry, options.api_key(), options.max_tokens, options.ctx));
    let app = routes::router(Arc::clone(&state), max_body);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let names: Vec<&str> = state.registry.models.iter().map(|m| m.name.as_str()).collect();
    eprintln!("ember-serve: listening on http://{local} (models: {})", names.join(", "));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    });
    let server = tokio::spawn(async move { server.await });
    shutdown_signal().await;
    eprintln!("ember-serve: shutting down (running requests get {} s)", options.shutdown_grace);
    for m in &state.registry.models {
        m.close();
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(options.grace(), server).await {
        Ok(joined) => joined.context("the server task")?.context("serving")?,
        Err(_) => eprintln!("ember-serve: requests still running after {} s; exiting", options.shutdown_grace),
    }
    Ok(())
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
