//! The HTTP client the providers call their upstreams with (OpenAI and compatible servers, Azure
//! OpenAI, Anthropic, Gemini): hyper-util's pooled client over hyper-rustls, HTTP/1.1, and
//! HTTP/2 where TLS negotiates it (ALPN). It stands in for reqwest on the request path, where
//! reqwest's per-request URL parsing (IDNA included), redirect and retry layers and header
//! copies cost about 35 allocations per call; reqwest stays for the calls off that path.
//!
//! Connections go only where the egress policy allows ([`Egress`]): a host name is judged after
//! DNS (the connector's resolver is [`Egress::resolve`]), an IP literal, which the connector
//! does not resolve, just before connecting. No redirect is followed (the client has no such
//! layer: a 3xx is the upstream's answer) and no request is sent twice: the edge retries
//! failed calls itself. The one re-send the client does, like reqwest's did, is of a request
//! none of which was written because the pooled connection it was given had closed. An
//! `https` upstream is reached through the proxy the environment names, if any ([`Route`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use http::uri::{Authority, Uri};
use http::{Method, Request};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use percent_encoding::percent_decode_str;
use tokio::net::TcpStream;
use tollgate_policy::model::Deployment;
use tower::Service;

use super::UpstreamError;
use super::egress::{Egress, HyperResolver};
use super::proxy::{BoxError, Route};

/// An upstream's answer, its body still to be read.
pub type UpstreamResponse = http::Response<Incoming>;

/// How long an unused pooled connection is kept (as reqwest's default was).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// TCP keepalive probes on idle connections: first after this long, then at this interval.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
/// Unanswered keepalive probes before the connection is dropped.
const TCP_KEEPALIVE_RETRIES: u32 = 3;
/// How long sent data may stay unacknowledged before the connection is dropped (Linux).
#[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The pooled client all HTTP providers share; cheap to clone.
#[derive(Clone)]
pub struct UpstreamClient {
    client: Client<Guarded, Full<Bytes>>,
}

impl UpstreamClient {
    /// A client trusting the system's root certificates (an error when there are none), whose
    /// connections (DNS, TCP and TLS) must be made within `connect_timeout`.
    pub fn new(connect_timeout: Duration, egress: Egress) -> io::Result<Self> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_native_roots()?
        .with_no_client_auth();
        Ok(Self::with_tls(
            connect_timeout,
            egress,
            tls,
            Matcher::from_env(),
        ))
    }

    /// A client with its own TLS configuration and proxies (tests: a test CA, a local proxy).
    fn with_tls(
        connect_timeout: Duration,
        egress: Egress,
        tls: rustls::ClientConfig,
        proxies: Matcher,
    ) -> Self {
        let mut tcp = HttpConnector::new_with_resolver(HyperResolver(egress.clone()));
        // `https` URIs are the TLS connector's to handle.
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.set_nodelay(true);
        // Keepalive as reqwest's defaults had it, so a silently dead pooled connection is
        // noticed rather than handed to a request.
        tcp.set_keepalive(Some(TCP_KEEPALIVE));
        tcp.set_keepalive_interval(Some(TCP_KEEPALIVE));
        tcp.set_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        tcp.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
        let tls = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(Route::new(tcp, proxies));
        let connector = Guarded {
            tls,
            egress,
            connect_timeout,
        };
        let client = Client::builder(TokioExecutor::new())
            // Without a pool timer, idle connections would never expire.
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        UpstreamClient { client }
    }

    /// POSTs `body` (JSON) to `uri` with `headers` (the provider's own, credentials among
    /// them); the answer is the future's. User info in the URI becomes basic authentication
    /// when the headers carry no `Authorization`, as reqwest did.
    pub fn post_json(&self, uri: Uri, mut headers: HeaderMap, body: Bytes) -> ResponseFuture {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // What reqwest sent by default; some servers answer a request without it differently.
        if !headers.contains_key(ACCEPT) {
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        let uri = match uri.authority().map(Authority::as_str) {
            Some(authority) if authority.contains('@') => without_user_info(uri, &mut headers),
            _ => uri,
        };
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        self.client.request(request)
    }
}

