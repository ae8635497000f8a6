//! The providers page: credentials (their secrets are write-only: the page shows field names,
//! never values) and deployments (a model served by a provider, optionally with a credential).

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{
    Deployment, ListCredentialsRequest, ListDeploymentsRequest, PutCredentialRequest,
};

use super::delete::delete_button;
use super::pages::{Notice, field_error, layout, text_input};
use super::session::Session;
use super::{Console, Page, Refused, after_change, call, changing, listed, page};

/// The providers a deployment or credential may name.
const PROVIDERS: [&str; 8] = [
    "openai",
    "openai_compatible",
    "anthropic",
    "bedrock",
    "sagemaker",
    "azure_openai",
    "gemini",
    "mock",
];

/// The secret fields a credential may hold (as the edges read them), with their labels.
const SECRET_FIELDS: [(&str, &str); 4] = [
    ("api_key", "API key"),
    ("aws_access_key_id", "AWS access key id"),
    ("aws_secret_access_key", "AWS secret key"),
    ("aws_session_token", "AWS session token"),
];

/// The page, with `notice` about the last change and `status` as its HTTP status.
pub(super) async fn providers_page(
    console: &Console,
    session: &Session,
    status: StatusCode,
    mut notice: Notice,
) -> Response {
    let answer = console
        .api
        .list_credentials(call(session, ListCredentialsRequest {}))
        .await;
    let credentials = listed(answer, &mut notice).credentials;
    let answer = console
        .api
        .list_deployments(call(session, ListDeploymentsRequest::default()))
        .await;
    let deployments = listed(answer, &mut notice).deployments;
    let credential_name = |id: &str| {
        credentials
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| id.to_owned(), |c| c.name.clone())
    };
    let body = html! {
        h2 { "Credentials" }
        form.inline method="post" action="/credentials" {
            input type="hidden" name="csrf" value=(session.csrf);
            (text_input("credential_name", "name", "Name", "openai-prod"))
            (field_error(&notice, "credential_name"))
            label for="credential_provider" { "Provider" }
            select id="credential_provider" name="provider" {
                @for provider in PROVIDERS { option value=(provider) { (provider) } }
            }
            @for (id, label) in SECRET_FIELDS {
                label for=(id) { (label) }
                input type="password" id=(id) name=(id) autocomplete="off";
            }
            (field_error(&notice, "api_key"))
            button type="submit" { "Store credential" }
        }
        p.hint { "An API key for most providers; for bedrock and sagemaker an AWS access key pair (and a session token for temporary credentials). Blank fields are not stored; storing a name again replaces its secrets." }
        p.hint { "Stored sealed; values are never shown again. AWS and other multi-field credentials: `tollgate admin credentials put`." }
        table id="credentials" {
            thead { tr { th { "Name" } th { "Provider" } th { "Fields" } th {} } }
            tbody {
                @for credential in &credentials {
                    tr {
                        td { (credential.name) }
                        td { (credential.provider) }
                        td { (credential.field_names.join(", ")) }
                        td { (delete_button(session, "credentials", &credential.id, &credential.name)) }
                    }
                }
            }
        }
        h2 { "Deployments" }
        form.inline method="post" action="/deployments" {
            input type="hidden" name="csrf" value=(session.csrf);
            (text_input("model_name", "model_name", "Model", "gpt-4o"))
            (field_error(&notice, "model_name"))
            label for="deployment_provider" { "Provider" }
            select id="deployment_provider" name="provider" {
                @for provider in PROVIDERS { option value=(provider) { (provider) } }
            }
            (text_input("upstream_model", "upstream_model", "Upstream model", "(the model's name)"))
            label for="api_base" { "API base" }
            input type="url" id="api_base" name="api_base" placeholder="https://…";
            (field_error(&notice, "api_base"))
            label for="credential_id" { "Credential" }
            select id="credential_id" name="credential_id" {
                option value="" { "(none)" }
                @for credential in &credentials { option value=(credential.id) { (credential.name) } }
            }
            button type="submit" { "Add deployment" }
        }
        table id="deployments" {
            thead { tr { th { "Model" } th { "Provider" } th { "Upstream model" } th { "API base" } th { "Credential" } th { "Id" } th {} } }
            tbody {
                @for deployment in &deployments {
                    tr {
                        td { (deployment.model_name) }
                        td { (deployment.provider) }
                        td { (deployment.upstream_model) }
                        td { (deployment.api_base) }
                        td { (credential_name(&deployment.credential_id)) }
                        td { code { (deployment.id) } }
                        td { (delete_button(session, "deployments", &deployment.id, &deployment.model_name)) }
                    }
                }
            }
        }
    };
    page(status, layout("Providers", session, &notice, body))
}

#[derive(Deserialize)]
pub(super) struct NewCredential {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    api_key: String,
    #[serde(default)]
    aws_access_key_id: String,
    #[serde(default)]
    aws_secret_access_key: String,
    #[serde(default)]
    aws_session_token: String,
}

pub(super) async fn put_credential(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<NewCredential>,
) -> Result<Response, Refused> {
    let (_, session) = changing(&console, &headers, &form.csrf)?;
    let request = PutCredentialRequest {
        name: form.name.trim().to_owned(),
        provider: form.provider,
        secret_fields: [
            ("api_key", form.api_key),
            ("aws_access_key_id", form.aws_access_key_id),
            ("aws_secret_access_key", form.aws_secret_access_key),
            ("aws_session_token", form.aws_session_token),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name.to_owned(), value))
        .collect(),
    };
    let result = console.api.put_credential(call(&session, request)).await;
    Ok(after_change(
        &console,
        &session,
        result,
        Page::Providers,
        &[
            ("field", "api_key"),
            ("aws", "api_key"),
            ("", "credential_name"),
        ],
    )
    .await)
}

#[derive(Deserialize)]
pub(super) struct NewDeployment {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    model_name: String,
    #[serde(default)]
    provider: String,
    #[serde(default)]
    upstream_model: String,
    #[serde(default)]
    api_base: String,
    #[serde(default)]
    credential_id: String,
}

pub(super) async fn upsert_deployment(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<NewDeployment>,
) -> Result<Response, Refused> {
    let (_, session) = changing(&console, &headers, &form.csrf)?;
    let deployment = Deployment {
        model_name: form.model_name.trim().to_owned(),
        provider: form.provider,
        upstream_model: form.upstream_model.trim().to_owned(),
        api_base: form.api_base.trim().to_owned(),
        credential_id: form.credential_id,
        ..Deployment::default()
    };
    let result = console
        .api
        .upsert_deployment(call(&session, deployment))
        .await;
    Ok(after_change(
        &console,
        &session,
        result,
        Page::Providers,
        &[("api_base", "api_base"), ("", "model_name")],
    )
    .await)
}
