//! `turbomon engine-farm`: one process serving many engines, each its own gRPC server on its own
//! loopback port, for `turbomon scale`. It prints `engine I ADDRESS` for each engine, then
//! `ready`, on stdout, and serves until its stop signal.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::EngineConfig;
use crate::engine::Engine;

/// The line a farm prints once every engine is listening.
pub const READY: &str = "ready";

/// Binds `count` engines on 127.0.0.1, at `first_port`, `first_port + 1`, ... or, with
/// `first_port` 0, each on a free port; returns their addresses in order.
async fn bind(count: usize, first_port: u16) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    for i in 0..count {
        let port = if first_port == 0 {
            0
        } else {
            u16::try_from(usize::from(first_port) + i)
                .ok()
                .with_context(|| {
                    format!("--first-port {first_port} + {count} engines passes port 65535")
                })?
        };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        listeners.push(
            TcpListener::bind(address)
                .await
                .with_context(|| format!("engine {i}: cannot listen on {address}"))?,
        );
    }
    Ok(listeners)
}

/// Serves `count` engines (built-in engine defaults, no metrics endpoint) until `stop`
/// resolves, then stops them all (each drains as `turbomon engine` does on SIGTERM).
pub async fn run(
    count: usize,
    first_port: u16,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    anyhow::ensure!(count > 0, "--count must be at least 1");
    super::limits::ensure_for(count, "engine-farm").map_err(anyhow::Error::msg)?;
    let listeners = bind(count, first_port).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    let mut announce = String::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let address = listener.local_addr()?;
        announce.push_str(&format!("engine {i} {address}\n"));
        let engine = Engine::open(EngineConfig {
            listen: address.to_string(),
            metrics_listen: String::new(),
            ..EngineConfig::default()
        })?;
        let mut stopping = stop_rx.clone();
        servers.spawn(async move {
            let signal = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            engine.serve(listener, signal).await
        });
    }
    announce.push_str(READY);
    announce.push('\n');
    {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(announce.as_bytes())?;
        stdout.flush()?;
    }
    tracing::info!(target: "turbomon::scale", engines = count, "engine farm serving");
    tokio::select! {
        () = stop => {}
        Some(ended) = servers.join_next() => {
            // An engine that stops on its own is an error for the whole farm.
            ended.context("an engine task failed")??;
            anyhow::bail!("an engine stopped serving");
        }
    }
    stop_tx.send_replace(true);
    while let Some(ended) = servers.join_next().await {
        ended.context("an engine task failed")??;
    }
    Ok(())
}
