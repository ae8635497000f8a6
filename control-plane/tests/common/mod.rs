//! Shared setup for the control plane's integration tests: real stores and buses, one of each
//! per test, and a control plane served on an ephemeral port.

#![allow(dead_code)]

use std::sync::Arc;

use anyhow::Result;
use tempfile::TempDir;
use tollgate_control_plane::ControlPlane;
use tollgate_control_plane::auth::Authenticator;
use tollgate_control_plane::log::PolicyLog;
use tollgate_control_plane::store::{self, EventStore};
use tollgate_policy::sealing::SealingKey;
use tollgate_proto::admin::admin_service_client::AdminServiceClient;
use tollgate_proto::bus::{Bus, JetStreamBus, MemoryBus};
use tollgate_test_support::Served;
use tonic::transport::Channel;

/// The bootstrap admin token every test control plane accepts.
pub const ADMIN_TOKEN: &str = "test-bootstrap-token";

/// Which store and bus a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    /// Distributed mode: PostgreSQL and NATS JetStream.
    PostgresJetStream,
    /// Embedded mode: SQLite and the in-process bus.
    SqliteMemory,
}

/// A store (and, for SQLite, the directory holding its file) that lives as long as the test.
pub struct TestStore {
    pub url: String,
    pub store: Arc<dyn EventStore>,
    _dir: Option<TempDir>,
}

impl Backend {
    pub async fn store(self) -> Result<TestStore> {
        Ok(match self {
            Backend::PostgresJetStream => {
                let url = tollgate_test_support::fresh_postgres_database().await?;
                TestStore {
                    store: store::connect(&url).await?,
                    url,
                    _dir: None,
                }
            }
            Backend::SqliteMemory => {
                let (dir, url) = tollgate_test_support::fresh_sqlite_database()?;
                TestStore {
                    store: store::connect(&url).await?,
                    url,
                    _dir: Some(dir),
                }
            }
        })
    }

    pub async fn bus(self) -> Result<Arc<dyn Bus>> {
        Ok(match self {
            Backend::PostgresJetStream => {
                let url = tollgate_test_support::nats_url().await?;
                let prefix = tollgate_test_support::unique_name("cp");
                Arc::new(JetStreamBus::connect(&url, &prefix).await?)
            }
            Backend::SqliteMemory => Arc::new(MemoryBus::new()),
        })
    }
}

/// A control plane serving on 127.0.0.1 at a random port; stops when dropped.
pub struct TestControlPlane {
    pub addr: std::net::SocketAddr,
    pub log: Arc<PolicyLog>,
    pub bus: Arc<dyn Bus>,
    pub store: TestStore,
    served: Served,
}

impl TestControlPlane {
    pub async fn start(backend: Backend) -> Result<Self> {
        let store = backend.store().await?;
        let bus = backend.bus().await?;
        Self::start_with(store, bus).await
    }

    pub async fn start_with(store: TestStore, bus: Arc<dyn Bus>) -> Result<Self> {
        let log = Arc::new(PolicyLog::open(store.store.clone()).await?);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let control_plane = ControlPlane {
            log: log.clone(),
            bus: bus.clone(),
            auth: Authenticator::new(Some(ADMIN_TOKEN)),
            sealing: Some(SealingKey::from_bytes([42; 32])),
            kek: Default::default(),
            tls: None,
            metrics_addr: None,
            trust: Default::default(),
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

    /// A client sending `token` as its bearer token.
    pub async fn client(
        &self,
        token: &str,
    ) -> Result<
        AdminServiceClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>,
    > {
        let channel = Channel::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?;
        Ok(AdminServiceClient::with_interceptor(
            channel,
            BearerToken(format!("Bearer {token}")),
        ))
    }

    /// A client with the bootstrap admin token.
    pub async fn admin(
        &self,
    ) -> Result<
        AdminServiceClient<tonic::service::interceptor::InterceptedService<Channel, BearerToken>>,
    > {
        self.client(ADMIN_TOKEN).await
    }

    /// Stops serving and waits until the relay has stopped; fails if serving had failed.
    pub async fn stop(self) -> Result<TestStore> {
        self.served.stop().await?;
        Ok(self.store)
    }
}

/// Adds `authorization: Bearer …` to every call.
#[derive(Clone)]
pub struct BearerToken(String);

impl tonic::service::Interceptor for BearerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Ok(value) = self.0.parse() {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// Turns each named `async fn(Backend) -> anyhow::Result<()>` into one test per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod postgres_jetstream {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> {
                super::$name($crate::common::Backend::PostgresJetStream).await
            })+
        }
        mod sqlite_memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() -> anyhow::Result<()> {
                super::$name($crate::common::Backend::SqliteMemory).await
            })+
        }
    };
}
