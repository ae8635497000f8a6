//! The admin web console, served by the control plane over HTTP.
//!
//! Every change goes through [`AdminApi`] exactly as a gRPC call would, authorized by the
//! signed-in session's admin token: one validation, the same errors (shown next to the field
//! they concern) and the same audit events, with the token's name as their actor. The token
//! stays on the server; the browser holds a session cookie, and every form carries the
//! session's CSRF token.

mod audit;
mod budgets;
mod cache;
mod delete;
mod forms;
mod groups;
mod guardrails;
mod health;
mod keys;
mod limits;
mod pages;
mod prices;
mod providers;
mod routing;
mod session;
mod spend;
mod tail;
mod teams;
mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Router, middleware};
use maud::Markup;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{ListTeamsRequest, Team};
use tollgate_proto::usage::usage_service_client::UsageServiceClient;
use tollgate_runtime::tls::{ClientTls, TlsFiles};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::service::AdminApi;
use forms::{Forms, Notice};
use session::{Session, Sessions};

/// How the console behaves.
#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    /// A session ends after this long without a request.
    pub session_idle: Duration,
    /// Serve HTTPS with these files, and mark the session cookie `Secure`.
    pub tls: Option<TlsFiles>,
    /// The usage API budgets' status and spend are read from (`http://host:port`, or
    /// `https://` reached as `usage_tls` says).
    pub usage_url: Option<String>,
    pub usage_tls: ClientTls,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            session_idle: Duration::from_secs(30 * 60),
            tls: None,
            usage_url: None,
            usage_tls: ClientTls::default(),
        }
    }
}

struct Console {
    api: Arc<AdminApi>,
    /// Budgets' status and spend, asked with the session's token like any usage client.
    usage: Option<UsageServiceClient<Channel>>,
    sessions: Sessions,
    secure: bool,
}

/// A page that lists one kind of thing and has a form to change it.
#[derive(Clone, Copy)]
enum Page {
    Teams,
    Users,
    Prices,
    Providers,
    Budgets,
    Limits,
    Groups,
    Cache,
    Guardrails,
    Routing,
}

impl Page {
    fn path(self) -> &'static str {
        match self {
            Page::Teams => "/teams",
            Page::Users => "/users",
            Page::Prices => "/prices",
            Page::Providers => "/providers",
            Page::Budgets => "/budgets",
            Page::Limits => "/limits",
            Page::Groups => "/groups",
            Page::Cache => "/cache",
            Page::Guardrails => "/guardrails",
            Page::Routing => "/routing",
        }
    }

    /// The page for `session`, with `notice` about the last change, answered with `status`.
    async fn draw(
        self,
        console: &Console,
        session: &Session,
        status: StatusCode,
        notice: Notice,
    ) -> Response {
        let drawing = &mut Drawing::new(console, session, notice);
        let markup = match self {
            Page::Teams => teams::teams_page(drawing).await,
            Page::Users => users::users_page(drawing).await,
            Page::Prices => prices::prices_page(drawing).await,
            Page::Providers => providers::providers_page(drawing).await,
            Page::Budgets => budgets::budgets_page(drawing).await,
            Page::Limits => limits::limits_page(drawing).await,
            Page::Groups => groups::groups_page(drawing).await,
            Page::Cache => cache::cache_page(drawing).await,
            Page::Guardrails => guardrails::guardrails_page(drawing).await,
            Page::Routing => routing::routing_page(drawing).await,
        };
        page(status, markup)
    }

    /// The page again, answered 400, with `message` next to the form's `field`.
    async fn refused(
        self,
        console: &Console,
        session: &Session,
        field: &'static str,
        message: impl Into<String>,
    ) -> Response {
        let notice = Notice {
            field: Some(field),
            message: message.into(),
        };
        self.draw(console, session, StatusCode::BAD_REQUEST, notice)
            .await
    }
}

/// A page being drawn: the console, the session it is drawn for, and what it says about the last
/// change (or why a listing on it was refused).
struct Drawing<'a> {
    console: &'a Console,
    session: &'a Session,
    notice: Notice,
}

impl<'a> Drawing<'a> {
    /// A page for `session`, saying `notice`.
    fn new(console: &'a Console, session: &'a Session, notice: Notice) -> Self {
        Drawing {
            console,
            session,
            notice,
        }
    }

