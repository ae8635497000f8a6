//! `tollgate usage …`: usage rollups and budget status from the aggregator's `UsageService`,
//! and the CSV export from its HTTP endpoint.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use tollgate_proto::convert::timestamp;
use tollgate_proto::usage::usage_service_client::UsageServiceClient;
use tollgate_proto::usage::{GetBudgetStatusRequest, QueryUsageRequest};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::connect::{self, Api, Bearer};
use super::output::{self, View};
use super::parse;
use super::reply::Out;

/// What to check when the usage API or its export cannot be reached.
pub const HINT: &str = "is the aggregator (or `tollgate up`) running?";

/// The usage API client, sending the token with every call.
pub type UsageClient = UsageServiceClient<InterceptedService<Channel, Bearer>>;

/// What `tollgate usage` can do.
#[derive(Subcommand)]
pub enum UsageCommand {
    /// Usage rollups by time bucket and the grouped dimensions.
    Query(Query),
    /// The same rows as CSV, from the aggregator's HTTP export (--http-addr).
    Export(Export),
    /// A scope's budget: spent, amount, period, exceeded.
    Budget(BudgetStatus),
}

/// The period and buckets of a usage query.
#[derive(Args)]
pub struct Range {
    /// From (inclusive): a date (2026-11-01, midnight UTC) or an RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = parse::time)]
    start: DateTime<Utc>,
    /// To (exclusive): a date or an RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = parse::time)]
    end: DateTime<Utc>,
    /// hour | day | month (default day).
    #[arg(long)]
    granularity: Option<String>,
    /// Dimensions to group by, comma-separated: team, user, key, model, deployment, provider, region.
    #[arg(long, value_name = "DIMS", value_delimiter = ',')]
    group_by: Vec<String>,
}

/// `tollgate usage query`.
#[derive(Args)]
pub struct Query {
    #[command(flatten)]
    range: Range,
    /// Count only usage where dimension = value (repeatable), for example team=<id>.
    #[arg(long = "filter", value_name = "DIM=VALUE", value_parser = parse::key_value)]
    filters: Vec<(String, String)>,
}

/// `tollgate usage export`.
#[derive(Args)]
pub struct Export {
    #[command(flatten)]
    range: Range,
    /// Write the CSV to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// `tollgate usage budget`.
#[derive(Args)]
pub struct BudgetStatus {
    /// key | user | team | model.
    #[arg(long)]
    scope: String,
    /// The id of the key, user or team, or the model name.
    #[arg(long)]
    scope_id: String,
}

/// The metric columns of a usage table, after the bucket and the grouped dimensions.
const METRICS: &[&str] = &[
    "requests",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "errors",
];

/// Money shown with 6 decimals.
const USD_DECIMALS: &[(&str, usize)] = &[("cost_usd", 6), ("spent_usd", 6), ("amount_usd", 6)];

/// Where `tollgate usage` connects, and with what.
pub struct Target {
    /// The gRPC API.
    pub api: Api,
    /// The HTTP export's address.
    pub http_addr: String,
    /// The bearer token, if any.
    pub token: Option<String>,
}

impl UsageCommand {
    /// Runs the command.
    pub async fn run(self, target: Target, out: Out) -> anyhow::Result<()> {
        match self {
            UsageCommand::Query(query) => {
                let mut client = client(&target).await?;
                let range = query.range;
                let mut columns = vec!["bucket_start"];
                columns.extend(range.group_by.iter().map(String::as_str));
                columns.extend(METRICS);
                let request = QueryUsageRequest {
                    start: Some(timestamp(range.start)),
                    end: Some(timestamp(range.end)),
                    granularity: range.granularity.clone().unwrap_or_default(),
                    group_by: range.group_by.clone(),
                    filters: parse::map(query.filters),
                };
                let view = View {
                    columns: Some(&columns),
                    decimals: USD_DECIMALS,
                };
                out.show_with("querying usage", client.query_usage(request).await, &view)
            }
            UsageCommand::Budget(budget) => {
                let mut client = client(&target).await?;
                let what = format!("reading the budget of {} {}", budget.scope, budget.scope_id);
                let request = GetBudgetStatusRequest {
                    scope: budget.scope,
                    scope_id: budget.scope_id,
                };
                let view = View {
                    decimals: USD_DECIMALS,
                    ..View::default()
                };
                out.show_with(&what, client.get_budget_status(request).await, &view)
            }
            UsageCommand::Export(export) => export.run(&target).await,
        }
    }
}

async fn client(target: &Target) -> anyhow::Result<UsageClient> {
    let channel = connect::channel(&target.api).await?;
    Ok(UsageServiceClient::with_interceptor(
        channel,
        Bearer::new(target.token.as_deref())?,
    ))
}

impl Export {
    /// Downloads the CSV to `--out` or stdout.
    async fn run(self, target: &Target) -> anyhow::Result<()> {
        let api = Api {
            name: "usage export",
            addr: target.http_addr.clone(),
            hint: HINT,
            token_given: target.token.is_some(),
        };
        let base = connect::url(&target.http_addr);
        let mut url = reqwest::Url::parse(&base)
            .and_then(|u| u.join("/v1/usage/export"))
            .map_err(|e| anyhow!("the usage export address {base:?} is not valid: {e}"))?;
        url.query_pairs_mut()
            .append_pair("start", &output::rfc3339(Some(self.range.start)))
            .append_pair("end", &output::rfc3339(Some(self.range.end)))
            .append_pair(
                "granularity",
                self.range.granularity.as_deref().unwrap_or("day"),
            )
            .append_pair("group_by", &self.range.group_by.join(","))
            .append_pair("format", "csv");
        let http = connect::http_client()?;
        let mut request = http.get(url);
        if let Some(token) = &target.token {
            request = request.header("authorization", connect::bearer_value(token)?);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| api.unreachable(&connect::causes(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| body.trim().to_owned());
            let code = format!("HTTP {}", status.as_u16());
            return Err(if status == reqwest::StatusCode::UNAUTHORIZED {
                api.not_authorised(&message, &code)
            } else {
                anyhow!("exporting usage: {message} ({code})")
            });
        }
        let mut sink: Box<dyn Write> = match &self.out {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        let target_name = self
            .out
            .as_ref()
            .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            anyhow!(
                "exporting usage: the download broke off: {}",
                connect::causes(&e)
            )
        })? {
            match sink.write_all(&chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                result => result.with_context(|| format!("writing to {target_name}"))?,
            }
        }
        sink.flush()
            .with_context(|| format!("writing to {target_name}"))?;
        if let Some(path) = &self.out {
            eprintln!("usage written to {}", path.display());
        }
        Ok(())
    }
}
