//! The edge's listener holds under abuse: a client that sends its request head a byte at a
//! time (slowloris) is cut off within the header timeout, one that trickles its body in gets 408
//! within the body timeout, and one whose body is over the size limit gets 413 (before sending
//! it, when its length is declared); other clients are served meanwhile.
//!
//! These talk raw TCP: an HTTP client writing a body the server has refused may see the closed
//! socket before the answer, and the tests would race.

use tollgate_test_support::edge as common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollgate_edge::config::EdgeConfig;

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const BODY_TIMEOUT: Duration = Duration::from_secs(2);

async fn edge() -> Result<(TestEdge, String)> {
    edge_with(|_| {}).await
}

async fn edge_with(tune: impl FnOnce(&mut EdgeConfig)) -> Result<(TestEdge, String)> {
    let mut cluster = TestCluster::start().await?;
    mock_deployment(&mut cluster.admin, "mock", &[]).await?;
    let (_, secret) = create_key(&mut cluster.admin, &[]).await?;
    let edge = cluster
        .edge_with(|config| {
            config.listener.header_read_timeout = HEADER_TIMEOUT;
            config.body_read_timeout = BODY_TIMEOUT;
            tune(config);
        })
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
    let response = edge.chat(&secret, &chat_request("mock", "hi")).await?;
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

/// Writes `head` and `body`, then reads the answer: its head and as much body as it declares.
async fn exchange(edge: &TestEdge, head: &str, body: &[u8]) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(edge.addr).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await?;
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || complete(&answer) {
                return anyhow::Ok(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await??;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer: {answer}"))?;
    Ok((status, answer))
}

/// Whether `answer` holds a whole response head and the body its content-length declares.
fn complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let declared = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|n| n.trim().parse::<usize>().ok());
    declared.is_some_and(|n| answer.len() >= end + 4 + n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_over_the_limit_gets_413_before_it_is_sent() -> Result<()> {
    let (edge, secret) = edge().await?;
    let declared = 11 * 1024 * 1024;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {secret}\r\n\
         content-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
    );
    // Only the head: an edge that waited for the body would answer 408 after the body timeout.
    let (status, answer) = exchange(&edge, &head, b"").await?;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_limit_gets_413() -> Result<()> {
    let limit = 64 * 1024;
    let (edge, secret) = edge_with(|config| config.max_body_bytes = limit).await?;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: edge\r\nauthorization: Bearer {secret}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    // One byte over the limit, and no more: the edge reads all of it, so closing the connection
    // leaves nothing unread that would turn into a reset.
    let mut body = format!("{:x}\r\n", limit + 1).into_bytes();
    body.extend(std::iter::repeat_n(b'x', limit + 1));
    body.extend_from_slice(b"\r\n");
    let (status, answer) = exchange(&edge, &head, &body).await?;
    assert_eq!(status, 413, "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");

    // A body at the limit is read (and, not being JSON, refused as such).
    let mut body = format!("{limit:x}\r\n").into_bytes();
    body.extend(std::iter::repeat_n(b'x', limit));
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let (status, answer) = exchange(&edge, &head, &body).await?;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("invalid_request_error"), "{answer}");
    Ok(())
}
