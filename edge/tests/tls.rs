//! The edge terminates TLS: with `TOLLGATE_TLS_CERT` / `TOLLGATE_TLS_KEY` it serves HTTPS only,
//! and a certificate replaced on disk is picked up for new connections while open ones carry
//! on. Certificates: `tests/fixtures/tls` (two test CAs, one edge certificate from each).

use tollgate_test_support::edge as common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_runtime::tls::TlsFiles;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// Puts edge certificate `which` (`a` or `b`) where the edge reads its certificate.
fn install(dir: &Path, which: &str) -> Result<()> {
    std::fs::copy(fixture(&format!("edge-{which}.key")), dir.join("key.pem"))?;
    std::fs::copy(fixture(&format!("edge-{which}.pem")), dir.join("cert.pem"))?;
    Ok(())
}

/// An HTTPS client that trusts only test CA `which`, with a connection of its own.
fn client(which: &str) -> Result<reqwest::Client> {
    let ca = std::fs::read(fixture(&format!("ca-{which}.pem")))?;
    Ok(reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca)?])
        .pool_max_idle_per_host(0)
        .build()?)
}

async fn live(client: &reqwest::Client, port: u16) -> Result<u16> {
    let url = format!("https://127.0.0.1:{port}/health/live");
    Ok(client.get(url).send().await?.status().as_u16())
}

/// A raw TLS connection trusting CA `which`, kept open across requests.
async fn connection(
    which: &str,
    port: u16,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(fixture(&format!(
        "ca-{which}.pem"
    )))?)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    Ok(connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?)
}

/// Sends one keep-alive request on `stream` and reads the answer's status.
async fn get_on<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
) -> Result<u16> {
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .context("no answer on the open connection")??;
        anyhow::ensure!(n > 0, "the connection was closed");
        answer.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if answer.len() >= end + 4 + length {
                let status = text.split(' ').nth(1).context("a status line")?;
                return Ok(status.parse()?);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_serves_https_and_reloads_its_certificate_without_dropping_connections()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    install(dir.path(), "a")?;
    let (nats, prefix, bus) = jetstream().await?;
    let mut config = TestEdge::config(&nats, &prefix);
    config.tls = Some(TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        client_ca: None,
    });
    let edge = TestEdge::start_with(config, bus, None).await?;
    let port = edge.addr.port();

    assert_eq!(live(&client("a")?, port).await?, 200);
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/health/live")).await;
    assert!(
        plain.is_err_and(|e| !e.is_status()),
        "plain HTTP was answered on the TLS port"
    );
    let mut open = connection("a", port).await?;
    assert_eq!(get_on(&mut open).await?, 200);

    // The certificate is replaced on disk: new connections get it within a few seconds.
    install(dir.path(), "b")?;
    let client_b = client("b")?;
    eventually(Duration::from_secs(10), || async {
        matches!(live(&client_b, port).await, Ok(200))
    })
    .await
    .context("the new certificate was never served")?;
    assert!(
        live(&client("a")?, port).await.is_err(),
        "a new connection still got the old certificate"
    );
    // The connection opened before the reload is still served.
    assert_eq!(get_on(&mut open).await?, 200);

    // A broken file is not taken: the last good certificate stays.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(live(&client_b, port).await?, 200);
    Ok(())
}

#[test]
fn a_certificate_without_its_key_is_a_configuration_error() {
    let lookup = |name: &str| match name {
        "NATS_URL" => Some("nats://127.0.0.1:4222".to_owned()),
        "TOLLGATE_TLS_CERT" => Some("/etc/tollgate/cert.pem".to_owned()),
        _ => None,
    };
    let refused = tollgate_edge::config::EdgeConfig::from_lookup(lookup);
    let message = refused.map(drop).map_err(|e| e.to_string());
    assert_eq!(message, Err("TOLLGATE_TLS_KEY is required".to_owned()));
}
