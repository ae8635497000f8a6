//! The routing page: each model's routing rule (strategy, fallbacks, retries, deadline) and the
//! traffic rules that deny or steer requests by who sends them, where from and when, with a form
//! for each.

use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tollgate_proto::admin::admin_service_server::AdminService;
use tollgate_proto::admin::{
    Deployment, ListDeploymentsRequest, ListRoutingRulesRequest, ListTrafficRulesRequest,
    RoutingRule, Team, TrafficAction, TrafficMatch, TrafficRule,
};

use super::delete::delete_button;
use super::pages::{
    Notice, field_error, layout, number_input, select_input, team_choices, team_name, text_input,
    window_inputs, window_text, words,
};
use super::session::Session;
use super::{Change, Console, Page, WindowForm, call, list_of, list_teams, listed, whole_number};

/// How a model's deployments are chosen.
const STRATEGIES: [&str; 6] = [
    "simple_shuffle",
    "weighted",
    "priority",
    "least_busy",
    "latency_based",
    "cost_based",
];
/// What a traffic rule may match on the request's kind.
const REQUEST_TYPES: [&str; 4] = ["chat", "embeddings", "stream", "tools"];

/// The page, with `notice` about the last change.
pub(super) async fn routing_page(
    console: &Console,
    session: &Session,
    notice: &mut Notice,
) -> Markup {
    let answer = console
        .api
        .list_routing_rules(call(session, ListRoutingRulesRequest {}))
        .await;
    let rules = listed(answer, notice).rules;
    let answer = console
        .api
        .list_traffic_rules(call(session, ListTrafficRulesRequest {}))
        .await;
    let traffic = listed(answer, notice).rules;
    let teams = list_teams(console, session).await.unwrap_or_default();
    let deployments = console
        .api
        .list_deployments(call(session, ListDeploymentsRequest::default()))
        .await
        .map(|listed| listed.into_inner().deployments)
        .unwrap_or_default();
    let body = html! {
        (routing_rules(session, notice, &rules))
        (traffic_rules(session, notice, &traffic, &teams, &deployments))
    };
    layout("Routing", session, notice, body)
}

/// The routing rules: a form to set one, and the table of those there are.
fn routing_rules(session: &Session, notice: &Notice, rules: &[RoutingRule]) -> Markup {
    html! {
        h2 { "Routing rules" }
        form.inline method="post" action="/routing" {
            input type="hidden" name="csrf" value=(session.csrf);
            (text_input("rule_model", "model_name", "Model", "gpt-4o"))
            (field_error(notice, "model_name"))
            (select_input("rule_strategy", "strategy", "Strategy", None, words(STRATEGIES)))
            (text_input("rule_fallbacks", "fallbacks", "Fallbacks", "claude-sonnet, gpt-4o-mini"))
            (field_error(notice, "fallbacks"))
            (number_input("rule_retries", "max_retries", "Retries", 3))
            (number_input("rule_cooldown", "cooldown_seconds", "Cooldown s", 4))
            (number_input("rule_timeout", "timeout_ms", "Deadline ms", 6))
            (field_error(notice, "figures"))
            button type="submit" { "Set rule" }
    }
    p.hint { "One rule per model: setting a model again replaces its rule. Empty figures: the edge's defaults." }
    table {
        thead { tr { th { "Model" } th { "Strategy" } th { "Fallbacks" } th { "Retries" } th { "Cooldown s" } th { "Deadline ms" } th {} } }
        tbody {
            @for rule in rules {
                tr data-routing=(rule.model_name) {
                    td { (rule.model_name) }
                    td { (rule.strategy) }
                    td { (or_dash(rule.fallbacks.join(", "))) }
                    td { (rule.max_retries) }
                    td { (rule.cooldown_seconds) }
                    td { (rule.timeout_ms) }
                    td { (delete_button(session, "routing", &rule.id, &rule.model_name)) }
                }
            }
        }
    }
    }
}

