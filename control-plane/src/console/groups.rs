//! The access groups page: models granted to teams and user roles, and a form to grant some.

use std::sync::Arc;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{AccessGroup, ListAccessGroupsRequest};

use super::delete::delete_button;
use super::pages::{Notice, field_error, layout, team_name, text_input};
use super::session::Session;
use super::{
    Console, Page, Refused, after_change, call, changing, list_of, list_teams, listed, page,
};

/// The page, with `notice` about the last change and `status` as its HTTP status.
pub(super) async fn groups_page(
    console: &Console,
    session: &Session,
    status: StatusCode,
    mut notice: Notice,
) -> Response {
    let answer = console
        .api
        .list_access_groups(call(session, ListAccessGroupsRequest {}))
        .await;
    let groups = listed(answer, &mut notice).groups;
    let teams = list_teams(console, session).await.unwrap_or_default();
    let team_names = |ids: &[String]| {
        ids.iter()
            .map(|id| team_name(&teams, id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let body = html! {
        form.inline method="post" action="/groups" {
            input type="hidden" name="csrf" value=(session.csrf);
            (text_input("group_name", "name", "Name", "research-models"))
            (field_error(&notice, "name"))
            (text_input("group_models", "models", "Models", "gpt-4o, claude-sonnet"))
            (field_error(&notice, "models"))
            label for="group_team" { "Team" }
            select id="group_team" name="team_id" {
                option value="" { "(none)" }
                @for team in &teams { option value=(team.id) { (team.name) } }
            }
            label for="group_role" { "Role" }
            select id="group_role" name="role" {
                option value="" { "(none)" }
                @for role in ["member", "admin", "viewer", "finance"] { option value=(role) { (role) } }
            }
            button type="submit" { "Grant" }
        }
        p.hint { "A key may use a model when its own list allows it, or a group grants it to the key, its user, its user's role or its team." }
        table {
            thead { tr { th { "Name" } th { "Models" } th { "Teams" } th { "Roles" } th { "Users" } th { "Keys" } th {} } }
            tbody {
                @for group in &groups {
                    tr {
                        td { (group.name) }
                        td { (group.models.join(", ")) }
                        td { (team_names(&group.team_ids)) }
                        td { (group.roles.join(", ")) }
                        td { (group.user_ids.len()) }
                        td { (group.key_ids.len()) }
                        td { (delete_button(session, "groups", &group.id, &group.name)) }
                    }
                }
            }
        }
    };
    page(status, layout("Access groups", session, &notice, body))
}

#[derive(Deserialize)]
pub(super) struct NewGroup {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    models: String,
    #[serde(default)]
    team_id: String,
    #[serde(default)]
    role: String,
}

pub(super) async fn set_group(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<NewGroup>,
) -> Result<Response, Refused> {
    let (_, session) = changing(&console, &headers, &form.csrf)?;
    let group = AccessGroup {
        name: form.name.trim().to_owned(),
        models: list_of(&form.models),
        team_ids: list_of(&form.team_id),
        roles: list_of(&form.role),
        ..AccessGroup::default()
    };
    let result = console.api.set_access_group(call(&session, group)).await;
    Ok(after_change(
        &console,
        &session,
        result,
        Page::Groups,
        &[("model", "models"), ("", "name")],
    )
    .await)
}
