//! Where a provider call's connection goes: straight to the upstream, or, for an `https`
//! upstream, through a tunnel (HTTP `CONNECT`) of the proxy the environment names for it:
//! `HTTPS_PROXY` or `ALL_PROXY` (and their lowercase forms), with `NO_PROXY` exempting hosts,
//! as curl and most HTTP clients read them.
//!
//! Through a proxy, the proxy resolves the upstream's name, so the egress policy judges the
//! proxy's address (by the resolver) and the upstream's name and any IP literal (before the
//! call), not the address the proxy reaches. Plain `http` upstreams, which are local servers
//! in practice, are always called directly.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::Uri;
use http::uri::Scheme;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use super::egress::HyperResolver;

/// The error of the connectors under the provider client (hyper-util's connector bound).
pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The TCP connector of provider calls, tunnelling through a proxy where one is named.
#[derive(Clone)]
pub(super) struct Route {
    direct: HttpConnector<HyperResolver>,
    proxies: Arc<Matcher>,
}

impl Route {
    /// Connections made by `direct`, through the proxies `proxies` names.
    pub(super) fn new(direct: HttpConnector<HyperResolver>, proxies: Matcher) -> Self {
        Route {
            direct,
            proxies: Arc::new(proxies),
        }
    }
}

impl Service<Uri> for Route {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<TokioIo<TcpStream>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let proxy = match dst.scheme() {
            Some(scheme) if *scheme == Scheme::HTTPS => self.proxies.intercept(&dst),
            _ => None,
        };
        let Some(proxy) = proxy else {
            let connecting = self.direct.call(dst);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        let mut tunnel = Tunnel::new(proxy.uri().clone(), self.direct.clone());
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        Box::pin(async move { tunnel.call(dst).await.map_err(Into::into) })
    }
}
