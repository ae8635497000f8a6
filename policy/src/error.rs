//! Why a command was refused.

/// Why a command was refused. Each kind maps to one gRPC code at the API boundary.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command itself is malformed, whatever the state.
    #[error("{0}")]
    InvalidArgument(String),
    /// The command is well-formed but the current state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// It would create something whose unique name is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// It refers to something that does not exist.
    #[error("{0}")]
    NotFound(String),
}

impl CommandError {
    pub(crate) fn invalid(message: String) -> Self {
        CommandError::InvalidArgument(message)
    }
}
