//! The users page: users with their team and role, a form to add one, and in each row a form to
//! move the user to another team or role.

use axum::extract::Path;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{CreateUserRequest, ListUsersRequest, UpdateUserRequest};

use super::delete::delete_button;
use super::pages::{Notice, field_error, layout, select_input, team_choices, team_name, words};
use super::session::Session;
use super::{Change, Console, Page, call, list_teams, listed};

/// The roles a user may have.
const ROLES: [&str; 4] = ["member", "admin", "viewer", "finance"];

/// The page, with `notice` about the last change.
pub(super) async fn users_page(
    console: &Console,
    session: &Session,
    notice: &mut Notice,
) -> Markup {
    let answer = console
        .api
        .list_users(call(session, ListUsersRequest::default()))
        .await;
    let users = listed(answer, notice).users;
    let teams = list_teams(console, session).await.unwrap_or_default();
    let body = html! {
        form.inline method="post" action="/users" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="email" { "New user" }
            input type="email" id="email" name="email" placeholder="ada@example.com";
            (field_error(notice, "email"))
            (select_input("user_team", "team_id", "Team", Some("(none)"), team_choices(&teams)))
            (select_input("role", "role", "Role", None, words(ROLES)))
            (field_error(notice, "role"))
            button type="submit" { "Add user" }
        }
        table {
            thead { tr { th { "Email" } th { "Team" } th { "Role" } th { "Id" } th { "Move to" } th {} } }
            tbody {
                @for user in &users {
                    tr {
                        td { (user.email) }
                        td { (team_name(&teams, &user.team_id)) }
                        td { (user.role) }
                        td { code { (user.id) } }
                        td {
                            form.change method="post" action={ "/users/" (user.id) } {
                                input type="hidden" name="csrf" value=(session.csrf);
                                select name="team_id" aria-label={ "Team of " (user.email) } {
                                    option value="" { "(none)" }
                                    @for team in &teams {
                                        option value=(team.id) selected[team.id == user.team_id] { (team.name) }
                                    }
                                }
                                select name="role" aria-label={ "Role of " (user.email) } {
                                    @for role in ROLES {
                                        option value=(role) selected[role == user.role] { (role) }
                                    }
                                }
                                button type="submit" { "Change" }
                            }
                        }
                        td { (delete_button(session, "users", &user.id, &user.email)) }
                    }
                }
            }
        }
    };
    layout("Users and roles", session, notice, body)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewUser {
    email: String,
    team_id: String,
    role: String,
}

pub(super) async fn create_user(Change(editor, form): Change<NewUser>) -> Response {
    let request = CreateUserRequest {
        email: form.email.trim().to_owned(),
        team_id: form.team_id,
        role: form.role,
        ..CreateUserRequest::default()
    };
    let result = editor.api().create_user(editor.call(request)).await;
    editor
        .answer(result, Page::Users, &[("role", "role"), ("", "email")])
        .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct UserChange {
    team_id: String,
    role: String,
}

/// Moves a user to the team and role the row's form says.
pub(super) async fn update_user(
    Path(id): Path<String>,
    Change(editor, form): Change<UserChange>,
) -> Response {
    let request = UpdateUserRequest {
        id,
        team_id: Some(form.team_id),
        role: Some(form.role),
        ..UpdateUserRequest::default()
    };
    let result = editor.api().update_user(editor.call(request)).await;
    editor.answer(result, Page::Users, &[]).await
}
