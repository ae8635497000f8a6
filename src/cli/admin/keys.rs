//! `tollgate admin keys …` (virtual keys for the edge) and `tollgate admin tokens …` (tokens
//! for the admin and usage APIs). Secrets are printed once, when created or rotated.

use chrono::{DateTime, Utc};
use clap::Subcommand;
use tollgate_proto::admin::{
    CreateAdminTokenRequest, CreateKeyRequest, DeleteRequest, DisableBootstrapTokenRequest,
    KeyRequest, ListAdminTokensRequest, ListKeysRequest, RotateKeyRequest, StringList,
    UpdateKeyRequest,
};
use tollgate_proto::convert::timestamp;

use super::{AdminClient, Metadata, MetadataUpdate};
use crate::cli::parse;
use crate::cli::reply::Out;

/// `tollgate admin keys …`.
#[derive(Subcommand)]
pub enum Keys {
    /// Create a virtual key and print its secret (shown only this once).
    Create {
        /// A name to recognise the key by.
        #[arg(long)]
        alias: Option<String>,
        /// The id of the team it belongs to.
        #[arg(long, value_name = "TEAM_ID")]
        team: Option<String>,
        /// The id of the user it belongs to.
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
        /// A model the key may use (repeatable; none: every model).
        #[arg(long = "model", value_name = "MODEL")]
        models: Vec<String>,
        /// When it stops working: RFC 3339 time or date.
        #[arg(long, value_name = "TIME", value_parser = parse::time)]
        expires: Option<DateTime<Utc>>,
        /// A tag (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        #[command(flatten)]
        meta: Metadata,
    },
    /// List keys (without revoked ones unless --all).
    List {
        /// Only this team's keys.
        #[arg(long, value_name = "TEAM_ID")]
        team: Option<String>,
        /// Only this user's keys.
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
    },
    /// Change a key's alias, models, expiry, tags or metadata.
    Update {
        /// The key's id.
        id: String,
        /// The new alias.
        #[arg(long)]
        alias: Option<String>,
        /// Replace the allowed models with these (repeatable).
        #[arg(long = "model", value_name = "MODEL")]
        models: Vec<String>,
        /// Allow every model.
        #[arg(long, conflicts_with = "models")]
        all_models: bool,
        /// The new expiry: RFC 3339 time or date.
        #[arg(long, value_name = "TIME", value_parser = parse::time)]
        expires: Option<DateTime<Utc>>,
        /// Remove the expiry.
        #[arg(long, conflicts_with = "expires")]
        no_expiry: bool,
        /// Replace the tags with these (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Remove all tags.
        #[arg(long, conflicts_with = "tags")]
        clear_tags: bool,
        #[command(flatten)]
        meta: MetadataUpdate,
    },
    /// Issue a new secret for a key (printed once); the old one works for --grace-seconds.
    Rotate {
        /// The key's id.
        id: String,
        /// How long the old secret stays valid (0: revoked at once).
        #[arg(long, default_value_t = 0)]
        grace_seconds: u64,
    },
    /// Revoke a key for good.
    Revoke {
        /// The key's id.
        id: String,
    },
    /// Block a key until unblocked.
    Block {
        /// The key's id.
        id: String,
    },
    /// Unblock a blocked key.
    Unblock {
        /// The key's id.
        id: String,
    },
}

/// A list to replace with: the given values, none when `clear`, or unchanged (`None`).
fn list_replacement(values: Vec<String>, clear: bool) -> Option<StringList> {
    (clear || !values.is_empty()).then_some(StringList { values })
}

impl Keys {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            Keys::Create {
                alias,
                team,
                user,
                models,
                expires,
                tags,
                meta,
            } => {
                let request = CreateKeyRequest {
                    alias: alias.unwrap_or_default(),
                    team_id: team.unwrap_or_default(),
                    user_id: user.unwrap_or_default(),
                    models,
                    expires_at: expires.map(timestamp),
                    tags,
                    metadata: meta.map(),
                };
                out.show_secret("creating the key", client.create_key(request).await)
            }
            Keys::List { team, user, all } => {
                let request = ListKeysRequest {
                    team_id: team.unwrap_or_default(),
                    user_id: user.unwrap_or_default(),
                    include_revoked: all,
                };
                out.show("listing keys", client.list_keys(request).await)
            }
            Keys::Update {
                id,
                alias,
                models,
                all_models,
                expires,
                no_expiry,
                tags,
                clear_tags,
                meta,
            } => {
                let what = format!("updating key {id}");
                let request = UpdateKeyRequest {
                    key_id: id,
                    alias,
                    models: list_replacement(models, all_models),
                    expires_at: expires.map(timestamp),
                    clear_expires_at: no_expiry,
                    tags: list_replacement(tags, clear_tags),
                    metadata: meta.replacement(),
                };
                out.show(&what, client.update_key(request).await)
            }
            Keys::Rotate { id, grace_seconds } => {
                let what = format!("rotating key {id}");
                let request = RotateKeyRequest {
                    key_id: id,
                    grace_seconds,
                };
                out.show_secret(&what, client.rotate_key(request).await)
            }
            Keys::Revoke { id } => {
                let what = format!("revoking key {id}");
                out.show(&what, client.revoke_key(KeyRequest { key_id: id }).await)
            }
            Keys::Block { id } => {
                let what = format!("blocking key {id}");
                out.show(&what, client.block_key(KeyRequest { key_id: id }).await)
            }
            Keys::Unblock { id } => {
                let what = format!("unblocking key {id}");
                out.show(&what, client.unblock_key(KeyRequest { key_id: id }).await)
            }
        }
    }
}

/// `tollgate admin tokens …`.
#[derive(Subcommand)]
pub enum Tokens {
    /// Create a token and print its secret (shown only this once).
    Create {
        /// A name to recognise the token by (for example the tool using it).
        #[arg(long)]
        name: String,
        /// admin | viewer | finance, or edge | aggregator (they may only follow policy).
        #[arg(long)]
        role: String,
        /// Seconds until the token expires (default: never).
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        ttl: u64,
    },
    /// List tokens.
    List,
    /// Revoke a token.
    Revoke {
        /// The token's id.
        id: String,
    },
    /// Refuse the bootstrap token (TOLLGATE_ADMIN_TOKEN) from now on; needs another admin token.
    DisableBootstrap,
}

impl Tokens {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            Tokens::Create { name, role, ttl } => {
                let request = CreateAdminTokenRequest {
                    name,
                    role,
                    ttl_seconds: ttl,
                };
                out.show_secret(
                    "creating the token",
                    client.create_admin_token(request).await,
                )
            }
            Tokens::List => out.show(
                "listing tokens",
                client.list_admin_tokens(ListAdminTokensRequest {}).await,
            ),
            Tokens::Revoke { id } => {
                let what = format!("revoking token {id}");
                out.show(&what, client.revoke_admin_token(DeleteRequest { id }).await)
            }
            Tokens::DisableBootstrap => out.show(
                "disabling the bootstrap token",
                client
                    .disable_bootstrap_token(DisableBootstrapTokenRequest {})
                    .await,
            ),
        }
    }
}
