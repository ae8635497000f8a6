//! `tollgate health`: asks this machine's role for its health, for container health checks
//! (the image has no shell and no curl). Exits 0 when the role answers healthy.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tollgate_runtime::tls::ClientTls;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A health check that takes longer is a failed one.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Checks `role` (`edge`, `control-plane` or `aggregator`) on the port its settings give, on
/// 127.0.0.1: the edge's `/health/ready`, the others' `grpc.health.v1`.
pub async fn check(role: &str, get: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    let tls = get("TOLLGATE_TLS_CERT").is_some();
    let port = |name: &str, default: &str| -> anyhow::Result<u16> {
        let addr: SocketAddr = get(name)
            .unwrap_or_else(|| default.to_owned())
            .parse()
            .with_context(|| format!("{name} is not an address"))?;
        Ok(addr.port())
    };
    match role {
        "edge" => edge(port("TOLLGATE_EDGE_ADDR", "127.0.0.1:4000")?, tls).await,
        "control-plane" => grpc(port("TOLLGATE_ADMIN_ADDR", "127.0.0.1:50051")?, tls, &get).await,
        "aggregator" => grpc(port("TOLLGATE_USAGE_ADDR", "127.0.0.1:50052")?, tls, &get).await,
        other => bail!("no role {other:?}: edge, control-plane or aggregator"),
    }
}

async fn edge(port: u16, tls: bool) -> anyhow::Result<()> {
    let scheme = if tls { "https" } else { "http" };
    // The process's own loopback listener, whose certificate names the service rather than
    // 127.0.0.1; all this learns is a status code, and it sends nothing secret.
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .tls_danger_accept_invalid_certs(true)
        .build()?;
    let response = client
        .get(format!("{scheme}://127.0.0.1:{port}/health/ready"))
        .send()
        .await
        .with_context(|| format!("the edge does not answer on port {port}"))?;
    if !response.status().is_success() {
        let status = response.status();
        bail!(
            "the edge is not ready ({status}): {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

async fn grpc(port: u16, tls: bool, get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
    let endpoint = if tls {
        // Verified like any client of the role (TOLLGATE_TLS_CA): the certificate must name
        // localhost.
        ClientTls::from_settings(get)
            .map_err(|missing| anyhow::anyhow!("{missing} is required beside the other half"))?
            .endpoint(&format!("https://localhost:{port}"))?
    } else {
        tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
    };
    let channel = endpoint
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("nothing answers gRPC on port {port}"))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .context("the health check failed")?
        .into_inner()
        .status;
    if status != ServingStatus::Serving as i32 {
        bail!("not serving (status {status})");
    }
    Ok(())
}
