//! The control plane's errors and their one mapping to gRPC status codes.

use tollgate_policy::CommandError;
use tonic::{Code, Status};

use crate::store::StoreError;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other writers kept winning the race for the log.
    #[error("too many concurrent changes; retry")]
    Contended,
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is malformed before it reaches the domain (an unknown enum name, …).
    #[error("{0}")]
    InvalidArgument(String),
    /// A feature needs configuration this control plane does not have.
    #[error("{0}")]
    NotConfigured(String),
    /// A dependency other than the store (the bus) cannot be reached.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Status {
        let code = match &e {
            ControlError::Command(CommandError::InvalidArgument(_))
            | ControlError::InvalidArgument(_) => Code::InvalidArgument,
            ControlError::Command(CommandError::FailedPrecondition(_))
            | ControlError::NotConfigured(_) => Code::FailedPrecondition,
            ControlError::Command(CommandError::AlreadyExists(_)) => Code::AlreadyExists,
            ControlError::Command(CommandError::NotFound(_)) => Code::NotFound,
            ControlError::Store(StoreError::Conflict(_)) | ControlError::Contended => Code::Aborted,
            ControlError::Store(_) => {
                // The detail (a database error) is for the operator's log, not the caller.
                tracing::error!(error = %e, "event store failure");
                return Status::unavailable("the policy store is unavailable; retry later");
            }
            ControlError::Unauthenticated(_) => Code::Unauthenticated,
            ControlError::PermissionDenied(_) => Code::PermissionDenied,
            ControlError::Unavailable(_) => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}
