//! Provider credentials at rest: each sealed with a data key of its own, the data key wrapped
//! by the current key encryption key; and the re-wrapping a KEK rotation needs, which changes
//! only the wrapping, so edges holding a data key keep serving throughout.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tollgate_policy::Command;
use tollgate_policy::model::{Credential, Envelope};
use tollgate_runtime::envelope::{DataKey, EnvelopeError, Keks};

use crate::error::ControlError;
use crate::log::PolicyLog;
use crate::secrets::new_nonce;

/// The actor of re-wrap events.
const ACTOR: &str = "config";
/// How often the log is checked for data keys still wrapped by an older KEK (another control
/// plane may still run with the old configuration).
const RECHECK: Duration = Duration::from_secs(60);

/// `plaintext` sealed under a new data key, which `keks`' current KEK wraps: the sealed value,
/// the data key's fingerprint and its envelope.
pub async fn seal(
    keks: &Keks,
    plaintext: &[u8],
) -> Result<(String, String, Envelope), EnvelopeError> {
    let data_key = DataKey::generate();
    let envelope = Envelope {
        kek: keks.current.id(),
        wrapped_key: keks.current.wrap(&data_key).await?,
    };
    let key = data_key.sealing_key();
    Ok((key.seal(new_nonce(), plaintext), key.id(), envelope))
}

/// Why a re-wrap pass stopped.
#[derive(Debug, thiserror::Error)]
enum RewrapError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Log(#[from] ControlError),
}

/// Re-wraps under the current KEK every data key wrapped by another, until `shutdown`; a
/// failed pass (KMS unreachable) is retried with back-off.
pub async fn rewrap(log: Arc<PolicyLog>, keks: Keks, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    while !*shutdown.borrow() {
        let wait = match rewrap_pass(&log, &keks).await {
            Ok(0) => RECHECK,
            Ok(rewrapped) => {
                tracing::info!(rewrapped, kek = %keks.current.id(), "credential data keys re-wrapped");
                backoff = Duration::from_secs(1);
                RECHECK
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "re-wrapping credential data keys failed");
                backoff = (backoff * 2).min(RECHECK);
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn rewrap_pass(log: &PolicyLog, keks: &Keks) -> Result<usize, RewrapError> {
    log.catch_up().await.map_err(ControlError::from)?;
    let current = keks.current.id();
    let stale: Vec<Credential> = log
        .state()
        .credentials
        .values()
        .filter(|c| c.envelope.as_ref().is_some_and(|e| e.kek != current))
        .cloned()
        .collect();
    let mut rewrapped = 0;
    for credential in stale {
        let data_key = keks.data_key(&credential).await?;
        let envelope = Envelope {
            kek: current.clone(),
            wrapped_key: keks.current.wrap(&data_key).await?,
        };
        let command = Command::RewrapCredential {
            id: credential.id.clone(),
            key_id: credential.key_id.clone(),
            envelope,
        };
        match log.execute(ACTOR, command).await {
            Ok(_) => rewrapped += 1,
            // Replaced or deleted meanwhile: nothing of the old data key is left to wrap.
            Err(ControlError::Command(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(rewrapped)
}
