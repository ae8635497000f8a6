//! Guardrails: a kind Tollgate enforces with a config it can read, references
//! that exist, and a Bedrock guardrail that cannot send the edge's AWS identity off AWS.

use super::checks::{all_found, found};
use super::{CommandError, Decision, changed, deleted};
use crate::event::PolicyEvent;
use crate::guardrail::GuardrailSpec;
use crate::model::{Guardrail, Provider};
use crate::state::PolicyState;
use crate::validate;

/// `guardrail`, normalised, if it is valid against `state`.
pub(super) fn checked(
    state: &PolicyState,
    mut guardrail: Guardrail,
) -> Result<Guardrail, CommandError> {
    validate::id("guardrail id", &guardrail.id)?;
    guardrail.name = validate::name("guardrail name", &guardrail.name)?;
    guardrail.models = validate::model_list("models", &guardrail.models)?;
    all_found(&state.teams, "team", &guardrail.team_ids)?;
    all_found(&state.keys, "key", &guardrail.key_ids)?;
    for list in [&mut guardrail.team_ids, &mut guardrail.key_ids] {
        list.sort();
        list.dedup();
    }
    if !guardrail.config.is_object() {
        return Err(CommandError::invalid(
            "guardrail config must be a JSON object".to_owned(),
        ));
    }
    let spec = GuardrailSpec::of(&guardrail).map_err(CommandError::invalid)?;
    if let GuardrailSpec::Bedrock(bedrock) = &spec {
        validate::api_base(&bedrock.endpoint)?;
        match &bedrock.credential_id {
            Some(id) => {
                let credential = found(state.credentials.get(id), "credential", id)?;
                if credential.provider != Provider::Bedrock {
                    return Err(CommandError::invalid(format!(
                        "credential {id} is for provider {}, not bedrock",
                        credential.provider
                    )));
                }
            }
            // The edge's own AWS identity signs the call: it may only go to AWS.
            None if !bedrock.endpoint.is_empty() => {
                let rest = bedrock.endpoint.split_once("://").map_or("", |(_, r)| r);
                let host = validate::url_host(rest.split(['/', '?', '#']).next().unwrap_or(""));
                if !validate::is_aws_endpoint(host) {
                    return Err(CommandError::invalid(format!(
                        "a bedrock guardrail without a credential signs with the edge's AWS \
                         identity, which only goes to AWS endpoints (*.amazonaws.com): give it \
                         a credential_id to use endpoint {host}"
                    )));
                }
            }
            None => {}
        }
    }
    Ok(guardrail)
}

/// Sets a guardrail (nothing if it is the same).
pub(super) fn set(state: &PolicyState, guardrail: Guardrail) -> Decision {
    let guardrail = checked(state, guardrail)?;
    changed(
        state.guardrails.get(&guardrail.id),
        guardrail,
        |guardrail| PolicyEvent::GuardrailSet { guardrail },
    )
}

/// Deletes a guardrail.
pub(super) fn delete(state: &PolicyState, id: String) -> Decision {
    deleted(state.guardrails.get(&id), "guardrail", id, |id| {
        PolicyEvent::GuardrailDeleted { id }
    })
}
