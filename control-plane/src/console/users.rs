//! The users page: users with their team and role, a form to add one, and in each row a form to
//! move the user to another team or role.

use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::html;
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{CreateUserRequest, ListUsersRequest, UpdateUserRequest};

use super::delete::delete_button;
use super::pages::{Notice, field_error, layout, team_name};
use super::session::Session;
use super::{Console, Page, Refused, after_change, call, changing, list_teams, listed, page};

/// The roles a user may have.
const ROLES: [&str; 4] = ["member", "admin", "viewer", "finance"];

/// The page, with `notice` about the last change and `status` as its HTTP status.
pub(super) async fn users_page(
    console: &Console,
    session: &Session,
    status: StatusCode,
    mut notice: Notice,
) -> Response {
    let answer = console
        .api
        .list_users(call(session, ListUsersRequest::default()))
        .await;
    let users = listed(answer, &mut notice).users;
    let teams = list_teams(console, session).await.unwrap_or_default();
    let body = html! {
        form.inline method="post" action="/users" {
            input type="hidden" name="csrf" value=(session.csrf);
            label for="email" { "New user" }
            input type="email" id="email" name="email" placeholder="ada@example.com";
            (field_error(&notice, "email"))
            label for="user_team" { "Team" }
            select id="user_team" name="team_id" {
                option value="" { "(none)" }
                @for team in &teams { option value=(team.id) { (team.name) } }
            }
            label for="role" { "Role" }
            select id="role" name="role" {
                @for role in ROLES { option value=(role) { (role) } }
            }
            (field_error(&notice, "role"))
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
    page(status, layout("Users and roles", session, &notice, body))
}

#[derive(Deserialize)]
pub(super) struct NewUser {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    team_id: String,
    #[serde(default)]
    role: String,
}

pub(super) async fn create_user(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<NewUser>,
) -> Result<Response, Refused> {
    let (_, session) = changing(&console, &headers, &form.csrf)?;
    let request = CreateUserRequest {
        email: form.email.trim().to_owned(),
        team_id: form.team_id,
        role: form.role,
        ..CreateUserRequest::default()
    };
    let result = console.api.create_user(call(&session, request)).await;
    Ok(after_change(
        &console,
        &session,
        result,
        Page::Users,
        &[("role", "role"), ("", "email")],
    )
    .await)
}

#[derive(Deserialize)]
pub(super) struct UserChange {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    team_id: String,
    #[serde(default)]
    role: String,
}

/// Moves a user to the team and role the row's form says.
pub(super) async fn update_user(
    State(console): State<Arc<Console>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<UserChange>,
) -> Result<Response, Refused> {
    let (_, session) = changing(&console, &headers, &form.csrf)?;
    let request = UpdateUserRequest {
        id,
        team_id: Some(form.team_id),
        role: Some(form.role),
        ..UpdateUserRequest::default()
    };
    let result = console.api.update_user(call(&session, request)).await;
    Ok(after_change(&console, &session, result, Page::Users, &[]).await)
}