    /// The admin API, which every listing goes through.
    fn api(&self) -> &'a AdminApi {
        &self.console.api
    }

    /// What `list` answers the session (see [`listing`]); when it is refused, an empty answer,
    /// and the reason at the top of the page.
    async fn list<Q, R: Default, F>(
        &mut self,
        list: impl FnOnce(&'a AdminApi, tonic::Request<Q>) -> F,
        request: Q,
    ) -> R
    where
        F: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        match listing(self.api(), self.session, list, request).await {
            Ok(answer) => answer,
            Err(refused) => {
                self.notice = Notice {
                    field: None,
                    message: refused.message().to_owned(),
                };
                R::default()
            }
        }
    }

    /// The teams the session may see (none when it may not).
    async fn teams(&self) -> Vec<Team> {
        teams(self.console, self.session).await
    }

    /// The page's forms, with the notice's errors next to their fields.
    fn forms(&self) -> Forms<'_> {
        Forms::new(self.session, &self.notice)
    }

    /// `body` titled `title`, in the frame of every signed-in page.
    fn layout(&self, title: &str, body: Markup) -> Markup {
        pages::layout(title, self.session, &self.notice, body)
    }
}

/// The route that shows `page` to the signed-in session.
fn show(page: Page) -> MethodRouter<Arc<Console>> {
    get(move |signed_in: SignedIn| async move {
        let (console, session) = (&signed_in.console, &signed_in.session);
        page.draw(console, session, StatusCode::OK, Notice::default())
            .await
    })
}

