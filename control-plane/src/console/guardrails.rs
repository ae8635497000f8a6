//! The guardrails page: each guardrail's kind, when it runs and what it applies to, and a form
//! to set one (its settings as the JSON the README's "Guardrails" table describes).

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{Guardrail, ListGuardrailsRequest};

use super::delete::delete_button;
use super::forms::{table, team_choices, words};
use super::pages::team_name;
use super::{Change, Drawing, Page, list_of};

/// The guardrail implementations.
const KINDS: [&str; 3] = ["pii", "regex", "bedrock"];
/// When a guardrail runs.
const MODES: [&str; 3] = ["pre_call", "post_call", "during_call"];

/// The page, with the drawing's notice about the last change.
pub(super) async fn guardrails_page(drawing: &mut Drawing<'_>) -> Markup {
    let guardrails = drawing
        .list(AdminService::list_guardrails, ListGuardrailsRequest {})
        .await
        .guardrails;
    let teams = drawing.teams().await;
    let every = |ids: &[String], name: &dyn Fn(&String) -> String| {
        if ids.is_empty() {
            "every".to_owned()
        } else {
            ids.iter().map(name).collect::<Vec<_>>().join(", ")
        }
    };
    let (session, form) = (drawing.session, drawing.forms());
    let body = html! {
        (form.stacked("/guardrails", "Set guardrail", html! {
            div.row {
                (form.text("guardrail_name", "name", "Name", "mask-pii"))
                (form.select("guardrail_kind", "kind", "Kind", None, words(KINDS)))
                (form.select("guardrail_mode", "mode", "Runs", None, words(MODES)))
            }
            div.row {
                (form.text("guardrail_models", "models", "Models", "empty: every model"))
                (form.select("guardrail_team", "team_id", "Team", Some("(every team)"), team_choices(&teams)))
            }
            div.row {
                label for="guardrail_config" { "Settings (JSON)" }
                textarea id="guardrail_config" name="config_json" rows="3" cols="70"
                    placeholder=r#"{"action": "mask"}"# {}
                (form.error("config_json"))
            }
        }))
        p.hint {
            "pii: {\"entities\": [\"email\", …], \"action\": \"mask\" | \"block\"}; "
            "regex: {\"patterns\": […], \"action\": \"block\" | \"mask\"}; "
            "bedrock: {\"guardrail_id\", \"version\", \"region\"}. Setting a name again replaces it."
        }
        (table(&["Name", "Kind", "Runs", "Models", "Teams", "Keys", "Settings", ""], html! {
            @for guardrail in &guardrails {
                tr data-guardrail=(guardrail.name) {
                    td { (guardrail.name) }
                    td { (guardrail.kind) }
                    td { (guardrail.mode) }
                    td { (every(&guardrail.models, &|m| m.clone())) }
                    td { (every(&guardrail.team_ids, &|id| team_name(&teams, id))) }
                    td { (every(&guardrail.key_ids, &|id| id.clone())) }
                    td { code { (guardrail.config_json) } }
                    td { (delete_button(session, "guardrails", &guardrail.id, &guardrail.name)) }
                }
            }
        }))
    };
    drawing.layout("Guardrails", body)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewGuardrail {
    name: String,
    kind: String,
    mode: String,
    models: String,
    team_id: String,
    config_json: String,
}

pub(super) async fn set_guardrail(Change(editor, form): Change<NewGuardrail>) -> Response {
    // Setting a name again replaces that guardrail rather than adding a second one.
    let existing = editor
        .list_or_empty(AdminService::list_guardrails, ListGuardrailsRequest {})
        .await;
    let name = form.name.trim().to_owned();
    let id = existing
        .guardrails
        .into_iter()
        .find(|g| g.name == name)
        .map(|g| g.id)
        .unwrap_or_default();
    let guardrail = Guardrail {
        id,
        name,
        kind: form.kind,
        mode: form.mode,
        models: list_of(&form.models),
        team_ids: list_of(&form.team_id),
        config_json: form.config_json.trim().to_owned(),
        ..Guardrail::default()
    };
    let result = editor.api().set_guardrail(editor.call(guardrail)).await;
    editor
        .answer(
            result,
            Page::Guardrails,
            &[
                ("guardrail name", "name"),
                ("kind", "kind"),
                ("models", "models"),
                ("mode", "mode"),
                ("team", "team_id"),
                // The rest are about the settings.
                ("", "config_json"),
            ],
        )
        .await
}
