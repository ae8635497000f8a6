//! The keys page: every key with its state, a form to create one (its secret shown once), and
//! rotate (with a grace period for the old secret), block, unblock and revoke.

use std::sync::Arc;

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{CreateKeyRequest, KeyRequest, ListKeysRequest, RotateKeyRequest};

use super::pages::{self, Notice};
use super::session::Session;
use super::{Console, Refused, call, changing, list_teams, listed, page, refusal, signed_in};

pub(super) async fn keys(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
) -> Result<Response, Refused> {
    let (id, session) = signed_in(&console, &headers)?;
    let secret = console.sessions.take_flash(&id);
    Ok(keys_page(
        &console,
        &session,
        secret.as_deref(),
        StatusCode::OK,
        Notice::default(),
    )
    .await)
}

async fn keys_page(
    console: &Console,
    session: &Session,
    secret: Option<&str>,
    status: StatusCode,
    mut notice: Notice,
) -> Response {
    let answer = console
        .api
        .list_keys(call(
            session,
            ListKeysRequest {
                include_revoked: true,
                ..ListKeysRequest::default()
            },
        ))
        .await;
    let keys = listed(answer, &mut notice).keys;
    let teams = list_teams(console, session).await.unwrap_or_default();
    page(status, pages::keys(session, &keys, &teams, secret, &notice))
}

#[derive(Deserialize)]
pub(super) struct NewKey {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    alias: String,
    #[serde(default)]
    team_id: String,
}

pub(super) async fn create_key(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<NewKey>,
) -> Result<Response, Refused> {
    let (id, session) = changing(&console, &headers, &form.csrf)?;
    let request = CreateKeyRequest {
        alias: form.alias.trim().to_owned(),
        team_id: form.team_id,
        ..Default::default()
    };
    Ok(
        match console.api.create_key(call(&session, request)).await {
            Ok(created) => {
                // Shown on the next page only: a reload shows it no more.
                console.sessions.flash(&id, created.into_inner().secret);
                Redirect::to("/keys").into_response()
            }
            Err(status) => {
                let field = if status.message().contains("team") {
                    "team_id"
                } else {
                    "alias"
                };
                let (code, notice) = refusal(&status, field);
                keys_page(&console, &session, None, code, notice).await
            }
        },
    )
}

#[derive(Deserialize)]
pub(super) struct KeyAction {
    #[serde(default)]
    csrf: String,
    /// For `rotate`: how long the old secret keeps working.
    #[serde(default)]
    grace_seconds: String,
}

/// `POST /keys/{id}/{action}`: `rotate`, `block`, `unblock` or `revoke`.
pub(super) async fn act(
    State(console): State<Arc<Console>>,
    Path((key_id, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<KeyAction>,
) -> Result<Response, Refused> {
    let (id, session) = changing(&console, &headers, &form.csrf)?;
    let api = &console.api;
    let key = || {
        call(
            &session,
            KeyRequest {
                key_id: key_id.clone(),
            },
        )
    };
    let done = match action.as_str() {
        "block" => api.block_key(key()).await.map(|_| None),
        "unblock" => api.unblock_key(key()).await.map(|_| None),
        "revoke" => api.revoke_key(key()).await.map(|_| None),
        "rotate" => {
            let Ok(grace_seconds) = form.grace_seconds.trim().parse::<u64>() else {
                let notice = Notice {
                    field: Some("grace_seconds"),
                    message: format!(
                        "{:?} is not a whole number of seconds the old secret keeps working",
                        form.grace_seconds
                    ),
                };
                return Ok(
                    keys_page(&console, &session, None, StatusCode::BAD_REQUEST, notice).await,
                );
            };
            let request = RotateKeyRequest {
                key_id: key_id.clone(),
                grace_seconds,
            };
            api.rotate_key(call(&session, request))
                .await
                .map(|rotated| Some(rotated.into_inner().secret))
        }
        _ => return Ok((StatusCode::NOT_FOUND, "no such key action").into_response()),
    };
    Ok(match done {
        Ok(secret) => {
            if let Some(secret) = secret {
                console.sessions.flash(&id, secret);
            }
            Redirect::to("/keys").into_response()
        }
        Err(status) => {
            let (code, notice) = refusal(&status, "alias");
            keys_page(&console, &session, None, code, notice).await
        }
    })
}