/// The answer to a change on `page`: back to it when the change was made; when it was refused,
/// the page again with the reason next to the first of `fields` whose word the message holds
/// (the word `""` matches any message).
async fn after_change<T>(
    console: &Console,
    session: &Session,
    result: Result<tonic::Response<T>, Status>,
    page: Page,
    fields: &[(&str, &'static str)],
) -> Response {
    match result {
        Ok(_) => Redirect::to(page.path()).into_response(),
        Err(status) => {
            let field = fields
                .iter()
                .find(|(word, _)| status.message().contains(word))
                .map_or("", |(_, field)| field);
            let (code, notice) = refusal(&status, field);
            page.draw(console, session, code, notice).await
        }
    }
}

/// The console's routes over `api`.
pub fn router(api: Arc<AdminApi>, config: ConsoleConfig) -> Router {
    let usage = config.usage_url.as_deref().and_then(|url| {
        let endpoint = config
            .usage_tls
            .endpoint(url)
            .inspect_err(|error| tracing::warn!(%error, "the console cannot reach the usage API"))
            .ok()?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        Some(UsageServiceClient::new(channel))
    });
    let console = Arc::new(Console {
        api,
        usage,
        sessions: Sessions::new(config.session_idle),
        secure: config.tls.is_some(),
    });
    Router::new()
        .route("/", get(landing))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/teams", show(Page::Teams).post(teams::create_team))
        .route("/keys", get(keys::keys).post(keys::create_key))
        .route("/keys/{id}/{action}", post(keys::act))
        .route("/users", show(Page::Users).post(users::create_user))
        .route("/users/{id}", post(users::update_user))
        .route("/prices", show(Page::Prices).post(prices::set_price))
        .route("/providers", show(Page::Providers))
        .route("/credentials", post(providers::put_credential))
        .route("/deployments", post(providers::upsert_deployment))
        .route("/budgets", show(Page::Budgets).post(budgets::set_budget))
        .route("/limits", show(Page::Limits).post(limits::set_limit))
        .route("/limits/schedules", post(limits::add_schedule))
        .route("/groups", show(Page::Groups).post(groups::set_group))
        .route("/cache", show(Page::Cache).post(cache::set_policy))
        .route(
            "/guardrails",
            show(Page::Guardrails).post(guardrails::set_guardrail),
        )
        .route(
            "/routing",
            show(Page::Routing).post(routing::set_routing_rule),
        )
        .route("/traffic", post(routing::set_traffic_rule))
        .route("/delete/{kind}/{id}", post(delete::delete))
        .route("/spend", get(spend::spend))
        .route("/health", get(health::health))
        .route("/audit", get(audit::audit))
        .route("/tail", get(tail::tail))
        .route("/tail/events", get(tail::tail_events))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
        .layer(middleware::map_response(protect))
        .with_state(console)
}

/// Headers on every answer: nothing cached, no framing, no inline script, no referrer to other
/// sites (`same-origin`: with `no-referrer` browsers send `Origin: null` on the console's own
/// forms, which the origin check must refuse).
async fn protect(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn script() -> Response {
    asset("text/javascript", include_str!("assets/console.js"))
}

async fn style() -> Response {
    asset("text/css", include_str!("assets/console.css"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Why a console request is not served.
enum Refused {
    /// No live session: sign in first.
    SignedOut,
    /// A change without this session's CSRF token, or from another site.
    Forged,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::SignedOut => Redirect::to("/sign-in").into_response(),
            Refused::Forged => (
                StatusCode::FORBIDDEN,
                "Refused: the form did not come from this console's page, or it is stale. Reload the page and try again.",
            )
                .into_response(),
        }
    }
}

/// The signed-in session.
fn signed_in(console: &Console, headers: &HeaderMap) -> Result<(String, Session), Refused> {
    console.sessions.current(headers).ok_or(Refused::SignedOut)
}

/// A request from a signed-in session: the console, and the session's id and state (signed
/// out, the request is answered with the sign-in page).
struct SignedIn {
    console: Arc<Console>,
    id: String,
    session: Session,
}

impl FromRequestParts<Arc<Console>> for SignedIn {
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Refused> {
        let (id, session) = signed_in(console, &parts.headers)?;
        Ok(SignedIn {
            console: console.clone(),
            id,
            session,
        })
    }
}

/// The session a change is made in: signed in, and the form's CSRF token is the session's
/// (and the browser, when it says where the form came from, says this site).
fn changing(
    console: &Console,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(String, Session), Refused> {
    let (id, session) = signed_in(console, headers)?;
    if !same_origin(headers) || !session.csrf_matches(csrf) {
        return Err(Refused::Forged);
    }
    Ok((id, session))
}

/// Who makes a change: the console, and the session it is made in (see [`changing`]).
struct Editor {
    console: Arc<Console>,
    /// The session's id, for what its next page shows once.
    id: String,
    session: Session,
}

impl Editor {
    /// The admin API, which every change goes through.
    fn api(&self) -> &AdminApi {
        &self.console.api
    }

    /// What `list` answers the session (see [`listing`]), or an empty answer when it is
    /// refused: the change that follows is then refused for the same reason.
    async fn list_or_empty<'s, Q, R: Default, F>(
        &'s self,
        list: impl FnOnce(&'s AdminApi, tonic::Request<Q>) -> F,
        request: Q,
    ) -> R
    where
        F: Future<Output = Result<tonic::Response<R>, Status>>,
    {
        listing(self.api(), &self.session, list, request)
            .await
            .unwrap_or_default()
    }

    /// A request to the admin API made with the session's token.
    fn call<T>(&self, message: T) -> tonic::Request<T> {
        call(&self.session, message)
    }

    /// The answer to a change on `page` (see [`after_change`]).
    async fn answer<T>(
        &self,
        result: Result<tonic::Response<T>, Status>,
        page: Page,
        fields: &[(&str, &'static str)],
    ) -> Response {
        after_change(&self.console, &self.session, result, page, fields).await
    }

    /// `page` again, answered 400, with `message` next to the form's `field`.
    async fn refused(
        &self,
        page: Page,
        field: &'static str,
        message: impl Into<String>,
    ) -> Response {
        page.refused(&self.console, &self.session, field, message)
            .await
    }
}

/// A change posted from one of the console's forms: who makes it, and the form's fields besides
/// the CSRF token.
struct Change<F>(Editor, F);

/// A form as posted: the session's CSRF token and the form's own fields.
#[derive(Deserialize)]
struct WithCsrf<F> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    fields: F,
}

/// A form with no fields of its own.
#[derive(Deserialize)]
struct NoFields {}

impl<F: DeserializeOwned + Send> FromRequest<Arc<Console>> for Change<F> {
    type Rejection = Response;

    async fn from_request(request: Request, console: &Arc<Console>) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let Form(form) = Form::<WithCsrf<F>>::from_request(request, console)
            .await
            .map_err(IntoResponse::into_response)?;
        let (id, session) =
            changing(console, &headers, &form.csrf).map_err(IntoResponse::into_response)?;
        let console = console.clone();
        Ok(Change(
            Editor {
                console,
                id,
                session,
            },
            form.fields,
        ))
    }
}

/// Whether the request's `Origin`, if it has one, is this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok().and_then(|o| o.split_once("://"));
    matches!((origin, host), (Some((_, authority)), Some(host)) if authority == host)
}

/// A request to the admin API made with the session's token.
fn call<T>(session: &Session, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {}", session.token).parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// How a refusal is answered: the gRPC code's HTTP status, the message next to `field` (unless
/// it is `""`) when the request was wrong, else at the top of the page.
fn refusal(status: &Status, field: &'static str) -> (StatusCode, Notice) {
    let (code, field) = match status.code() {
        Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition => {
            (StatusCode::BAD_REQUEST, Some(field))
        }
        Code::NotFound => (StatusCode::NOT_FOUND, Some(field)),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, None),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, None),
        _ => (StatusCode::SERVICE_UNAVAILABLE, None),
    };
    let notice = Notice {
        field: field.filter(|field| !field.is_empty()),
        message: status.message().to_owned(),
    };
    (code, notice)
}

/// A form field's whole number: empty is 0 (the API's "default" or "unlimited"); `None` when it
/// is not a number.
fn whole_number<T: std::str::FromStr + Default>(field: &str) -> Option<T> {
    let field = field.trim();
    if field.is_empty() {
        Some(T::default())
    } else {
        field.parse().ok()
    }
}

/// The fields of a form's weekly time window (drawn by [`forms::window_inputs`]).
#[derive(Deserialize, Default)]
struct WindowForm {
    #[serde(default)]
    time_start: String,
    #[serde(default)]
    time_end: String,
    #[serde(default)]
    timezone: String,
    #[serde(default)]
    weekdays: String,
}

impl WindowForm {
    /// Start, end, time zone and weekdays as the admin API takes them.
    fn parts(&self) -> (String, String, String, Vec<String>) {
        (
            self.time_start.trim().to_owned(),
            self.time_end.trim().to_owned(),
            self.timezone.trim().to_owned(),
            list_of(&self.weekdays.to_lowercase()),
        )
    }
}

/// The values of a comma-separated form field, trimmed, without empty ones.
fn list_of(field: &str) -> Vec<String> {
    field
        .split(',')
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .map(str::to_owned)
        .collect()
}

fn page(status: StatusCode, markup: Markup) -> Response {
    (status, markup).into_response()
}

/// `/`: the signed-in role's first section.
async fn landing(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    match console.sessions.current(&headers) {
        Some((_, session)) => Redirect::to(pages::home(session.role)).into_response(),
        None => Redirect::to("/sign-in").into_response(),
    }
}

async fn sign_in_page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Some((_, session)) = console.sessions.current(&headers) {
        return Redirect::to(pages::home(session.role)).into_response();
    }
    page(StatusCode::OK, pages::sign_in(None))
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "Refused: cross-site sign-in.").into_response();
    }
    let token = form.token.trim().to_owned();
    match console.api.who(&token) {
        Ok(actor) => {
            let home = pages::home(actor.role);
            let id = console.sessions.open(token, actor.name, actor.role);
            let cookie = session::set_cookie(&id, console.secure);
            ([(header::SET_COOKIE, cookie)], Redirect::to(home)).into_response()
        }
        Err(status) => page(
            StatusCode::UNAUTHORIZED,
            pages::sign_in(Some(status.message())),
        ),
    }
}

async fn sign_out(Change(editor, _): Change<NoFields>) -> Response {
    editor.console.sessions.close(&editor.id);
    let cookie = session::clear_cookie(editor.console.secure);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/sign-in")).into_response()
}

/// What listing `list` of the admin API (`AdminService::list_keys`, …) answers `session`, asked
/// with its token.
async fn listing<'a, Q, R, F>(
    api: &'a AdminApi,
    session: &Session,
    list: impl FnOnce(&'a AdminApi, tonic::Request<Q>) -> F,
    request: Q,
) -> Result<R, Status>
where
    F: Future<Output = Result<tonic::Response<R>, Status>>,
{
    let answer = list(api, call(session, request)).await?;
    Ok(answer.into_inner())
}

/// The teams the session may see (none when it may not).
async fn teams(console: &Console, session: &Session) -> Vec<Team> {
    let request = ListTeamsRequest {};
    listing(&console.api, session, AdminService::list_teams, request)
        .await
        .map(|listed| listed.teams)
        .unwrap_or_default()
}
