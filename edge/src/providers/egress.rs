//! The edge's side of the egress policy (`tollgate_runtime::egress`): the same judgement for
//! each HTTP client the providers use, through that client's resolver hook.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use futures::future::BoxFuture;
use hyper_util::client::legacy::connect::dns::Name;
pub use tollgate_runtime::egress::{Egress, Lookup, Refused};
use tower::Service;

/// The egress policy as the AWS SDK's resolver.
#[derive(Clone, Debug)]
pub struct AwsResolver(pub Egress);

impl ResolveDns for AwsResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        let host = name.to_owned();
        DnsFuture::new(async move {
            self.0
                .resolve(host)
                .await
                .map(|addrs| addrs.into_iter().map(|a| a.ip()).collect())
                .map_err(ResolveDnsError::new)
        })
    }
}

/// The egress policy as the resolver of hyper-util's connector (the HTTP providers' client).
#[derive(Clone)]
pub struct HyperResolver(pub Egress);

impl Service<Name> for HyperResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Refused;
    type Future = BoxFuture<'static, Result<Self::Response, Refused>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Refused>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let egress = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move { Ok(egress.resolve(host).await?.into_iter()) })
    }
}