/// `uri` without its user info, which goes into `headers` as basic authentication unless they
/// authenticate already (hyper would not send it as that, and over HTTP/2 would send it as
/// part of the `:authority`).
fn without_user_info(uri: Uri, headers: &mut HeaderMap) -> Uri {
    let mut parts = uri.into_parts();
    let Some(authority) = parts.authority.take() else {
        return Uri::from_parts(parts).unwrap_or_default();
    };
    let (user_info, host) = authority
        .as_str()
        .rsplit_once('@')
        .unwrap_or(("", authority.as_str()));
    if !headers.contains_key(AUTHORIZATION) && !user_info.is_empty() {
        let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
        let decoded = |part| percent_decode_str(part).decode_utf8_lossy();
        let credentials = format!("{}:{}", decoded(user), decoded(password));
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        if let Ok(mut value) = HeaderValue::try_from(format!("Basic {encoded}")) {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
    }
    parts.authority = Authority::try_from(host).ok();
    Uri::from_parts(parts).unwrap_or_default()
}

/// The URI of an upstream call from `url`, a deployment's API base and a path: an absolute
/// `http` or `https` URL. A URL that `http` does not take as it is (a non-ASCII host, a space)
/// is normalized by a URL parser first, as reqwest did; only such URLs pay for that parser.
/// The error does not repeat the URL: its query may carry a secret.
pub(super) fn upstream_uri(url: String, deployment: &Deployment) -> Result<Uri, UpstreamError> {
    let bytes = Bytes::from(url);
    let uri = match Uri::from_maybe_shared(bytes.clone()) {
        Ok(uri) => uri,
        Err(e) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|url| reqwest::Url::parse(url).ok())
            .and_then(|url| Uri::try_from(url.as_str()).ok())
            .ok_or_else(|| not_a_url(deployment, &e.to_string()))?,
    };
    let absolute = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri
            .authority()
            .is_some_and(|a| !a.host().is_empty() && port_is_valid(a));
    if !absolute {
        return Err(not_a_url(deployment, "not an absolute http or https URL"));
    }
    Ok(uri)
}

/// Whether the port `authority` names, if any, is a number below 65536 (an empty one names
/// none, as URL parsers take it): `http` ignores any other, and the default port would be
/// called instead.
fn port_is_valid(authority: &Authority) -> bool {
    let text = authority.as_str();
    let host_and_port = text.rsplit_once('@').map_or(text, |(_, rest)| rest);
    let port = host_and_port
        .get(authority.host().len()..)
        .unwrap_or_default();
    match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(digits) => {
            digits.bytes().all(|b| b.is_ascii_digit())
                && (digits.is_empty() || digits.parse::<u16>().is_ok())
        }
    }
}

fn not_a_url(deployment: &Deployment, why: &str) -> UpstreamError {
    UpstreamError::Failed(format!(
        "deployment {}: its API base is not a URL ({why})",
        deployment.id
    ))
}

/// The TLS connector, refusing IP literals the policy forbids (the resolver never sees them)
/// and bounding a whole connection (DNS, TCP, TLS) by the connect timeout, as reqwest did.
#[derive(Clone)]
struct Guarded {
    tls: HttpsConnector<Route>,
    egress: Egress,
    connect_timeout: Duration,
}

