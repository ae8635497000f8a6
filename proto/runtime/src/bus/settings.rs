//! Where a role's bus is and how the role reaches it, read the same way by every role.

use std::fmt;

use tollgate_policy::redact;

use super::{BusError, BusLimits, JetStreamBus, NatsAuth};

/// NATS JetStream as a role reaches it: `NATS_URL`, `TOLLGATE_BUS_PREFIX`, the `NATS_*`
/// credentials and TLS, and `TOLLGATE_BUS_REPLICAS`.
#[derive(Clone, PartialEq, Eq)]
pub struct BusSettings {
    /// `NATS_URL`.
    pub url: String,
    /// `TOLLGATE_BUS_PREFIX`: the prefix of the streams and subjects.
    pub prefix: String,
    /// The `NATS_*` credentials and TLS settings.
    pub auth: NatsAuth,
    /// The stream limits (`TOLLGATE_BUS_REPLICAS`).
    pub limits: BusLimits,
}

/// A password in the URL shows as `***`; the credentials as [`NatsAuth`] shows them.
impl fmt::Debug for BusSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusSettings")
            .field("url", &redact::url(&self.url))
            .field("prefix", &self.prefix)
            .field("auth", &self.auth)
            .field("limits", &self.limits)
            .finish()
    }
}

impl BusSettings {
    /// Connects, and creates the streams that are missing.
    pub async fn connect(&self) -> Result<JetStreamBus, BusError> {
        JetStreamBus::connect_as(&self.url, &self.prefix, self.limits, &self.auth).await
    }
}
