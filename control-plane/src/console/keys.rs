//! The keys page: every key with its state, a form to create one (its secret shown once), and
//! rotate (with a grace period for the old secret), block, unblock and revoke.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{CreateKeyRequest, KeyRequest, ListKeysRequest, RotateKeyRequest};

use super::forms::Notice;
use super::pages;
use super::session::Session;
use super::{Change, Console, Drawing, SignedIn, page, refusal};

pub(super) async fn keys(signed_in: SignedIn) -> Response {
    let (console, id, session) = (signed_in.console, signed_in.id, signed_in.session);
    let secret = console.sessions.take_flash(&id);
    keys_page(
        &console,
        &session,
        secret.as_deref(),
        StatusCode::OK,
        Notice::default(),
    )
    .await
}

async fn keys_page(
    console: &Console,
    session: &Session,
    secret: Option<&str>,
    status: StatusCode,
    notice: Notice,
) -> Response {
    let mut drawing = Drawing::new(console, session, notice);
    let request = ListKeysRequest {
        include_revoked: true,
        ..ListKeysRequest::default()
    };
    let keys = drawing.list(AdminService::list_keys, request).await.keys;
    let teams = drawing.teams().await;
    let notice = &drawing.notice;
    page(status, pages::keys(session, &keys, &teams, secret, notice))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewKey {
    alias: String,
    team_id: String,
}

pub(super) async fn create_key(Change(editor, form): Change<NewKey>) -> Response {
    let request = CreateKeyRequest {
        alias: form.alias.trim().to_owned(),
        team_id: form.team_id,
        ..Default::default()
    };
    match editor.api().create_key(editor.call(request)).await {
        Ok(created) => {
            // Shown on the next page only: a reload shows it no more.
            editor
                .console
                .sessions
                .flash(&editor.id, created.into_inner().secret);
            Redirect::to("/keys").into_response()
        }
        Err(status) => {
            let field = if status.message().contains("team") {
                "team_id"
            } else {
                "alias"
            };
            let (code, notice) = refusal(&status, field);
            keys_page(&editor.console, &editor.session, None, code, notice).await
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct KeyAction {
    /// For `rotate`: how long the old secret keeps working.
    grace_seconds: String,
}

/// `POST /keys/{id}/{action}`: `rotate`, `block`, `unblock` or `revoke`.
pub(super) async fn act(
    Path((key_id, action)): Path<(String, String)>,
    Change(editor, form): Change<KeyAction>,
) -> Response {
    let api = editor.api();
    let key = || {
        editor.call(KeyRequest {
            key_id: key_id.clone(),
        })
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
                return keys_page(
                    &editor.console,
                    &editor.session,
                    None,
                    StatusCode::BAD_REQUEST,
                    notice,
                )
                .await;
            };
            let request = RotateKeyRequest {
                key_id: key_id.clone(),
                grace_seconds,
            };
            api.rotate_key(editor.call(request))
                .await
                .map(|rotated| Some(rotated.into_inner().secret))
        }
        _ => return (StatusCode::NOT_FOUND, "no such key action").into_response(),
    };
    match done {
        Ok(secret) => {
            if let Some(secret) = secret {
                editor.console.sessions.flash(&editor.id, secret);
            }
            Redirect::to("/keys").into_response()
        }
        Err(status) => {
            let (code, notice) = refusal(&status, "alias");
            keys_page(&editor.console, &editor.session, None, code, notice).await
        }
    }
}
