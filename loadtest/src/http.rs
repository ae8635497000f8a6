//! Small HTTP calls of the runner itself (health, readiness, probes) over one pooled client.

use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> &'static HttpClient {
    static CLIENT: OnceLock<HttpClient> = OnceLock::new();
    CLIENT.get_or_init(crate::load::client)
}

/// GET `http://{addr}{path}`: status and body.
pub async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, Bytes)> {
    let request =
        http::Request::get(format!("http://{addr}{path}")).body(Full::new(Bytes::new()))?;
    send(request).await
}

/// POST a JSON body with an optional `authorization` value: status and body.
pub async fn post(
    addr: &str,
    path: &str,
    auth: Option<&str>,
    body: Bytes,
) -> anyhow::Result<(u16, Bytes)> {
    let mut builder = http::Request::post(format!("http://{addr}{path}"))
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        builder = builder.header(http::header::AUTHORIZATION, auth);
    }
    send(builder.body(Full::new(body))?).await
}

async fn send(request: http::Request<Full<Bytes>>) -> anyhow::Result<(u16, Bytes)> {
    let response = client().request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}
