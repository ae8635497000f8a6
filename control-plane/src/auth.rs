//! Who is calling the admin API, and may they. Tokens are compared as SHA-256 hashes in
//! constant time; the bootstrap token from `TOLLGATE_ADMIN_TOKEN` is an admin outside the log.

use tollgate_policy::PolicyState;
use tollgate_policy::model::{AdminRole, admin_caller, hash_secret};
use tonic::metadata::MetadataMap;

use crate::error::ControlError;

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read policy: admin or viewer.
    ReadPolicy,
    /// Fetch snapshots and watch policy events: admin, viewer, or the service roles `edge`
    /// and `aggregator` (which may do nothing else).
    FollowPolicy,
    /// Change policy: admin.
    WritePolicy,
    /// Read usage and spend: admin or finance.
    ReadUsage,
}

/// An authenticated caller, as recorded in the `actor` of the events it causes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: AdminRole,
}

/// Checks bearer tokens against the bootstrap token and the admin tokens in the policy.
#[derive(Clone)]
pub struct Authenticator {
    bootstrap_hash: Option<String>,
}

impl Authenticator {
    /// `bootstrap` is the value of `TOLLGATE_ADMIN_TOKEN`, if set.
    pub fn new(bootstrap: Option<&str>) -> Self {
        Authenticator {
            bootstrap_hash: bootstrap.filter(|t| !t.is_empty()).map(hash_secret),
        }
    }

    /// The caller of a request with `metadata`, if it may do what `access` says.
    pub fn authorize(
        &self,
        metadata: &MetadataMap,
        state: &PolicyState,
        access: Access,
    ) -> Result<Actor, ControlError> {
        let actor = self.authenticate(metadata, state)?;
        let allowed = match access {
            Access::ReadPolicy => matches!(actor.role, AdminRole::Admin | AdminRole::Viewer),
            Access::FollowPolicy => matches!(
                actor.role,
                AdminRole::Admin | AdminRole::Viewer | AdminRole::Edge | AdminRole::Aggregator
            ),
            Access::WritePolicy => actor.role == AdminRole::Admin,
            Access::ReadUsage => matches!(actor.role, AdminRole::Admin | AdminRole::Finance),
        };
        if !allowed {
            return Err(ControlError::PermissionDenied(format!(
                "a {} token cannot {}",
                actor.role,
                match access {
                    Access::ReadPolicy => "read policy",
                    Access::FollowPolicy => "follow policy",
                    Access::WritePolicy => "change policy",
                    Access::ReadUsage => "read usage",
                }
            )));
        }
        Ok(actor)
    }

    fn authenticate(
        &self,
        metadata: &MetadataMap,
        state: &PolicyState,
    ) -> Result<Actor, ControlError> {
        let header = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ControlError::Unauthenticated(
                    "missing metadata `authorization: Bearer <admin token>`".to_owned(),
                )
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ControlError::Unauthenticated(
                    "authorization metadata must be `Bearer <admin token>`".to_owned(),
                )
            })?;
        let now = chrono::Utc::now();
        admin_caller(
            &state.admin_tokens,
            state.bootstrap(self.bootstrap_hash.as_deref()),
            token,
            now,
        )
        .map(|(name, role)| Actor { name, role })
        .ok_or_else(|| {
            ControlError::Unauthenticated("unknown, revoked or expired admin token".to_owned())
        })
    }
}
