//! The access groups page: models granted to teams and user roles, and a form to grant some.

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{AccessGroup, ListAccessGroupsRequest};

use super::delete::delete_button;
use super::pages::{
    Notice, field_error, layout, select_input, team_choices, team_name, text_input, words,
};
use super::session::Session;
use super::{Change, Console, Page, call, list_of, list_teams, listed};

/// The page, with `notice` about the last change.
pub(super) async fn groups_page(
    console: &Console,
    session: &Session,
    notice: &mut Notice,
) -> Markup {
    let answer = console
        .api
        .list_access_groups(call(session, ListAccessGroupsRequest {}))
        .await;
    let groups = listed(answer, notice).groups;
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
            (field_error(notice, "name"))
            (text_input("group_models", "models", "Models", "gpt-4o, claude-sonnet"))
            (field_error(notice, "models"))
            (select_input("group_team", "team_id", "Team", Some("(none)"), team_choices(&teams)))
            (select_input("group_role", "role", "Role", Some("(none)"), words(["member", "admin", "viewer", "finance"])))
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
    layout("Access groups", session, notice, body)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewGroup {
    name: String,
    models: String,
    team_id: String,
    role: String,
}

pub(super) async fn set_group(Change(editor, form): Change<NewGroup>) -> Response {
    let group = AccessGroup {
        name: form.name.trim().to_owned(),
        models: list_of(&form.models),
        team_ids: list_of(&form.team_id),
        roles: list_of(&form.role),
        ..AccessGroup::default()
    };
    let result = editor.api().set_access_group(editor.call(group)).await;
    editor
        .answer(result, Page::Groups, &[("model", "models"), ("", "name")])
        .await
}