/// The traffic rules: a form to add one, and the table of those there are, in order.
fn traffic_rules(
    session: &Session,
    notice: &Notice,
    traffic: &[TrafficRule],
    teams: &[Team],
    deployments: &[Deployment],
) -> Markup {
    html! {
        h2 { "Traffic rules" }
        form.stacked method="post" action="/traffic" {
            input type="hidden" name="csrf" value=(session.csrf);
            div.row {
                (number_input("traffic_order", "order", "Order", 4))
                (field_error(notice, "order"))
                label for="traffic_description" { "Description" }
                input type="text" id="traffic_description" name="description" size="40";
            }
            fieldset {
                legend { "When (every field given must match; empty: any)" }
                div.row {
                    (text_input("traffic_models", "models", "Models", ""))
                    (field_error(notice, "models"))
                    (select_input("traffic_team", "team_id", "Team", Some("(any)"), team_choices(teams)))
                    (field_error(notice, "team_id"))
                    (text_input("traffic_tags", "tags", "Tags", ""))
                    (text_input("traffic_from", "from_regions", "From regions", "eu-west-1"))
                    (select_input("traffic_type", "request_type", "Request type", Some("(any)"), words(REQUEST_TYPES)))
                }
                div.row {
                    (window_inputs("traffic"))
                    (field_error(notice, "time"))
                }
            }
            fieldset {
                legend { "Then (deny, or steer)" }
                div.row {
                    label for="traffic_deny" { "Deny with" }
                    input type="text" id="traffic_deny" name="deny" size="40" placeholder="the message the client gets";
                    (field_error(notice, "deny"))
                }
                div.row {
                    label for="traffic_deployment" { "Only deployment" }
                    select id="traffic_deployment" name="deployment_id" {
                        option value="" { "(any)" }
                        @for deployment in deployments {
                            option value=(deployment.id) { (deployment.model_name) " · " (deployment.id) }
                        }
                    }
                    (text_input("traffic_regions", "regions", "Only regions", ""))
                    (text_input("traffic_prefer", "prefer_region", "Prefer region", ""))
                    (select_input("traffic_strategy", "strategy", "Strategy", Some("(the model's)"), words(STRATEGIES)))
                }
            }
            button type="submit" { "Add traffic rule" }
    }
    table {
        thead { tr { th { "Order" } th { "Description" } th { "When" } th { "Then" } th {} } }
        tbody {
            @for rule in traffic {
                tr data-traffic=(rule.id) {
                    td { (rule.order) }
                    td { (rule.description) }
                    td { (or_dash(describe_match(rule.when.as_ref(), &|id| team_name(teams, id)))) }
                    td { (describe_action(rule.then.as_ref())) }
                    td { (delete_button(session, "traffic", &rule.id, &rule.description)) }
                }
            }
        }
    }
    }
}

/// `text`, or a dash when it is empty.
fn or_dash(text: String) -> String {
    if text.is_empty() {
        "—".to_owned()
    } else {
        text
    }
}

/// What a traffic rule matches, in a line.
fn describe_match(when: Option<&TrafficMatch>, team: &dyn Fn(&String) -> String) -> String {
    let Some(when) = when else {
        return String::new();
    };
    let mut parts = Vec::new();
    let mut list = |label: &str, values: Vec<String>| {
        if !values.is_empty() {
            parts.push(format!("{label} {}", values.join(", ")));
        }
    };
    list("models", when.models.clone());
    list("teams", when.team_ids.iter().map(team).collect());
    list("keys", when.key_ids.clone());
    list("tags", when.tags.clone());
    list("from", when.regions.clone());
    list("type", when.request_types.clone());
    list("days", when.weekdays.clone());
    if !when.time_start.is_empty() {
        parts.push(window_text(
            &when.time_start,
            &when.time_end,
            &when.timezone,
        ));
    }
    parts.join("; ")
}

