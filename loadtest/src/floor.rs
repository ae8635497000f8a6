//! `floor-proxy`: the smallest honest forwarding proxy. It accepts HTTP/1.1, forwards each
//! request to one upstream over pooled keep-alive connections and streams the answer back
//! byte for byte: no parsing, no policy, no logging. What a gateway adds beyond this is what
//! the gateway itself costs; what this adds is the price of one more hop on this machine.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Flags of `floor-proxy`.
#[derive(Parser, Clone, Debug)]
#[command(about = "Minimal forwarding proxy: the floor a gateway cannot beat")]
pub struct FloorConfig {
    /// Listen address; port 0 picks one (printed on stdout as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// The upstream, as host:port.
    #[arg(long)]
    pub upstream: String,
    /// Tokio worker threads (the edge uses one per core).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

type Body = BoxBody<bytes::Bytes, hyper::Error>;

/// Serves until the process ends.
pub async fn serve(config: FloorConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    println!("listening on {}", listener.local_addr()?);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::MAX)
        .build(connector);
    let upstream: Arc<str> = Arc::from(config.upstream.as_str());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| forward(client.clone(), upstream.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, hyper::Error> {
    let (mut parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(uri) = format!("http://{upstream}{path}").parse::<Uri>() else {
        return Ok(bad_gateway());
    };
    parts.uri = uri;
    parts.headers.remove(http::header::CONNECTION);
    if let Ok(host) = http::HeaderValue::from_str(&upstream) {
        parts.headers.insert(http::header::HOST, host);
    }
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response.map(BodyExt::boxed)),
        Err(_) => Ok(bad_gateway()),
    }
}

fn bad_gateway() -> Response<Body> {
    let body = http_body_util::Empty::new().map_err(|never| match never {});
    let mut response = Response::new(BodyExt::boxed(body));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}
