//! Tollgate's control plane: the owner of policy. Commands from the admin API are validated
//! against the live state, appended to the event log, and relayed in order to the bus.

pub mod auth;
pub mod config;
pub mod console;
mod convert;
pub mod credentials;
pub mod error;
mod health;
pub mod log;
pub mod metrics;
mod process;
pub mod relay;
pub mod secrets;
mod server;
mod service;
pub mod snapshot;
pub mod store;
mod tail;
pub mod trust;
mod watch;

pub use process::{Process, RunError, open};
pub use server::{ControlPlane, ServeError};
pub use service::{AdminApi, MAX_WATCHERS};
