//! Where outgoing HTTP calls (to providers, to alert webhooks) may connect, enforced at connect
//! time.
//!
//! Addresses are judged by `tollgate_policy::egress` after DNS resolution (a resolver hook), so
//! a host name that resolves to a metadata service, now or after a DNS change, is refused like
//! the literal address; IP literals, which skip the resolver, are judged before the call.
//! Redirects are never followed: a 3xx is the callee's answer, and following it would carry
//! the request (and its credentials) to another host.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tollgate_policy::egress::{Networks, forbidden_host};

/// Resolves a host name: the system's resolver, or one a test supplies.
pub type Lookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync>;

/// The networks outgoing calls may reach; shared by every client a role builds.
#[derive(Clone)]
pub struct Egress {
    networks: Networks,
    lookup: Option<Lookup>,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("networks", &self.networks)
            .finish_non_exhaustive()
    }
}

/// Why a call was not made.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

/// Public addresses and the machine's loopback and private networks (see [`Networks`]).
impl Default for Egress {
    fn default() -> Self {
        Egress::new(Networks::default())
    }
}

impl Egress {
    /// Calls may reach public addresses and `networks`.
    pub fn new(networks: Networks) -> Self {
        Egress {
            networks,
            lookup: None,
        }
    }

    /// The same policy over another resolver (tests: a name that resolves where it should not).
    pub fn with_lookup(self, lookup: Lookup) -> Self {
        Egress {
            lookup: Some(lookup),
            ..self
        }
    }

    /// Checks a base URL before a call: its host must not be a forbidden name, and an IP
    /// literal (which no resolver sees) must be in an allowed network.
    pub fn check_url(&self, url: &str) -> Result<(), Refused> {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return Ok(());
        };
        let Some(host) = parsed.host_str() else {
            return Ok(());
        };
        if let Some(why) = forbidden_host(host) {
            return Err(Refused(why));
        }
        self.check_literal(host)
    }

    /// Checks a host that is an IP literal (`[…]` for IPv6) against the allowed networks; a
    /// name passes (the resolver judges what it resolves to). For clients whose connector
    /// skips the resolver for literals, to judge them again at connect time.
    pub fn check_literal(&self, host: &str) -> Result<(), Refused> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.check_ip(ip),
            Err(_) => Ok(()),
        }
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        match self.networks.refusal(ip) {
            Some(why) => Err(Refused(why)),
            None => Ok(()),
        }
    }

    /// Resolves `host` and keeps the addresses calls may reach; an error when none is left.
    pub async fn resolve(&self, host: String) -> Result<Vec<SocketAddr>, Refused> {
        if let Some(why) = forbidden_host(&host) {
            return Err(Refused(why));
        }
        let lookup = async {
            match &self.lookup {
                Some(lookup) => lookup(host.clone()).await,
                None => tokio::net::lookup_host((host.as_str(), 0))
                    .await
                    .map(|addrs| addrs.map(|a| a.ip()).collect()),
            }
        };
        let resolved = tokio::time::timeout(DNS_TIMEOUT, lookup)
            .await
            .map_err(|_| Refused(format!("resolving {host} took longer than {DNS_TIMEOUT:?}")))?
            .map_err(|e| Refused(format!("cannot resolve {host}: {e}")))?;
        let mut refusals = Vec::new();
        let allowed: Vec<SocketAddr> = resolved
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 0))
            .filter(|addr| match self.check_ip(addr.ip()) {
                Ok(()) => true,
                Err(why) => {
                    refusals.push(why.0);
                    false
                }
            })
            .collect();
        if allowed.is_empty() {
            return Err(Refused(format!(
                "{host} resolves to no address upstream calls may reach ({})",
                refusals.join("; ")
            )));
        }
        Ok(allowed)
    }

    /// An HTTP client under this egress policy at connect time, following no redirects: for
    /// calls off the edge's request path (alert webhooks); the edge's providers use a client
    /// of their own over [`Egress::resolve`] and [`Egress::check_literal`].
    pub fn http_client(
        &self,
        connect_timeout: Duration,
    ) -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            // The edge retries failed calls itself (attempts, fallbacks, their metrics); the
            // client's own retry of refused HTTP/2 streams copied every request to be ready.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .dns_resolver(Arc::new(self.clone()))
            .build()
    }
}

/// How long a name may take to resolve.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

impl Resolve for Egress {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = egress.resolve(host).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_and_names_are_judged_before_and_at_connect_time() {
        let open = Egress::new(Networks::default());
        assert!(open.check_url("http://169.254.169.254/latest").is_err());
        assert!(open.check_url("http://[fe80::1]:8080/v1").is_err());
        assert!(open.check_url("http://metadata.google.internal/").is_err());
        assert!(open.check_url("http://127.0.0.1:8000/v1").is_ok());
        assert!(open.check_url("https://api.openai.com/v1").is_ok());
        let closed = Egress::new(Networks {
            loopback: false,
            private: false,
        });
        assert!(closed.check_url("http://127.0.0.1:8000/v1").is_err());
        assert!(closed.check_url("http://10.0.0.5/v1").is_err());
        assert!(closed.check_literal("[::1]").is_err());
        assert!(closed.check_literal("169.254.169.254").is_err());
        assert!(closed.check_literal("example.com").is_ok());
        assert!(open.check_literal("127.0.0.1").is_ok());
        let refused = closed.resolve("localhost".to_owned()).await;
        assert!(
            refused.as_ref().is_err_and(|e| e.0.contains("loopback")),
            "{refused:?}"
        );
        assert!(open.resolve("localhost".to_owned()).await.is_ok());
    }

    /// A name that resolves to the metadata address only when the call is made (DNS
    /// rebinding): the client refuses it before connecting; a name resolving to the test
    /// server itself is served.
    #[tokio::test]
    async fn a_name_resolving_to_a_metadata_address_at_call_time_is_refused() -> anyhow::Result<()>
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        let app = axum::Router::new().fallback(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { "ok" }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
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
        let client = Egress::new(Networks::default())
            .with_lookup(lookup)
            .http_client(Duration::from_secs(2))?;
        let refused = client
            .get(format!("http://rebound.test:{port}/"))
            .send()
            .await;
        let error = refused.err().map(|e| format!("{e:?}")).unwrap_or_default();
        assert!(error.contains("link-local"), "{error}");
        let served = client
            .get(format!("http://served.test:{port}/"))
            .send()
            .await?;
        assert_eq!(served.status(), 200);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        Ok(())
    }
}
