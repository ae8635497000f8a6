//! The finance surface: `tollgate.usage.v1.UsageService` over gRPC and the CSV export over
//! HTTP, for `finance` and `admin` tokens.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use futures::Stream;
use tollgate_policy::model::{AdminRole, Scope, admin_caller, hash_secret};
use tollgate_proto::convert::{from_timestamp, timestamp};
use tollgate_proto::usage::usage_service_server::UsageService;
use tollgate_proto::usage::{
    GetBudgetStatusRequest, GetBudgetStatusResponse, QueryUsageRequest, QueryUsageResponse,
    UsageRow,
};
use tollgate_runtime::follow::PolicyView;
use tonic::{Request, Response as GrpcResponse, Status};

use crate::budgets;
use crate::ledger::Ledger;
use crate::query::{QueryError, Row, UsageQuery, usd6};

/// What the finance handlers share.
pub struct FinanceApi {
    pub ledger: Ledger,
    pub policy: Arc<PolicyView>,
    /// SHA-256 of the bootstrap admin token, if one is configured.
    pub bootstrap_hash: Option<String>,
}

/// Why a finance call was refused.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("a {0} token cannot read usage; use a finance or admin token")]
    PermissionDenied(AdminRole),
    #[error("{0}")]
    Invalid(String),
    #[error("usage data is unavailable; retry later")]
    Unavailable,
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Invalid(m) => ApiError::Invalid(m),
            QueryError::Ledger(e) => {
                tracing::error!(error = %e, "usage query failed");
                ApiError::Unavailable
            }
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let message = e.to_string();
        match e {
            ApiError::Unauthenticated(_) => Status::unauthenticated(message),
            ApiError::PermissionDenied(_) => Status::permission_denied(message),
            ApiError::Invalid(_) => Status::invalid_argument(message),
            ApiError::Unavailable => Status::unavailable(message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            ApiError::Invalid(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        (
            status,
            axum::Json(serde_json::json!({"error": {"message": self.to_string()}})),
        )
            .into_response()
    }
}

impl FinanceApi {
    /// Accepts a bearer token with the admin or finance role.
    fn authorize(&self, authorization: Option<&str>) -> Result<(), ApiError> {
        let token = authorization
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or(ApiError::Unauthenticated(
                "missing authorization: Bearer <finance or admin token>",
            ))?;
        let state = self.policy.current().unwrap_or_default();
        let (_, role) = admin_caller(
            &state.admin_tokens,
            state.bootstrap(self.bootstrap_hash.as_deref()),
            token.trim(),
            chrono::Utc::now(),
        )
        .ok_or(ApiError::Unauthenticated(
            "unknown, revoked or expired token",
        ))?;
        match role {
            AdminRole::Admin | AdminRole::Finance => Ok(()),
            other => Err(ApiError::PermissionDenied(other)),
        }
    }

    fn authorize_grpc<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        Ok(self.authorize(header)?)
    }
}

/// A new `FinanceApi` bootstrap hash from the raw token.
pub fn bootstrap_hash(token: Option<&str>) -> Option<String> {
    token.filter(|t| !t.is_empty()).map(hash_secret)
}

fn grpc_query(r: &QueryUsageRequest) -> Result<UsageQuery, QueryError> {
    UsageQuery::new(
        r.start.as_ref().and_then(from_timestamp),
        r.end.as_ref().and_then(from_timestamp),
        &r.granularity,
        r.group_by.clone(),
        r.filters.clone().into_iter().collect(),
    )
}

fn to_proto(row: Row) -> UsageRow {
    let dim = |name: &str| row.dimensions.get(name).cloned().unwrap_or_default();
    UsageRow {
        bucket_start: Some(timestamp(row.bucket_start)),
        team: dim("team"),
        user: dim("user"),
        key: dim("key"),
        model: dim("model"),
        deployment: dim("deployment"),
        provider: dim("provider"),
        region: dim("region"),
        requests: row.sums.requests as u64,
        input_tokens: row.sums.input_tokens as u64,
        output_tokens: row.sums.output_tokens as u64,
        cached_input_tokens: row.sums.cached_input_tokens as u64,
        cost_usd: row.sums.cost_nanos as f64 / 1e9,
        errors: row.sums.errors as u64,
    }
}

/// `UsageService` over a shared `FinanceApi`.
pub struct FinanceService(pub Arc<FinanceApi>);

impl std::ops::Deref for FinanceService {
    type Target = FinanceApi;

    fn deref(&self) -> &FinanceApi {
        &self.0
    }
}

#[tonic::async_trait]
impl UsageService for FinanceService {
    async fn query_usage(
        &self,
        request: Request<QueryUsageRequest>,
    ) -> Result<GrpcResponse<QueryUsageResponse>, Status> {
        self.authorize_grpc(&request)?;
        let query = grpc_query(request.get_ref()).map_err(ApiError::from)?;
        let rows = query.run(&self.ledger).await.map_err(ApiError::from)?;
        Ok(GrpcResponse::new(QueryUsageResponse {
            rows: rows.into_iter().map(to_proto).collect(),
        }))
    }