/// What a traffic rule does, in a line.
fn describe_action(then: Option<&TrafficAction>) -> String {
    let Some(then) = then else {
        return String::new();
    };
    if !then.deny.is_empty() {
        return format!("deny: {}", then.deny);
    }
    let mut parts = Vec::new();
    if !then.deployment_ids.is_empty() {
        parts.push(format!("only {}", then.deployment_ids.join(", ")));
    }
    if !then.regions.is_empty() {
        parts.push(format!("only in {}", then.regions.join(", ")));
    }
    if !then.prefer_region.is_empty() {
        parts.push(format!("prefer {}", then.prefer_region));
    }
    if !then.strategy.is_empty() {
        parts.push(format!("strategy {}", then.strategy));
    }
    parts.join("; ")
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewRoutingRule {
    model_name: String,
    strategy: String,
    fallbacks: String,
    max_retries: String,
    cooldown_seconds: String,
    timeout_ms: String,
}

pub(super) async fn set_routing_rule(Change(editor, form): Change<NewRoutingRule>) -> Response {
    let (Some(max_retries), Some(cooldown_seconds), Some(timeout_ms)) = (
        whole_number(&form.max_retries),
        whole_number(&form.cooldown_seconds),
        whole_number(&form.timeout_ms),
    ) else {
        return editor
            .refused(
                Page::Routing,
                "figures",
                "retries, cooldown and deadline are whole numbers (empty: the default)",
            )
            .await;
    };
    let model_name = form.model_name.trim().to_owned();
    // One rule per model: setting a model again updates its rule.
    let id = editor
        .api()
        .list_routing_rules(editor.call(ListRoutingRulesRequest {}))
        .await
        .map(|listed| listed.into_inner().rules)
        .unwrap_or_default()
        .into_iter()
        .find(|rule| rule.model_name == model_name)
        .map(|rule| rule.id)
        .unwrap_or_default();
    let rule = RoutingRule {
        id,
        model_name,
        strategy: form.strategy,
        fallbacks: list_of(&form.fallbacks),
        max_retries,
        cooldown_seconds,
        timeout_ms,
        ..RoutingRule::default()
    };
    let result = editor.api().set_routing_rule(editor.call(rule)).await;
    editor
        .answer(
            result,
            Page::Routing,
            &[
                ("fallback", "fallbacks"),
                ("max_retries", "figures"),
                ("", "model_name"),
            ],
        )
        .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct NewTrafficRule {
    order: String,
    description: String,
    models: String,
    team_id: String,
    tags: String,
    from_regions: String,
    request_type: String,
    #[serde(flatten)]
    window: WindowForm,
    deny: String,
    deployment_id: String,
    regions: String,
    prefer_region: String,
    strategy: String,
}

pub(super) async fn set_traffic_rule(Change(editor, form): Change<NewTrafficRule>) -> Response {
    let Some(order) = whole_number(&form.order) else {
        return editor
            .refused(
                Page::Routing,
                "order",
                format!("{:?} is not a whole number", form.order),
            )
            .await;
    };
    let (time_start, time_end, timezone, weekdays) = form.window.parts();
    let rule = TrafficRule {
        order,
        description: form.description.trim().to_owned(),
        when: Some(TrafficMatch {
            models: list_of(&form.models),
            team_ids: list_of(&form.team_id),
            tags: list_of(&form.tags),
            regions: list_of(&form.from_regions),
            request_types: list_of(&form.request_type),
            time_start,
            time_end,
            timezone,
            weekdays,
            ..TrafficMatch::default()
        }),
        then: Some(TrafficAction {
            // Kept as typed: an all-blank message is refused by the API with its reason.
            deny: form.deny,
            deployment_ids: list_of(&form.deployment_id),
            regions: list_of(&form.regions),
            prefer_region: form.prefer_region.trim().to_owned(),
            strategy: form.strategy,
        }),
        ..TrafficRule::default()
    };
    let result = editor.api().set_traffic_rule(editor.call(rule)).await;
    editor
        .answer(
            result,
            Page::Routing,
            &[
                ("model", "models"),
                ("team", "team_id"),
                ("time", "time"),
                ("weekday", "time"),
                ("zone", "time"),
                ("", "deny"),
            ],
        )
        .await
}
