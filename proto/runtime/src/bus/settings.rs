//! Where a role's bus is and how the role reaches it, read the same way by every role.

use tollgate_policy::redact::SecretUrl;

use super::{BusError, BusLimits, JetStreamBus, NatsAuth};

/// NATS JetStream as a role reaches it: `NATS_URL`, `TOLLGATE_BUS_PREFIX`, the `NATS_*`
/// credentials and TLS, and `TOLLGATE_BUS_REPLICAS`.
#[derive(Clone, Debug)]
pub struct BusSettings {
    /// `NATS_URL`: a password or token in it shows as `***`.
    pub url: SecretUrl,
    /// `TOLLGATE_BUS_PREFIX`: the prefix of the streams and subjects.
    pub prefix: String,
    /// The `NATS_*` credentials and TLS settings.
    pub auth: NatsAuth,
    /// The stream limits (`TOLLGATE_BUS_REPLICAS`).
    pub limits: BusLimits,
}

impl BusSettings {
    /// Connects, and creates the streams that are missing.
    pub async fn connect(&self) -> Result<JetStreamBus, BusError> {
        JetStreamBus::connect_as(self.url.expose(), &self.prefix, self.limits, &self.auth).await
    }
}
