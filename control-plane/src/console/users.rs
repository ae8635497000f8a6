//! The users page: users with their team and role, a form to add one, and in each row a form to
//! move the user to another team or role.

use axum::extract::Path;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{CreateUserRequest, ListUsersRequest, Team, UpdateUserRequest, User};

use super::delete::delete_button;
use super::forms::{csrf_input, table, team_choices, words};
use super::pages::team_name;
use super::session::Session;
use super::{Change, Drawing, Page};

/// The roles a user may have.
const ROLES: [&str; 4] = ["member", "admin", "viewer", "finance"];

/// The page, with the drawing's notice about the last change.
pub(super) async fn users_page(drawing: &mut Drawing<'_>) -> Markup {
    let users = drawing
        .list(AdminService::list_users, ListUsersRequest::default())
        .await
        .users;
    let teams = drawing.teams().await;
    let (session, form) = (drawing.session, drawing.forms());
    let body = html! {
        (form.inline("/users", "Add user", html! {
            label for="email" { "New user" }
            input type="email" id="email" name="email" placeholder="ada@example.com";
            (form.error("email"))
            (form.select("user_team", "team_id", "Team", Some("(none)"), team_choices(&teams)))
            (form.select("role", "role", "Role", None, words(ROLES)))
        }))
        (table(&["Email", "Team", "Role", "Id", "Move to", ""], html! {
            @for user in &users {
                tr {
                    td { (user.email) }
                    td { (team_name(&teams, &user.team_id)) }
                    td { (user.role) }
                    td { code { (user.id) } }
                    td { (move_form(session, user, &teams)) }
                    td { (delete_button(session, "users", &user.id, &user.email)) }
                }
            }
        }))
    };
    drawing.layout("Users and roles", body)
}

/// A user's form to move them to another team or role.
fn move_form(session: &Session, user: &User, teams: &[Team]) -> Markup {
    html! {
        form.change method="post" action={ "/users/" (user.id) } {
            (csrf_input(session))
            select name="team_id" aria-label={ "Team of " (user.email) } {
                option value="" { "(none)" }
                @for team in teams {
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