    type ExportUsageStream = Pin<Box<dyn Stream<Item = Result<UsageRow, Status>> + Send>>;

    async fn export_usage(
        &self,
        request: Request<QueryUsageRequest>,
    ) -> Result<GrpcResponse<Self::ExportUsageStream>, Status> {
        self.authorize_grpc(&request)?;
        let query = grpc_query(request.get_ref()).map_err(ApiError::from)?;
        let rows = query.run(&self.ledger).await.map_err(ApiError::from)?;
        Ok(GrpcResponse::new(Box::pin(futures::stream::iter(
            rows.into_iter().map(|r| Ok(to_proto(r))),
        ))))
    }

    async fn get_budget_status(
        &self,
        request: Request<GetBudgetStatusRequest>,
    ) -> Result<GrpcResponse<GetBudgetStatusResponse>, Status> {
        self.authorize_grpc(&request)?;
        let r = request.get_ref();
        let scope: Scope = r
            .scope
            .parse()
            .map_err(|e: String| Status::invalid_argument(format!("scope: {e}")))?;
        let state = self.policy.current().unwrap_or_default();
        let mut statuses = Vec::new();
        for budget in state
            .budgets
            .values()
            .filter(|b| b.scope == scope && b.scope_id == r.scope_id)
        {
            statuses.push(
                budgets::status(&self.ledger, budget, Utc::now())
                    .await
                    .map_err(|e| {
                        tracing::error!(error = %e, "budget status failed");
                        Status::unavailable("usage data is unavailable; retry later")
                    })?,
            );
        }
        // The headline is the budget closest to (or furthest past) its limit.
        let headline = statuses
            .iter()
            .max_by(|a, b| (a.spent_usd / a.amount_usd).total_cmp(&(b.spent_usd / b.amount_usd)))
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no budget on {} {}", r.scope, r.scope_id)))?;
        Ok(GrpcResponse::new(GetBudgetStatusResponse {
            spent_usd: headline.spent_usd,
            amount_usd: headline.amount_usd,
            period_start: headline.period_start,
            period_end: headline.period_end,
            exceeded: headline.exceeded,
            budgets: statuses,
        }))
    }
}

/// Parameters of `GET /v1/usage/export`.
#[derive(serde::Deserialize)]
pub struct ExportParams {
    start: Option<String>,
    end: Option<String>,
    #[serde(default)]
    granularity: String,
    #[serde(default)]
    group_by: String,
    #[serde(default)]
    format: String,
}

fn parse_time(value: Option<&str>) -> Option<DateTime<Utc>> {
    let value = value?;
    value.parse::<DateTime<Utc>>().ok().or_else(|| {
        NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc())
    })
}

/// `GET /v1/usage/export?start=…&end=…&granularity=day&group_by=team,model&format=csv`.
pub async fn export_csv(
    State(api): State<Arc<FinanceApi>>,
    headers: HeaderMap,
    Query(params): Query<ExportParams>,
) -> Response {
    match csv(&api, &headers, params).await {
        Ok(body) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn csv(
    api: &FinanceApi,
    headers: &HeaderMap,
    params: ExportParams,
) -> Result<String, ApiError> {
    api.authorize(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    )?;
    if !params.format.is_empty() && params.format != "csv" {
        return Err(ApiError::Invalid(format!(
            "format {:?} is not supported; use csv",
            params.format
        )));
    }
    let group_by: Vec<String> = params
        .group_by
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let query = UsageQuery::new(
        parse_time(params.start.as_deref()),
        parse_time(params.end.as_deref()),
        &params.granularity,
        group_by.clone(),
        BTreeMap::new(),
    )?;
    let rows = query.run(&api.ledger).await?;
    let mut out = String::from("bucket_start");
    for dim in &group_by {
        out.push(',');
        out.push_str(dim);
    }
    out.push_str(",requests,input_tokens,output_tokens,cached_input_tokens,cost_usd,errors\n");
    for row in rows {
        out.push_str(&row.bucket_start.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        for dim in &group_by {
            out.push(',');
            out.push_str(&csv_field(
                row.dimensions
                    .get(dim)
                    .map(String::as_str)
                    .unwrap_or_default(),
            ));
        }
        let s = row.sums;
        out.push_str(&format!(
            ",{},{},{},{},{},{}\n",
            s.requests,
            s.input_tokens,
            s.output_tokens,
            s.cached_input_tokens,
            usd6(s.cost_nanos),
            s.errors
        ));
    }
    Ok(out)
}

/// A CSV field (RFC 4180 quoting) that a spreadsheet shows as text: a value starting with
/// `=`, `+`, `-`, `@`, a tab or a carriage return would be read as a formula (OWASP's CSV
/// injection), so it gets a leading `'`.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_cells_are_quoted_and_never_formulas() {
        for (value, cell) in [
            ("team-a", "team-a"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            (
                "=HYPERLINK(\"http://x\")",
                "\"'=HYPERLINK(\"\"http://x\"\")\"",
            ),
            ("+1", "'+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
        ] {
            assert_eq!(csv_field(value), cell, "{value:?}");
        }
    }
}
