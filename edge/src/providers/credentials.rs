//! A deployment's provider credential, opened when a call first needs it.
//!
//! Credentials sealed with an envelope open with their own data key. Unwrapping one is a call
//! to the key encryption key (AWS KMS: a network round trip), so it is never made on the
//! request path: a background task unwraps the data keys of the credentials policy brings and
//! keeps them in memory by fingerprint, and a request only reads that map. A KEK rotation
//! re-wraps a data key without changing it, so requests keep opening credentials throughout.
//!
//! An opened credential is kept beside the sealed text it came from, so a request opens one
//! (decrypts and parses it) only the first time or after policy changed it; a deleted
//! credential is refused because policy no longer has it, whatever was kept.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tollgate_policy::PolicyState;
use tollgate_policy::model::{Credential, Deployment};
use tollgate_policy::sealing::SealingKey;
use tollgate_runtime::envelope::{EnvelopeError, Kek, KekSettings, Keks};
use tollgate_runtime::follow::PolicyView;

use super::UpstreamError;

/// How soon a data key that could not be unwrapped (KMS unreachable) is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// The most opened credentials kept.
const OPENED_CAPACITY: u64 = 10_000;

/// A credential's secret fields by name (`api_key`, `aws_secret_access_key`, …).
pub type Secrets = Arc<BTreeMap<String, String>>;

/// A credential as it was opened, and the sealed text it was opened from.
struct Opened {
    sealed: String,
    secrets: Secrets,
}

/// The keys that open provider credentials on this edge.
pub struct CredentialKeys {
    /// `TOLLGATE_CREDENTIAL_KEY`: opens credentials sealed with it directly, and is the local
    /// key encryption key.
    local: Option<SealingKey>,
    /// The local key encryption keys (`TOLLGATE_CREDENTIAL_KEY` and the one it replaces),
    /// which unwrap without a network call, so on the request itself when need be.
    local_keks: Vec<Kek>,
    /// Unwrapped data keys, by fingerprint.
    data: RwLock<HashMap<String, SealingKey>>,
    /// Opened credentials, by credential id.
    opened: moka::sync::Cache<String, Arc<Opened>>,
}

impl CredentialKeys {
    /// Keys around the edge's local credential key and the settings' previous one, with no
    /// data key unwrapped yet.
    pub fn new(local: Option<SealingKey>, settings: &KekSettings) -> Self {
        let local_keks = local
            .iter()
            .chain(&settings.local_previous)
            .map(|key| Kek::Local(key.clone()))
            .collect();
        CredentialKeys {
            local,
            local_keks,
            data: RwLock::new(HashMap::new()),
            opened: moka::sync::Cache::new(OPENED_CAPACITY),
        }
    }

    fn key_for(&self, credential: &Credential) -> Result<SealingKey, &'static str> {
        let Some(envelope) = &credential.envelope else {
            return self
                .local
                .clone()
                .ok_or("this edge has no TOLLGATE_CREDENTIAL_KEY");
        };
        let held = self
            .data
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&credential.key_id)
            .cloned();
        if let Some(key) = held {
            return Ok(key);
        }
        let kek = self
            .local_keks
            .iter()
            .find(|kek| kek.id() == envelope.kek)
            .ok_or("its data key is not unwrapped (yet) on this edge")?;
        let key = kek
            .unwrap_local(&envelope.wrapped_key)
            .and_then(|data_key| data_key.sealed(credential))
            .map_err(|e| match e {
                EnvelopeError::Mismatch(_) => "its wrapped data key does not match it",
                _ => "its data key does not unwrap with this edge's key",
            })?
            .sealing_key();
        self.data
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(credential.key_id.clone(), key.clone());
        Ok(key)
    }

    /// Unwraps the data keys of the credentials in `view`'s policy, as the key encryption keys
    /// of `settings` allow, until `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        settings: KekSettings,
        view: Arc<PolicyView>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Some(keks) = settings.keks(self.local.as_ref()).await else {
            return;
        };
        let mut applied = view.applied();
        loop {
            let missing = match view.current() {
                Some(state) => self.unwrap_missing(&keks, &state).await,
                None => 0,
            };
            let retry = async {
                if missing == 0 {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(RETRY).await;
            };
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                _ = retry => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Unwraps the data keys of `state` not held yet and forgets those no credential uses;
    /// returns how many could not be unwrapped.
    async fn unwrap_missing(&self, keks: &Keks, state: &PolicyState) -> usize {
        let wanted: Vec<&Credential> = {
            let data = self.data.read().unwrap_or_else(|e| e.into_inner());
            state
                .credentials
                .values()
                .filter(|c| c.envelope.is_some() && !data.contains_key(&c.key_id))
                .collect()
        };
        let mut failed = 0;
        for credential in wanted {
            match keks.data_key(credential).await {
                Ok(data_key) => {
                    self.data
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(credential.key_id.clone(), data_key.sealing_key());
                }
                Err(error) => {
                    failed += 1;
                    tracing::warn!(credential = %credential.id, %error, "cannot unwrap a credential's data key; retrying");
                }
            }
        }
        let live: std::collections::HashSet<&str> = state
            .credentials
            .values()
            .map(|c| c.key_id.as_str())
            .collect();
        self.data
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|fingerprint, _| live.contains(fingerprint.as_str()));
        failed
    }
}

