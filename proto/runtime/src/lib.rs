//! What the three roles run on: the bus (NATS JetStream or in-process) that carries policy and
//! usage events between them, the follower that keeps a role's copy of policy current from it,
//! the wire form of policy events, snapshot and event signing, credential envelopes, TLS and
//! HTTP serving, the gRPC health service and the egress guard for outbound calls.
//!
//! It lives beside the contracts (`tollgate-proto`) rather than in them so that the contracts
//! depend on nothing of ours, and it is one crate so that the roles share one copy of each.

pub mod bus;
pub mod egress;
pub mod envelope;
pub mod events;
pub mod follow;
pub mod health;
pub mod http_serve;
pub mod process;
pub mod repoll;
pub mod settings;
pub mod signing;
pub mod tls;

/// The connections `listener` accepts, with TCP_NODELAY set, for a gRPC server: without it a
/// response written in several parts (headers, a page of events, trailers) waits ~40 ms for
/// the client's delayed ACK.
pub fn incoming_nodelay(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|tcp| {
        if let Ok(tcp) = &tcp {
            let _ = tcp.set_nodelay(true);
        }
        tcp
    })
}

/// The next connection `listener` accepts, with TCP_NODELAY set (see [`incoming_nodelay`]). A
/// failed accept (out of file descriptors and the like) is logged and retried after a pause
/// rather than in a spin. Cancel-safe: dropping it loses no connection.
pub async fn accept_nodelay(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                let _ = tcp.set_nodelay(true);
                return tcp;
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
