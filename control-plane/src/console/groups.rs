//! The access groups page: models granted to teams and user roles, and a form to grant some.

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{AccessGroup, ListAccessGroupsRequest};

use super::delete::delete_button;
use super::forms::{table, team_choices, words};
use super::pages::team_name;
use super::{Change, Drawing, Page, list_of};

/// The page, with the drawing's notice about the last change.
pub(super) async fn groups_page(drawing: &mut Drawing<'_>) -> Markup {
    let groups = drawing
        .list(AdminService::list_access_groups, ListAccessGroupsRequest {})
        .await
        .groups;
    let teams = drawing.teams().await;
    let team_names = |ids: &[String]| {
        ids.iter()
            .map(|id| team_name(&teams, id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (session, form) = (drawing.session, drawing.forms());
    let body = html! {
        (form.inline("/groups", "Grant", html! {
            (form.text("group_name", "name", "Name", "research-models"))
            (form.text("group_models", "models", "Models", "gpt-4o, claude-sonnet"))
            (form.select("group_team", "team_id", "Team", Some("(none)"), team_choices(&teams)))
            (form.select("group_role", "role", "Role", Some("(none)"), words(["member", "admin", "viewer", "finance"])))
        }))
        p.hint { "A key may use a model when its own list allows it, or a group grants it to the key, its user, its user's role or its team." }
        (table(&["Name", "Models", "Teams", "Roles", "Users", "Keys", ""], html! {
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
        }))
    };
    drawing.layout("Access groups", body)
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