impl Service<Uri> for Guarded {
    type Response = MaybeHttpsStream<TokioIo<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tls.poll_ready(cx)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        if let Err(refused) = self.egress.check_literal(dst.host().unwrap_or_default()) {
            return Box::pin(std::future::ready(Err(refused.into())));
        }
        let connecting = self.tls.call(dst);
        let timeout = self.connect_timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting took longer than {timeout:?}"),
                )
                .into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tollgate_policy::egress::Networks;

    use super::super::egress::Lookup;
    use super::super::test_deployment as deployment;
    use super::*;

    /// A local server answering every request with the `Authorization` header it got, counting
    /// the requests; its port.
    async fn server(hits: Arc<AtomicUsize>) -> anyhow::Result<u16> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            hits.fetch_add(1, Ordering::SeqCst);
            let authorization = headers
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            async move { authorization }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(port)
    }

    fn client(egress: Egress) -> anyhow::Result<UpstreamClient> {
        Ok(UpstreamClient::new(Duration::from_secs(2), egress)?)
    }

    fn post(client: &UpstreamClient, url: String) -> anyhow::Result<ResponseFuture> {
        let uri = upstream_uri(url, &deployment())?;
        Ok(client.post_json(uri, HeaderMap::new(), Bytes::from_static(b"{}")))
    }

    /// A name that resolves to the metadata address only when the call is made (DNS
    /// rebinding): the client refuses it before connecting; a name resolving to the test
    /// server itself is served. An IP literal the policy forbids is refused at connect time
    /// too, whatever was checked before.
    #[tokio::test]
    async fn a_name_resolving_to_a_metadata_address_at_call_time_is_refused() -> anyhow::Result<()>
    {
        let hits = Arc::new(AtomicUsize::new(0));
        let port = server(hits.clone()).await?;
        let lookup: Lookup = Arc::new(|host: String| {
            Box::pin(async move {
                Ok(match host.as_str() {
                    "rebound.test" => {
                        vec!["169.254.169.254".parse().map_err(std::io::Error::other)?]
                    }
                    _ => vec![IpAddr::from([127, 0, 0, 1])],
                })
            })
        });
        let client = client(Egress::new(Networks::default()).with_lookup(lookup))?;
        let refused = post(&client, format!("http://rebound.test:{port}/"))?.await;
        let error = refused.err().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(error.contains("link-local"), "{error}");
        let served = post(&client, format!("http://served.test:{port}/"))?.await?;
        assert_eq!(served.status(), 200);
        assert_eq!(hits.load(Ordering::SeqCst), 1);

        let closed = client_closed()?;
        let refused = post(&closed, format!("http://127.0.0.1:{port}/"))?.await;
        let error = refused.err().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(error.contains("loopback"), "{error}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        Ok(())
    }

    fn client_closed() -> anyhow::Result<UpstreamClient> {
        client(Egress::new(Networks {
            loopback: false,
            private: false,
        }))
    }

    #[tokio::test]
    async fn user_info_becomes_basic_authentication() -> anyhow::Result<()> {
        let port = server(Arc::new(AtomicUsize::new(0))).await?;
        let client = client(Egress::default())?;
        let answer = post(
            &client,
            format!("http://us%40er:p%3Ass@127.0.0.1:{port}/v1"),
        )?
        .await?;
        let body = http_body_util::BodyExt::collect(answer.into_body()).await?;
        let expected = base64::engine::general_purpose::STANDARD.encode("us@er:p:ss");
        assert_eq!(body.to_bytes(), format!("Basic {expected}"));
        Ok(())
    }

    /// An HTTPS server (test CA a's certificate for `localhost`) speaking HTTP/2 or HTTP/1.1
    /// as the handshake chose, answering with the HTTP version it served; its port.
    async fn https_server() -> anyhow::Result<u16> {
        use hyper::server::conn::{http1, http2};
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let chain =
            CertificateDer::pem_file_iter(fixture("edge-a.pem"))?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(fixture("edge-a.key"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                    let service = hyper::service::service_fn(|request: Request<Incoming>| {
                        let version = format!("{:?}", request.version());
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                Bytes::from(version),
                            )))
                        }
                    });
                    let io = TokioIo::new(stream);
                    let _ = if h2 {
                        http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await
                    } else {
                        http1::Builder::new().serve_connection(io, service).await
                    };
                });
            }
        });
        Ok(port)
    }

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    /// A client trusting test CA a, calling every name at 127.0.0.1, through `proxies`.
    fn test_ca_client(proxies: Matcher) -> anyhow::Result<UpstreamClient> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(fixture("ca-a.pem"))?)?;
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let lookup: Lookup =
            Arc::new(|_: String| Box::pin(async { Ok(vec![IpAddr::from([127, 0, 0, 1])]) }));
        let egress = Egress::new(Networks::default()).with_lookup(lookup);
        Ok(UpstreamClient::with_tls(
            Duration::from_secs(2),
            egress,
            tls,
            proxies,
        ))
    }

    /// Over TLS the client offers HTTP/2, and a server that takes it is called with it.
    #[tokio::test]
    async fn https_upstreams_are_called_over_http2_when_they_offer_it() -> anyhow::Result<()> {
        let port = https_server().await?;
        let client = test_ca_client(Matcher::builder().build())?;
        for _ in 0..2 {
            let answer = post(&client, format!("https://localhost:{port}/v1"))?.await?;
            assert_eq!(answer.version(), http::Version::HTTP_2);
            let body = http_body_util::BodyExt::collect(answer.into_body()).await?;
            assert_eq!(body.to_bytes(), "HTTP/2.0");
        }
        Ok(())
    }

    /// A local HTTP proxy that opens `CONNECT` tunnels, recording each request head it got;
    /// its port.
    async fn connect_proxy(heads: Arc<std::sync::Mutex<Vec<String>>>) -> anyhow::Result<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let heads = heads.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let Ok(byte) = client.read_u8().await else {
                            return;
                        };
                        head.push(byte);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    heads.lock().unwrap_or_else(|e| e.into_inner()).push(head);
                    let Ok(mut upstream) = TcpStream::connect(target).await else {
                        return;
                    };
                    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
                    if client.write_all(established).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Ok(port)
    }

    /// With a proxy named for `https`, an https upstream is reached through a `CONNECT` tunnel
    /// (with the proxy's credentials) and TLS runs end to end inside it; an upstream the
    /// `no_proxy` list names, and a plain http one, are called directly.
    #[tokio::test]
    async fn https_upstreams_go_through_the_named_proxy_unless_exempted() -> anyhow::Result<()> {
        let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let proxy = connect_proxy(heads.clone()).await?;
        let upstream = https_server().await?;
        let proxies = Matcher::builder()
            .https(format!("http://user:secret@127.0.0.1:{proxy}"))
            .no("exempt.test")
            .build();
        let client = test_ca_client(proxies)?;

        let answer = post(&client, format!("https://localhost:{upstream}/v1"))?.await?;
        let body = http_body_util::BodyExt::collect(answer.into_body()).await?;
        assert_eq!(body.to_bytes(), "HTTP/2.0");
        let seen = heads.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].starts_with(&format!("CONNECT localhost:{upstream} HTTP/1.1")));
        let expected = base64::engine::general_purpose::STANDARD.encode("user:secret");
        assert!(seen[0].contains(&format!("Proxy-Authorization: Basic {expected}")));

        // Not a name the test CA's certificate holds: refused by TLS, but never tunnelled.
        let exempt = post(&client, format!("https://exempt.test:{upstream}/v1"))?.await;
        assert!(exempt.is_err());
        let hits = Arc::new(AtomicUsize::new(0));
        let plain = server(hits.clone()).await?;
        post(&client, format!("http://127.0.0.1:{plain}/v1"))?.await?;
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(heads.lock().unwrap_or_else(|e| e.into_inner()).len(), 1);
        Ok(())
    }

    /// Failures map as reqwest's did, and their messages never hold the URL: a refused
    /// connection, a connection closed before answering, a TLS handshake that never ends.
    #[tokio::test]
    async fn failures_map_to_upstream_errors_without_the_url() -> anyhow::Result<()> {
        use super::super::http::transport_error;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        // Takes connections and reads nothing: closes the first at once, holds the others.
        tokio::spawn(async move {
            let mut held = Vec::new();
            let mut first = true;
            while let Ok((tcp, _)) = listener.accept().await {
                if !std::mem::take(&mut first) {
                    held.push(tcp);
                }
            }
        });
        let client = UpstreamClient::new(Duration::from_millis(300), Egress::default())?;
        let what = "deployment d1";
        let mapped = |e: hyper_util::client::legacy::Error| {
            let mapped = transport_error(&e, what);
            assert!(!mapped.to_string().contains("secret"), "{mapped}");
            mapped
        };

        let closed = post(&client, format!("http://127.0.0.1:{port}/v1?key=secret"))?.await;
        let closed = closed.err().map(mapped);
        assert!(
            matches!(&closed, Some(UpstreamError::Failed(m))
                if m.starts_with("deployment d1 failed: client error")
                && m.ends_with("connection closed before message completed")),
            "{closed:?}"
        );
        let stalled = post(&client, format!("https://127.0.0.1:{port}/v1?key=secret"))?.await;
        let stalled = stalled.err().map(mapped);
        assert!(
            matches!(&stalled, Some(UpstreamError::Timeout(m)) if m == "deployment d1 timed out"),
            "{stalled:?}"
        );
        let refused = post(
            &client_closed()?,
            format!("http://127.0.0.1:{port}/?key=secret"),
        )?;
        let refused = refused.await.err().map(mapped);
        assert!(
            matches!(&refused, Some(UpstreamError::Failed(m)) if m == "could not connect to deployment d1"),
            "{refused:?}"
        );
        Ok(())
    }

    /// A connect that fails because this process is at its open-file limit is the edge's
    /// shortage, not the deployment's failure (hyper keeps the system's error as the cause).
    #[tokio::test]
    async fn running_out_of_file_descriptors_is_the_edges_failure() -> anyhow::Result<()> {
        use super::super::http::transport_error;

        // Fails as socket(2) does for a process at its limit.
        let out_of_files = tower::service_fn(|_: Uri| {
            std::future::ready(Err::<TokioIo<TcpStream>, _>(io::Error::from_raw_os_error(
                libc::EMFILE,
            )))
        });
        let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(out_of_files);
        let request = Request::post("http://127.0.0.1:9/v1").body(Full::new(Bytes::new()))?;
        let Err(error) = client.request(request).await else {
            anyhow::bail!("a call without a socket succeeded");
        };
        let mapped = transport_error(&error, "deployment d1");
        assert!(
            matches!(&mapped, UpstreamError::Local(m)
                if m == "deployment d1 was not called: this gateway is out of file descriptors"),
            "{mapped:?}"
        );
        assert_eq!(mapped.code(), "upstream_error");
        Ok(())
    }

    #[test]
    fn only_absolute_http_urls_are_taken_and_never_echoed() {
        let uri = |url: &str| upstream_uri(url.to_owned(), &deployment());
        assert!(uri("http://127.0.0.1:8000/v1/chat/completions").is_ok());
        assert!(uri("HTTPS://api.example.com/v1/embeddings?x=1").is_ok());
        assert!(uri("http://[::1]:8080/v1").is_ok());
        assert!(uri("http://u:p@h:/v1").is_ok());
        // What `http` refuses but a URL parser normalizes.
        let normalized = uri("https://exämple.com/v1/a b").map(|u| u.to_string());
        assert_eq!(
            normalized.ok().as_deref(),
            Some("https://xn--exmple-cua.com/v1/a%20b")
        );
        for url in [
            "not a url?token=secret",
            "ftp://h/x?token=secret",
            "/v1/chat?token=secret",
            "http://h:99999/v1?token=secret",
            "http://h:+80/v1?token=secret",
            "localhost:8000/v1?token=secret",
        ] {
            match uri(url) {
                Err(UpstreamError::Failed(message)) => {
                    assert!(message.contains("deployment d1"), "{message}");
                    assert!(!message.contains("secret"), "{message}");
                }
                other => panic!("{url}: expected a failure, got {other:?}"),
            }
        }
    }
}
