//! The edge's side of the egress policy (`tollgate_runtime::egress`): the same judgement for the
//! AWS SDK's HTTP client, through its own resolver hook.

use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
pub use tollgate_runtime::egress::{Egress, Lookup, Refused};

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
