//! The control plane in-process for the roles' integration tests: on a real store and bus of
//! the test's own (PostgreSQL + NATS JetStream, or SQLite + the in-process bus), served on an
//! ephemeral port, with an admin client and the waits every suite needs. Behind the `roles`
//! feature, so that the suites below the roles do not build them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tempfile::TempDir;
use tollgate_control_plane::ControlPlane;
use tollgate_control_plane::auth::Authenticator;
use tollgate_control_plane::log::PolicyLog;
use tollgate_control_plane::store::{self, EventStore};
use tollgate_control_plane::trust::TrustConfig;
use tollgate_policy::sealing::SealingKey;
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tollgate_proto::admin::{Budget, CreateAdminTokenRequest, CreateTeamRequest};
use tollgate_runtime::bus::{Bus, JetStreamBus, MemoryBus};
use tollgate_runtime::follow::PolicyView;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub use crate::Bearer;
use crate::Served;

/// The bootstrap admin token every test control plane accepts.
pub const ADMIN_TOKEN: &str = "test-bootstrap-admin-token";
/// The key test control planes seal credentials with (edges open them with it).
pub const SEALING_KEY: [u8; 32] = [9; 32];

/// An admin API client that sends a bearer token.
pub type AdminClient = AdminServiceClient<InterceptedService<Channel, Bearer>>;

/// Which store and bus a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Distributed mode: PostgreSQL and NATS JetStream.
    PostgresJetStream,
    /// Embedded mode: SQLite and the in-process bus.
    SqliteMemory,
}

/// A database of the test's own (and, for SQLite, the directory holding its file); it lives as
/// long as the test holds it.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<TempDir>,
}

/// A database open as the control plane's event store.
pub struct TestStore {
    pub url: String,
    pub store: Arc<dyn EventStore>,
    _dir: Option<TempDir>,
}

impl TestStore {
    /// A fresh PostgreSQL database.
    pub async fn postgres() -> Result<TestStore> {
        Backend::PostgresJetStream.store().await
    }

    /// The store at `url`, an existing database (a restarted control plane's).
    pub async fn at(url: &str) -> Result<TestStore> {
        Self::open(TestDatabase {
            url: url.to_owned(),
            _dir: None,
        })
        .await
    }

    async fn open(TestDatabase { url, _dir }: TestDatabase) -> Result<TestStore> {
        Ok(TestStore {
            store: store::connect(&url).await?,
            url,
            _dir,
        })
    }
}

impl Backend {
    /// A fresh, empty database of this backend.
    pub async fn database(self) -> Result<TestDatabase> {
        Ok(match self {
            Backend::PostgresJetStream => TestDatabase {
                url: crate::fresh_postgres_database().await?,
                _dir: None,
            },
            Backend::SqliteMemory => {
                let (dir, url) = crate::fresh_sqlite_database()?;
                TestDatabase {
                    url,
                    _dir: Some(dir),
                }
            }
        })
    }

    /// A fresh event store of this backend.
    pub async fn store(self) -> Result<TestStore> {
        TestStore::open(self.database().await?).await
    }

    /// A bus of this backend, with stream names of its own.
    pub async fn bus(self) -> Result<Arc<dyn Bus>> {
        Ok(match self {
            Backend::PostgresJetStream => {
                let url = crate::nats_url().await?;
                let prefix = crate::unique_name("bus");
                Arc::new(JetStreamBus::connect(&url, &prefix).await?)
            }
            Backend::SqliteMemory => Arc::new(MemoryBus::new()),
        })
    }
}

/// A control plane serving on 127.0.0.1; stops when dropped.
pub struct TestControlPlane {
    pub addr: SocketAddr,
    pub log: Arc<PolicyLog>,
    pub bus: Arc<dyn Bus>,
    pub store: TestStore,
    served: Served,
}

impl TestControlPlane {
    /// On a fresh store and bus of `backend`.
    pub async fn start(backend: Backend) -> Result<Self> {
        Self::start_with(backend.store().await?, backend.bus().await?).await
    }

    /// On a fresh PostgreSQL database, relaying to `bus`.
    pub async fn on_bus(bus: Arc<dyn Bus>) -> Result<Self> {
        Self::start_with(TestStore::postgres().await?, bus).await
    }

    /// On `store`, relaying to `bus`, at a free port.
    pub async fn start_with(store: TestStore, bus: Arc<dyn Bus>) -> Result<Self> {
        Self::start_on(store, bus, "127.0.0.1:0".parse()?, TrustConfig::default()).await
    }

