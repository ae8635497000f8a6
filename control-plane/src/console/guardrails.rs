//! The guardrails page: each guardrail's kind, when it runs and what it applies to, and a form
//! to set one (its settings as the JSON the README's "Guardrails" table describes).

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{Guardrail, ListGuardrailsRequest};

use super::delete::delete_button;
use super::pages::{
    Notice, field_error, layout, select_input, team_choices, team_name, text_input, words,
};
use super::session::Session;
use super::{Change, Console, Page, call, list_of, list_teams, listed};

/// The guardrail implementations.
const KINDS: [&str; 3] = ["pii", "regex", "bedrock"];
/// When a guardrail runs.
const MODES: [&str; 3] = ["pre_call", "post_call", "during_call"];

/// The page, with `notice` about the last change.
pub(super) async fn guardrails_page(
    console: &Console,
    session: &Session,
    notice: &mut Notice,
) -> Markup {
    let answer = console
        .api
        .list_guardrails(call(session, ListGuardrailsRequest {}))
        .await;
    let guardrails = listed(answer, notice).guardrails;
    let teams = list_teams(console, session).await.unwrap_or_default();
    let every = |ids: &[String], name: &dyn Fn(&String) -> String| {
        if ids.is_empty() {
            "every".to_owned()
        } else {
            ids.iter().map(name).collect::<Vec<_>>().join(", ")
        }
    };
    let body = html! {
        form.stacked method="post" action="/guardrails" {
            input type="hidden" name="csrf" value=(session.csrf);
            div.row {
                (text_input("guardrail_name", "name", "Name", "mask-pii"))
                (field_error(notice, "name"))
                (select_input("guardrail_kind", "kind", "Kind", None, words(KINDS)))
                (field_error(notice, "kind"))
                (select_input("guardrail_mode", "mode", "Runs", None, words(MODES)))
                (field_error(notice, "mode"))
            }
            div.row {
                (text_input("guardrail_models", "models", "Models", "empty: every model"))
                (field_error(notice, "models"))
                (select_input("guardrail_team", "team_id", "Team", Some("(every team)"), team_choices(&teams)))
                (field_error(notice, "team_id"))
            }
            div.row {
                label for="guardrail_config" { "Settings (JSON)" }
                textarea id="guardrail_config" name="config_json" rows="3" cols="70"
                    placeholder=r#"{"action": "mask"}"# {}
                (field_error(notice, "config_json"))
            }
            button type="submit" { "Set guardrail" }
        }
        p.hint {
            "pii: {\"entities\": [\"email\", …], \"action\": \"mask\" | \"block\"}; "
            "regex: {\"patterns\": […], \"action\": \"block\" | \"mask\"}; "
            "bedrock: {\"guardrail_id\", \"version\", \"region\"}. Setting a name again replaces it."
        }
        table {
            thead { tr { th { "Name" } th { "Kind" } th { "Runs" } th { "Models" } th { "Teams" } th { "Keys" } th { "Settings" } th {} } }
            tbody {
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
            }
        }
    };
    layout("Guardrails", session, notice, body)
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
        .api()
        .list_guardrails(editor.call(ListGuardrailsRequest {}))
        .await
        .map(|listed| listed.into_inner().guardrails)
        .unwrap_or_default();
    let name = form.name.trim().to_owned();
    let id = existing
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
