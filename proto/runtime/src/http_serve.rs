//! Serving HTTP (the edge's API, the aggregator's CSV export) with limits that hold under abuse.
//!
//! - The request head must arrive within `header_read_timeout`, the first and every later one
//!   on a kept-alive connection, so a slowloris client or an idle connection is closed.
//! - At most `max_connections` connections are served at once; more wait in the listen backlog.
//! - TCP_NODELAY on every connection: without it a small write (an SSE chunk, the end of a
//!   response) can wait ~40 ms for the peer's delayed ACK.
//! - On shutdown, connections finish their requests for at most `drain_timeout`.
//!
//! - With TLS, the handshake must also finish within `header_read_timeout`.
//!
//! HTTP/1.1 only (ALPN offers `http/1.1` under TLS): HTTP/2 with prior knowledge would need a
//! read of its preface that no header timeout covers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::repoll::RepollOnSelfWake;
use crate::tls::ReloadingTls;

/// What a listener allows.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client may take to send a request head, and how long a kept-alive
    /// connection may stay idle.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long open connections may finish after shutdown begins.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// `TOLLGATE_METRICS_ADDR` as `get` reads it: where a role serves `/metrics` (plain HTTP)
/// instead of on its main listener, so that the scrape need not be public.
pub fn metrics_addr(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Option<std::net::SocketAddr>, String> {
    match get("TOLLGATE_METRICS_ADDR").filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(addr) => addr
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| format!("{e} (an address like 0.0.0.0:9464)")),
    }
}

/// Serves `/metrics` (`scrape`) on `listener` in plain HTTP, on a task of its own, until `stop`
/// turns true.
pub fn spawn_metrics(
    listener: TcpListener,
    scrape: axum::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    tokio::spawn(serve(listener, scrape, Limits::default(), None, stopped));
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` completes, then
/// lets open connections finish.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    tls: Option<Arc<ReloadingTls>>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            tcp = crate::accept_nodelay(&listener) => tcp,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone());
        match &tls {
            None => {
                let connection = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
                let connection = RepollOnSelfWake::new(connection);
                tokio::spawn(async move {
                    // A client that goes away or breaks the protocol ends only its own connection.
                    let _ = connection.await;
                    drop(permit);
                });
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                let (http, watcher) = (http.clone(), graceful.watcher());
                let handshake_timeout = limits.header_read_timeout;
                tokio::spawn(async move {
                    let accepted = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp));
                    if let Ok(Ok(stream)) = accepted.await {
                        let connection = http.serve_connection(TokioIo::new(stream), service);
                        let _ = RepollOnSelfWake::new(watcher.watch(connection)).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(limits.drain_timeout, graceful.shutdown()).await;
    Ok(())
}
