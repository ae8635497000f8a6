//! `tollgate admin teams …` and `tollgate admin users …`.

use clap::Subcommand;
use tollgate_proto::admin::{
    CreateTeamRequest, CreateUserRequest, DeleteRequest, ListTeamsRequest, ListUsersRequest,
    UpdateTeamRequest, UpdateUserRequest,
};

use super::{AdminClient, replacement};
use crate::cli::parse;
use crate::cli::reply::Out;

/// `tollgate admin teams …`.
#[derive(Subcommand)]
pub enum Teams {
    /// Create a team.
    Create {
        /// The team's name (unique).
        #[arg(long)]
        name: String,
        /// Metadata, as key=value (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse::key_value)]
        meta: Vec<(String, String)>,
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
        /// Replace the metadata with these key=value pairs (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse::key_value)]
        meta: Vec<(String, String)>,
        /// Remove all metadata.
        #[arg(long, conflicts_with = "meta")]
        clear_meta: bool,
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
                    metadata: parse::map(meta),
                };
                out.show("creating the team", client.create_team(request).await)
            }
            Teams::List => out.show(
                "listing teams",
                client.list_teams(ListTeamsRequest {}).await,
            ),
            Teams::Update {
                id,
                name,
                meta,
                clear_meta,
            } => {
                let what = format!("updating team {id}");
                let request = UpdateTeamRequest {
                    id,
                    name,
                    metadata: replacement(meta, clear_meta),
                };
                out.show(&what, client.update_team(request).await)
            }
            Teams::Delete { id } => {
                let what = format!("deleting team {id}");
                out.show(&what, client.delete_team(DeleteRequest { id }).await)
            }
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
        /// Metadata, as key=value (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse::key_value)]
        meta: Vec<(String, String)>,
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
        /// Replace the metadata with these key=value pairs (repeatable).
        #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = parse::key_value)]
        meta: Vec<(String, String)>,
        /// Remove all metadata.
        #[arg(long, conflicts_with = "meta")]
        clear_meta: bool,
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
                    metadata: parse::map(meta),
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
                clear_meta,
            } => {
                let what = format!("updating user {id}");
                let request = UpdateUserRequest {
                    id,
                    email,
                    team_id: if no_team { Some(String::new()) } else { team },
                    role,
                    metadata: replacement(meta, clear_meta),
                };
                out.show(&what, client.update_user(request).await)
            }
            Users::Delete { id } => {
                let what = format!("deleting user {id}");
                out.show(&what, client.delete_user(DeleteRequest { id }).await)
            }
        }
    }
}
