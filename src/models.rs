//! Declarative models: the `[[models]]` of the configuration file, applied on start as
//! ordinary admin commands by the actor `config`. Applying the same file again appends
//! nothing: set commands that ask for what already is are no-ops, and a credential is only
//! re-sealed when its secret changed.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use tollgate_control_plane::log::PolicyLog;
use tollgate_control_plane::secrets::{new_id, new_nonce};
use tollgate_policy::Command;
use tollgate_policy::model::{Credential, Deployment, Price, Provider};
use tollgate_policy::sealing::SealingKey;

use crate::settings::ModelConfig;

const ACTOR: &str = "config";

/// Applies `models`; returns how many events that appended.
pub async fn apply(
    log: &PolicyLog,
    sealing: Option<&SealingKey>,
    models: &[ModelConfig],
) -> anyhow::Result<usize> {
    let mut appended = 0;
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for model in models {
        // Several entries with one name are several deployments of that model.
        let index = seen
            .entry(model.name.as_str())
            .and_modify(|i| *i += 1)
            .or_insert(0);
        let id = format!("config:{}:{index}", model.name);
        let what = || format!("model {:?} (entry {index})", model.name);
        let provider: Provider = model
            .provider
            .parse()
            .map_err(anyhow::Error::msg)
            .with_context(what)?;
        let credential_id = match &model.api_key_env {
            Some(variable) => {
                let secret = std::env::var(variable).with_context(|| {
                    format!("{}: api_key_env names {variable}, which is not set", what())
                })?;
                let sealing =
                    sealing.context("declaring an api_key_env needs TOLLGATE_CREDENTIAL_KEY")?;
                let (events, credential_id) = put_credential(log, sealing, &id, provider, &secret)
                    .await
                    .with_context(what)?;
                appended += events;
                Some(credential_id)
            }
            None => None,
        };
        let deployment = Deployment {
            id: id.clone(),
            model_name: model.name.clone(),
            provider,
            upstream_model: model.upstream_model.clone(),
            api_base: model.api_base.clone(),
            region: model.region.clone(),
            credential_id,
            weight: model.weight,
            priority: model.priority,
            rpm: 0,
            tpm: 0,
            settings: model.settings.clone(),
        };
        appended += log
            .execute(ACTOR, Command::UpsertDeployment { deployment })
            .await
            .with_context(what)?
            .len();
        if model.input_per_mtok.is_some()
            || model.output_per_mtok.is_some()
            || model.cached_input_per_mtok.is_some()
        {
            let price = Price {
                model: model.name.clone(),
                input_per_mtok: model.input_per_mtok.unwrap_or(0.0),
                output_per_mtok: model.output_per_mtok.unwrap_or(0.0),
                cached_input_per_mtok: model.cached_input_per_mtok.unwrap_or(0.0),
                cache_write_per_mtok: 0.0,
            };
            appended += log
                .execute(ACTOR, Command::SetPrice { price })
                .await
                .with_context(what)?
                .len();
        }
    }
    Ok(appended)
}

/// Stores the API key as the credential named `name`, unless it already holds that key.
async fn put_credential(
    log: &PolicyLog,
    sealing: &SealingKey,
    name: &str,
    provider: Provider,
    secret: &str,
) -> anyhow::Result<(usize, String)> {
    let fields = BTreeMap::from([("api_key".to_owned(), secret.to_owned())]);
    let state = log.state();
    if let Some(existing) = state.credentials.values().find(|c| c.name == name) {
        let unchanged = sealing
            .open(&existing.sealed)
            .ok()
            .and_then(|plain| serde_json::from_slice::<BTreeMap<String, String>>(&plain).ok())
            .is_some_and(|stored| stored == fields);
        if unchanged && existing.provider == provider {
            return Ok((0, existing.id.clone()));
        }
    }
    let credential = Credential {
        id: new_id(),
        name: name.to_owned(),
        provider,
        field_names: vec!["api_key".to_owned()],
        sealed: sealing.seal(new_nonce(), &serde_json::to_vec(&fields)?),
        key_id: sealing.id(),
        // Sealed with the credential key itself, which every edge holds: a credential from the
        // file is usable at once, without a KMS round trip.
        envelope: None,
    };
    let events = log
        .execute(ACTOR, Command::PutCredential { credential })
        .await?
        .len();
    match log.state().credentials.values().find(|c| c.name == name) {
        Some(stored) => Ok((events, stored.id.clone())),
        None => bail!("credential {name} was not stored"),
    }
}
