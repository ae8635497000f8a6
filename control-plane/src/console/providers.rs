//! The providers page: credentials (their secrets are write-only: the page shows field names,
//! never values) and deployments (a model served by a provider, optionally with a credential).

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{
    Deployment, ListCredentialsRequest, ListDeploymentsRequest, PutCredentialRequest,
};

use super::delete::delete_button;
use super::forms::{table_with_id, text_input, words};
use super::{Change, Drawing, Page};

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

/// The page, with the drawing's notice about the last change.
pub(super) async fn providers_page(drawing: &mut Drawing<'_>) -> Markup {
    let credentials = drawing
        .list(AdminService::list_credentials, ListCredentialsRequest {})
        .await
        .credentials;
    let deployments = drawing
        .list(
            AdminService::list_deployments,
            ListDeploymentsRequest::default(),
        )
        .await
        .deployments;
    let credential_name = |id: &str| {
        credentials
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| id.to_owned(), |c| c.name.clone())
    };
    let (session, form) = (drawing.session, drawing.forms());
    let body = html! {
        h2 { "Credentials" }
        (form.inline("/credentials", "Store credential", html! {
            (text_input("credential_name", "name", "Name", "openai-prod"))
            (form.error("credential_name"))
            (form.select("credential_provider", "provider", "Provider", None, words(PROVIDERS)))
            @for (id, label) in SECRET_FIELDS {
                label for=(id) { (label) }
                input type="password" id=(id) name=(id) autocomplete="off";
            }
            (form.error("api_key"))
        }))
        p.hint { "An API key for most providers; for bedrock and sagemaker an AWS access key pair (and a session token for temporary credentials). Blank fields are not stored; storing a name again replaces its secrets." }
        p.hint { "Stored sealed; values are never shown again. AWS and other multi-field credentials: `tollgate admin credentials put`." }
        (table_with_id("credentials", &["Name", "Provider", "Fields", ""], html! {
            @for credential in &credentials {
                tr {
                    td { (credential.name) }
                    td { (credential.provider) }
                    td { (credential.field_names.join(", ")) }
                    td { (delete_button(session, "credentials", &credential.id, &credential.name)) }
                }
            }
        }))
        h2 { "Deployments" }
        (form.inline("/deployments", "Add deployment", html! {
            (form.text("model_name", "model_name", "Model", "gpt-4o"))
            (form.select("deployment_provider", "provider", "Provider", None, words(PROVIDERS)))
            (form.text("upstream_model", "upstream_model", "Upstream model", "(the model's name)"))
            label for="api_base" { "API base" }
            input type="url" id="api_base" name="api_base" placeholder="https://…";
            (form.error("api_base"))
            (form.select("credential_id", "credential_id", "Credential", Some("(none)"), credentials.iter().map(|credential| (&credential.id, &credential.name))))
        }))
        (table_with_id("deployments", &["Model", "Provider", "Upstream model", "API base", "Credential", "Id", ""], html! {
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
        }))
    };
    drawing.layout("Providers", body)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewCredential {
    name: String,
    provider: String,
    api_key: String,
    aws_access_key_id: String,
    aws_secret_access_key: String,
    aws_session_token: String,
}

pub(super) async fn put_credential(Change(editor, form): Change<NewCredential>) -> Response {
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
    let result = editor.api().put_credential(editor.call(request)).await;
    editor
        .answer(
            result,
            Page::Providers,
            &[
                ("field", "api_key"),
                ("aws", "api_key"),
                ("", "credential_name"),
            ],
        )
        .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewDeployment {
    model_name: String,
    provider: String,
    upstream_model: String,
    api_base: String,
    credential_id: String,
}

pub(super) async fn upsert_deployment(Change(editor, form): Change<NewDeployment>) -> Response {
    let deployment = Deployment {
        model_name: form.model_name.trim().to_owned(),
        provider: form.provider,
        upstream_model: form.upstream_model.trim().to_owned(),
        api_base: form.api_base.trim().to_owned(),
        credential_id: form.credential_id,
        ..Deployment::default()
    };
    let result = editor
        .api()
        .upsert_deployment(editor.call(deployment))
        .await;
    editor
        .answer(
            result,
            Page::Providers,
            &[("api_base", "api_base"), ("", "model_name")],
        )
        .await
}