/// The secret fields of `deployment`'s credential (`None` when it has none), opened with
/// this edge's `keys`. Why one is unusable is logged, never answered.
pub fn open(
    keys: &CredentialKeys,
    state: &PolicyState,
    deployment: &Deployment,
) -> Result<Option<Secrets>, UpstreamError> {
    let Some(id) = &deployment.credential_id else {
        return Ok(None);
    };
    open_credential(keys, state, id, ("deployment", &deployment.id)).map(Some)
}

/// The secret fields of credential `id`, which `owner` (its kind and id: a deployment, a
/// guardrail) uses.
pub fn open_credential(
    keys: &CredentialKeys,
    state: &PolicyState,
    id: &str,
    owner: (&str, &str),
) -> Result<Secrets, UpstreamError> {
    let unusable = |why: &str| {
        let (kind, owner) = owner;
        tracing::error!(owner = %format_args!("{kind} {owner}"), credential = %id, why, "credential unusable");
        UpstreamError::Failed(format!("{kind} {owner} has no usable credential"))
    };
    let credential = state
        .credentials
        .get(id)
        .ok_or_else(|| unusable("missing"))?;
    if let Some(opened) = keys.opened.get(id)
        && opened.sealed == credential.sealed
    {
        return Ok(opened.secrets.clone());
    }
    let key = keys.key_for(credential).map_err(unusable)?;
    let plain = key
        .open(&credential.sealed)
        .map_err(|_| unusable("cannot be opened with this edge's key"))?;
    let secrets: Secrets =
        Arc::new(serde_json::from_slice(&plain).map_err(|_| unusable("malformed"))?);
    let opened = Opened {
        sealed: credential.sealed.clone(),
        secrets: secrets.clone(),
    };
    keys.opened.insert(id.to_owned(), Arc::new(opened));
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use tollgate_policy::model::Provider;

    use super::*;

    fn seal(key: &SealingKey, api_key: &str, nonce: u8) -> Credential {
        Credential {
            id: "cred-1".into(),
            name: "openai".into(),
            provider: Provider::Openai,
            field_names: vec!["api_key".into()],
            sealed: key.seal(
                [nonce; 12],
                format!(r#"{{"api_key":"{api_key}"}}"#).as_bytes(),
            ),
            key_id: key.id(),
            envelope: None,
        }
    }

    #[test]
    fn a_credential_is_opened_once_until_policy_changes_or_deletes_it() {
        let key = SealingKey::from_bytes([7; 32]);
        let keys = CredentialKeys::new(Some(key.clone()), &KekSettings::default());
        let mut state = PolicyState::default();
        state
            .credentials
            .insert("cred-1".into(), seal(&key, "sk-one", 1));
        let owner = ("deployment", "d1");
        let first = open_credential(&keys, &state, "cred-1", owner).ok();
        let again = open_credential(&keys, &state, "cred-1", owner).ok();
        assert_eq!(
            first.as_ref().map(|s| s["api_key"].as_str()),
            Some("sk-one")
        );
        assert!(
            first.zip(again).is_some_and(|(a, b)| Arc::ptr_eq(&a, &b)),
            "the second request reuses what the first opened"
        );

        state
            .credentials
            .insert("cred-1".into(), seal(&key, "sk-two", 2));
        let rotated = open_credential(&keys, &state, "cred-1", owner).ok();
        assert_eq!(
            rotated.as_ref().map(|s| s["api_key"].as_str()),
            Some("sk-two")
        );

        state.credentials.clear();
        let deleted = open_credential(&keys, &state, "cred-1", owner).err();
        assert_eq!(
            deleted.map(|e| e.to_string()),
            Some("deployment d1 has no usable credential".to_owned())
        );
    }
}
