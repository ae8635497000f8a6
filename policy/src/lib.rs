//! Tollgate's policy domain: entities, commands, events and the fold that turns the event log
//! into [`PolicyState`]. Pure: no I/O, no clock, no randomness — callers pass those in.

pub mod command;
pub mod egress;
mod error;
pub mod event;
pub mod guardrail;
pub mod model;
pub mod period;
pub mod redact;
pub mod sealing;
pub mod state;
mod validate;

pub use command::{Command, CommandError, decide};
pub use event::{PolicyEvent, RecordedEvent, SCHEMA_VERSION, decode_payload, encode_payload};
pub use state::PolicyState;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
