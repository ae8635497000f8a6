//! `tollgate admin teams …` and `tollgate admin users …`.

use clap::Subcommand;
use tollgate_proto::admin::{
    CreateTeamRequest, CreateUserRequest, ListTeamsRequest, ListUsersRequest, UpdateTeamRequest,
    UpdateUserRequest,
};

use super::{AdminClient, Metadata, MetadataUpdate, delete};
use crate::cli::reply::Out;

/// `tollgate admin teams …`.
#[derive(Subcommand)]
pub enum Teams {
    /// Create a team.
    Create {
        /// The team's name (unique).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        meta: Metadata,
    },
    /// List teams.
    List,
    /// Rename a team or replace its metadata.
    Update {
        /// The team's id.
        id: String,
        /// The new name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        meta: MetadataUpdate,
    },
    /// Delete a team.
    Delete {
        /// The team's id.
        id: String,
    },
}

impl Teams {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            Teams::Create { name, meta } => {
                let request = CreateTeamRequest {
                    name,
                    metadata: meta.map(),
                };
                out.show("creating the team", client.create_team(request).await)
            }
            Teams::List => out.show(
                "listing teams",
                client.list_teams(ListTeamsRequest {}).await,
            ),
            Teams::Update { id, name, meta } => {
                let what = format!("updating team {id}");
                let request = UpdateTeamRequest {
                    id,
                    name,
                    metadata: meta.replacement(),
                };
                out.show(&what, client.update_team(request).await)
            }
            Teams::Delete { id } => delete(out, "team", id, |r| client.delete_team(r)).await,
        }
    }
}

/// `tollgate admin users …`.
#[derive(Subcommand)]
pub enum Users {
    /// Create a user.
    Create {
        /// The user's email address.
        #[arg(long)]
        email: String,
        /// The id of the user's team.
        #[arg(long, value_name = "TEAM_ID")]
        team: Option<String>,
        /// admin | member | viewer | finance (default member).
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        meta: Metadata,
    },
    /// List users.
    List {
        /// Only this team's users.
        #[arg(long, value_name = "TEAM_ID")]
        team: Option<String>,
    },
    /// Change a user's email, team, role or metadata.
    Update {
        /// The user's id.
        id: String,
        /// The new email address.
        #[arg(long)]
        email: Option<String>,
        /// Move the user to this team.
        #[arg(long, value_name = "TEAM_ID")]
        team: Option<String>,
        /// Take the user out of its team.
        #[arg(long, conflicts_with = "team")]
        no_team: bool,
        /// admin | member | viewer | finance.
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        meta: MetadataUpdate,
    },
    /// Delete a user.
    Delete {
        /// The user's id.
        id: String,
    },
}

impl Users {
    /// Runs the command.
    pub async fn run(self, client: &mut AdminClient, out: &Out) -> anyhow::Result<()> {
        match self {
            Users::Create {
                email,
                team,
                role,
                meta,
            } => {
                let request = CreateUserRequest {
                    email,
                    team_id: team.unwrap_or_default(),
                    role: role.unwrap_or_default(),
                    metadata: meta.map(),
                };
                out.show("creating the user", client.create_user(request).await)
            }
            Users::List { team } => {
                let request = ListUsersRequest {
                    team_id: team.unwrap_or_default(),
                };
                out.show("listing users", client.list_users(request).await)
            }
            Users::Update {
                id,
                email,
                team,
                no_team,
                role,
                meta,
            } => {
                let what = format!("updating user {id}");
                let request = UpdateUserRequest {
                    id,
                    email,
                    team_id: if no_team { Some(String::new()) } else { team },
                    role,
                    metadata: meta.replacement(),
                };
                out.show(&what, client.update_user(request).await)
            }
            Users::Delete { id } => delete(out, "user", id, |r| client.delete_user(r)).await,
        }
    }
}
