//! The edge's listener holds under abuse: a client that sends its request head a byte at a
//! time (slowloris) is cut off within the header timeout, and one that trickles its body in
//! gets 408 within the body timeout; other clients are served meanwhile.

use tollgate_test_support::edge as common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);

async fn edge() -> Result<(TestEdge, String)> {
    let (nats, prefix, bus) = jetstream().await?;
    let cp = TestControlPlane::on_bus(bus.clone()).await?;
    let mut admin = cp.admin().await?;
    mock_deployment(&mut admin, "mock", &[]).await?;
    let (_, secret) = create_key(&mut admin, &[]).await?;
    let mut config = TestEdge::config(&nats, &prefix);
    config.listener.header_read_timeout = HEADER_TIMEOUT;
    config.body_read_timeout = BODY_TIMEOUT;
    let edge = TestEdge::start_with(config, bus, Some(cp.url())).await?;
    edge.wait_for_sequence(last_sequence(&mut admin).await?)
        .await?;
    Ok((edge, secret))
}

/// Writes `bytes` one per second until the server closes the connection; how long that took.
async fn trickle(stream: &mut TcpStream, bytes: &[u8]) -> Result<Duration> {
    let started = Instant::now();
    for byte in bytes {
        if stream.write_all(&[*byte]).await.is_err() {
            return Ok(started.elapsed());
        }
        // A closed connection shows as end of stream (or a reset) when read.
        let mut probe = [0u8; 512];
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut probe)).await {
            Ok(Ok(0) | Err(_)) => return Ok(started.elapsed()),
            Ok(Ok(_)) => return Ok(started.elapsed()),
            Err(_) => {}
        }
    }
    anyhow::bail!("the server was still reading after {:?}", started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_off_within_the_header_timeout() -> Result<()> {
    let (edge, secret) = edge().await?;
    let mut stream = TcpStream::connect(edge.addr).await?;
    let head =
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: edge\r\nx-padding: aaaaaaaaaaaaaaaa\r\n";
    let cut_after = trickle(&mut stream, head).await?;
    assert!(
        cut_after <= HEADER_TIMEOUT + Duration::from_secs(2),
        "cut after {cut_after:?} (header timeout {HEADER_TIMEOUT:?})"
    );

    // Meanwhile, and after, others are served.
    let response = reqwest::Client::new()
        .post(edge.url("/v1/chat/completions"))
        .bearer_auth(&secret)
        .json(&json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_gets_408_within_the_body_timeout() -> Result<()> {
    let (edge, secret) = edge().await?;
    let mut stream = TcpStream::connect(edge.addr).await?;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {secret}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let started = Instant::now();
    let mut answer = Vec::new();
    for _ in 0..20 {
        let _ = stream.write_all(b" ").await;
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await
        {
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(
        started.elapsed() <= BODY_TIMEOUT + Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    Ok(())
}
