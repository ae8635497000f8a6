//! `TailRequests`: the requests every edge serves, live, read from the usage topic the edges
//! already publish to (so tailing costs the request path nothing). The tail reads from the
//! topic's end with a consumer of its own that acknowledges nothing: the ledger's consumer,
//! and with it the topic's retention, is untouched.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use prost::Message;
use tollgate_proto::admin::TailRequestsRequest;
use tollgate_proto::usage::UsageEvent;
use tollgate_runtime::bus::{Bus, USAGE};
use tonic::Status;

use crate::error::ControlError;

/// The longest id or model name a filter may hold.
const MAX_FILTER_LEN: usize = 256;

/// Which requests a tail shows.
#[derive(Debug)]
pub struct Filter {
    team_id: String,
    key_id: String,
    model: String,
    status: u32,
    errors_only: bool,
}

impl Filter {
    /// The filter a request asks for, refused when it cannot match anything.
    pub fn parse(request: TailRequestsRequest) -> Result<Filter, ControlError> {
        for (field, value) in [
            ("team_id", &request.team_id),
            ("key_id", &request.key_id),
            ("model", &request.model),
        ] {
            if value.len() > MAX_FILTER_LEN {
                return Err(ControlError::InvalidArgument(format!(
                    "{field} is longer than {MAX_FILTER_LEN} characters"
                )));
            }
        }
        if request.status != 0 && !(100..=599).contains(&request.status) {
            return Err(ControlError::InvalidArgument(format!(
                "status must be an HTTP status (100-599) or 0 for any, got {}",
                request.status
            )));
        }
        if request.errors_only && (100..400).contains(&request.status) {
            return Err(ControlError::InvalidArgument(format!(
                "errors_only shows statuses from 400; status {} would show nothing",
                request.status
            )));
        }
        Ok(Filter {
            team_id: request.team_id,
            key_id: request.key_id,
            model: request.model,
            status: request.status,
            errors_only: request.errors_only,
        })
    }

    /// Whether `event` passes every condition set.
    pub fn matches(&self, event: &UsageEvent) -> bool {
        let field = |wanted: &str, value: &str| wanted.is_empty() || wanted == value;
        field(&self.team_id, &event.team_id)
            && field(&self.key_id, &event.key_id)
            && (self.model.is_empty()
                || self.model == event.model
                || self.model == event.served_model)
            && (self.status == 0 || self.status == event.status)
            && (!self.errors_only || event.status >= 400)
    }
}

/// The requests matching `filter` from now on, until the caller goes away.
pub async fn requests(
    bus: Arc<dyn Bus>,
    filter: Filter,
) -> Result<impl Stream<Item = Result<UsageEvent, Status>>, ControlError> {
    let unavailable = |e: tollgate_runtime::bus::BusError| {
        ControlError::Unavailable(format!("the usage topic cannot be read: {e}"))
    };
    let end = bus.last(USAGE).await.map_err(unavailable)?;
    let after = end.map_or(0, |message| message.sequence);
    let messages = bus.subscribe(USAGE, after).await.map_err(unavailable)?;
    Ok(messages.filter_map(move |message| {
        let shown = match message {
            Err(e) => Some(Err(Status::unavailable(format!(
                "the usage topic stopped: {e}; tail again"
            )))),
            // An event this version cannot read is skipped, as the ledger would dead-letter it.
            Ok(message) => UsageEvent::decode(message.payload)
                .ok()
                .filter(|event| filter.matches(event))
                .map(Ok),
        };
        std::future::ready(shown)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(team: &str, model: &str, status: u32) -> UsageEvent {
        UsageEvent {
            team_id: team.into(),
            key_id: "key-1".into(),
            model: model.into(),
            served_model: "fallback".into(),
            status,
            ..Default::default()
        }
    }

    #[test]
    fn every_condition_set_must_hold() {
        let filter = Filter::parse(TailRequestsRequest {
            team_id: "red".into(),
            model: "fallback".into(),
            errors_only: true,
            ..Default::default()
        })
        .expect("valid");
        assert!(filter.matches(&event("red", "gpt", 503)));
        assert!(!filter.matches(&event("red", "gpt", 200)));
        assert!(!filter.matches(&event("blue", "gpt", 503)));
        let any = Filter::parse(TailRequestsRequest::default()).expect("valid");
        assert!(any.matches(&event("", "", 200)));
    }

    #[test]
    fn filters_that_cannot_match_are_refused() {
        for request in [
            TailRequestsRequest {
                status: 99,
                ..Default::default()
            },
            TailRequestsRequest {
                status: 200,
                errors_only: true,
                ..Default::default()
            },
            TailRequestsRequest {
                team_id: "x".repeat(MAX_FILTER_LEN + 1),
                ..Default::default()
            },
        ] {
            assert!(Filter::parse(request).is_err());
        }
    }
}
