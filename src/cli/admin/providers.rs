//! `tollgate admin credentials …`, `deployments …` and `prices …`: what serves a model and
//! what it costs.

use clap::Subcommand;
use tollgate_proto::admin::{
    DeletePriceRequest, Deployment, ListCredentialsRequest, ListDeploymentsRequest,
    ListPricesRequest, Price, PutCredentialRequest,
};

use super::{AdminClient, delete};
use crate::cli::output::Format;
use crate::cli::parse;
use crate::cli::reply::Out;

/// `tollgate admin credentials …`.
#[derive(Subcommand)]
pub enum Credentials {
    /// Store (or replace, by name) a provider credential; its values are sealed and never shown.
    Put {
        /// The credential's name (unique).
        #[arg(long)]
        name: String,
        /// openai | openai_compatible | anthropic | bedrock | sagemaker | azure_openai | gemini | mock.
        #[arg(long)]
        provider: String,
        /// A secret field, as key=value (repeatable), for example api_key=sk-….
        #[arg(long = "field", value_name = "KEY=VALUE", value_parser = parse::key_value, required = true)]
        fields: Vec<(String, String)>,
    },
    /// List credentials (names and field names only).
    List,
    /// Delete a credential.
    Delete {
        /// The credential's id.
        id: String,
    },
}

impl Credentials {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            Credentials::Put {
                name,
                provider,
                fields,
            } => {
                let request = PutCredentialRequest {
                    name,
                    provider,
                    secret_fields: parse::map(fields),
                };
                out.show(
                    "storing the credential",
                    client.put_credential(request).await,
                )
            }
            Credentials::List => out.show(
                "listing credentials",
                client.list_credentials(ListCredentialsRequest {}).await,
            ),
            Credentials::Delete { id } => {
                delete(out, "credential", id, |r| client.delete_credential(r)).await
            }
        }
    }
}

/// `tollgate admin deployments …`.
#[derive(Subcommand)]
pub enum Deployments {
    /// Create a deployment, or replace the one with --id entirely.
    Upsert {
        /// The model name clients ask for.
        #[arg(long)]
        model: String,
        /// openai | openai_compatible | anthropic | bedrock | sagemaker | azure_openai | gemini | mock.
        #[arg(long)]
        provider: String,
        /// The deployment's id (none: a new deployment).
        #[arg(long)]
        id: Option<String>,
        /// The provider's own model id (default: --model).
        #[arg(long)]
        upstream_model: Option<String>,
        /// The provider's base URL.
        #[arg(long)]
        api_base: Option<String>,
        /// The provider's region.
        #[arg(long)]
        region: Option<String>,
        /// The id of the credential to call it with.
        #[arg(long, value_name = "CREDENTIAL_ID")]
        credential: Option<String>,
        /// Relative traffic share among deployments of equal priority.
        #[arg(long, default_value_t = 0)]
        weight: u32,
        /// Lower is tried first.
        #[arg(long, default_value_t = 0)]
        priority: u32,
        /// The upstream's requests per minute (0: none).
        #[arg(long, default_value_t = 0)]
        rpm: u64,
        /// The upstream's tokens per minute (0: none).
        #[arg(long, default_value_t = 0)]
        tpm: u64,
        /// A provider-specific setting, as key=value (repeatable).
        #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = parse::key_value)]
        settings: Vec<(String, String)>,
    },
    /// List deployments.
    List {
        /// Only this model's deployments.
        #[arg(long)]
        model: Option<String>,
    },
    /// Delete a deployment.
    Delete {
        /// The deployment's id.
        id: String,
    },
}

impl Deployments {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            Deployments::Upsert {
                model,
                provider,
                id,
                upstream_model,
                api_base,
                region,
                credential,
                weight,
                priority,
                rpm,
                tpm,
                settings,
            } => {
                let request = Deployment {
                    id: id.unwrap_or_default(),
                    model_name: model,
                    provider,
                    upstream_model: upstream_model.unwrap_or_default(),
                    api_base: api_base.unwrap_or_default(),
                    region: region.unwrap_or_default(),
                    credential_id: credential.unwrap_or_default(),
                    weight,
                    priority,
                    rpm,
                    tpm,
                    settings: parse::map(settings),
                };
                out.show(
                    "saving the deployment",
                    client.upsert_deployment(request).await,
                )
            }
            Deployments::List { model } => {
                let request = ListDeploymentsRequest {
                    model_name: model.unwrap_or_default(),
                };
                out.show(
                    "listing deployments",
                    client.list_deployments(request).await,
                )
            }
            Deployments::Delete { id } => {
                delete(out, "deployment", id, |r| client.delete_deployment(r)).await
            }
        }
    }
}

/// `tollgate admin prices …`.
#[derive(Subcommand)]
pub enum Prices {
    /// Set a model's price, in USD per million tokens.
    Set {
        /// The model name.
        #[arg(long)]
        model: String,
        /// USD per million input tokens.
        #[arg(long, value_name = "USD")]
        input: f64,
        /// USD per million output tokens.
        #[arg(long = "output", id = "output_price", value_name = "USD")]
        output_price: f64,
        /// USD per million cached input tokens.
        #[arg(long, value_name = "USD", default_value_t = 0.0)]
        cached_input: f64,
        /// USD per million tokens written to the provider's cache.
        #[arg(long, value_name = "USD", default_value_t = 0.0)]
        cache_write: f64,
        /// How to print the result (here --output is the output-token price).
        // The same id as the global --output flag: clap then leaves the global out of this
        // command (whose --output is a price) and still carries the value to `admin`.
        #[arg(long = "format", id = "format", value_name = "FORMAT", value_enum)]
        format: Option<Format>,
    },
    /// List prices.
    List,
    /// Delete a model's price.
    Delete {
        /// The model name.
        model: String,
    },
}

impl Prices {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            Prices::Set {
                model,
                input,
                output_price,
                cached_input,
                cache_write,
                format: _,
            } => {
                let what = format!("setting the price of {model}");
                let request = Price {
                    model,
                    input_per_mtok: input,
                    output_per_mtok: output_price,
                    cached_input_per_mtok: cached_input,
                    cache_write_per_mtok: cache_write,
                };
                out.show(&what, client.set_price(request).await)
            }
            Prices::List => out.show(
                "listing prices",
                client.list_prices(ListPricesRequest {}).await,
            ),
            Prices::Delete { model } => {
                let what = format!("deleting the price of {model}");
                out.show(
                    &what,
                    client.delete_price(DeletePriceRequest { model }).await,
                )
            }
        }
    }
}