    /// On `store` and `addr` (a restart keeps both), signing policy as `trust` says.
    pub async fn start_on(
        store: TestStore,
        bus: Arc<dyn Bus>,
        addr: SocketAddr,
        trust: TrustConfig,
    ) -> Result<Self> {
        let log = Arc::new(PolicyLog::open(store.store.clone()).await?);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let control_plane = ControlPlane {
            log: log.clone(),
            bus: bus.clone(),
            auth: Authenticator::new(Some(ADMIN_TOKEN)),
            sealing: Some(SealingKey::from_bytes(SEALING_KEY)),
            kek: Default::default(),
            tls: None,
            metrics_addr: None,
            trust,
        };
        let served = Served::spawn("the control plane", |shutdown| {
            control_plane.serve(listener, shutdown)
        });
        Ok(TestControlPlane {
            addr,
            log,
            bus,
            store,
            served,
        })
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client sending `token`.
    pub async fn client(&self, token: &str) -> Result<AdminClient> {
        let channel = Channel::from_shared(self.url())?.connect().await?;
        Ok(AdminServiceClient::with_interceptor(
            channel,
            Bearer(token.to_owned()),
        ))
    }

    /// A client with the bootstrap admin token.
    pub async fn admin(&self) -> Result<AdminClient> {
        self.client(ADMIN_TOKEN).await
    }

    /// The last committed policy sequence.
    pub async fn last_sequence(&self) -> Result<u64> {
        last_sequence(&mut self.admin().await?).await
    }

    /// Creates a team and returns its id.
    pub async fn team(&self, name: &str) -> Result<String> {
        let request = CreateTeamRequest {
            name: name.to_owned(),
            ..Default::default()
        };
        let team = self.admin().await?.create_team(request).await?;
        Ok(team.into_inner().id)
    }

    /// Sets a budget and returns its id.
    pub async fn budget(
        &self,
        scope: &str,
        scope_id: &str,
        amount_usd: f64,
        period: &str,
        thresholds: &[f64],
    ) -> Result<String> {
        let request = Budget {
            scope: scope.to_owned(),
            scope_id: scope_id.to_owned(),
            amount_usd,
            period: period.to_owned(),
            thresholds: thresholds.to_vec(),
            ..Default::default()
        };
        let budget = self.admin().await?.set_budget(request).await?;
        Ok(budget.into_inner().id)
    }

    /// Creates an admin token with `role` and returns its secret.
    pub async fn token(&self, name: &str, role: &str) -> Result<String> {
        let request = CreateAdminTokenRequest {
            name: name.to_owned(),
            role: role.to_owned(),
            ..Default::default()
        };
        let token = self.admin().await?.create_admin_token(request).await?;
        Ok(token.into_inner().secret)
    }

    /// Stops serving (the process "dies") and waits for the relay; the store stays. Fails if
    /// serving had failed.
    pub async fn stop(self) -> Result<TestStore> {
        self.served.stop().await?;
        Ok(self.store)
    }
}

/// The last committed policy sequence, as `admin`'s control plane reports it.
pub async fn last_sequence(admin: &mut AdminClient) -> Result<u64> {
    Ok(admin
        .list_events(tollgate_proto::admin::ListEventsRequest {
            after_sequence: u64::MAX - 1,
            limit: 1,
        })
        .await?
        .into_inner()
        .last_sequence)
}

/// Waits up to `within` until `policy` has been applied up to `sequence` by the role it
/// belongs to, which `role` names in the error.
pub async fn wait_for_policy(
    policy: &PolicyView,
    sequence: u64,
    within: Duration,
    role: &str,
) -> Result<()> {
    let mut applied = policy.applied();
    tokio::time::timeout(within, applied.wait_for(|s| *s >= sequence))
        .await
        .with_context(|| {
            let at = policy.sequence();
            format!("{role} stuck at policy sequence {at} < {sequence}")
        })??;
    Ok(())
}

/// Polls `check` every 10 ms until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        if tokio::time::Instant::now() > deadline {
            bail!("condition not met within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Turns each named `async fn(Backend) -> anyhow::Result<()>` into one test per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod postgres_jetstream {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> {
                super::$name($crate::roles::Backend::PostgresJetStream).await
            })+
        }
        mod sqlite_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> {
                super::$name($crate::roles::Backend::SqliteMemory).await
            })+
        }
    };
}
