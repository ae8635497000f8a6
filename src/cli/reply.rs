//! Turning the result of a call into printed output, or into the one readable error line.

use serde::Serialize;
use tonic::Status;

use super::connect::Api;
use super::output::{self, Format, View};

/// Where a command's results go: the API it called (for errors) and the output format.
pub struct Out {
    /// The API called.
    pub api: Api,
    /// How to print results.
    pub format: Format,
}

impl Out {
    /// The message of a successful call, or an error saying what failed and why.
    pub fn reply<T>(
        &self,
        what: &str,
        result: Result<tonic::Response<T>, Status>,
    ) -> anyhow::Result<T> {
        result
            .map(tonic::Response::into_inner)
            .map_err(|status| self.api.failed(what, &status))
    }

    /// Prints the message of a successful call, everything shown.
    pub fn show<T: Serialize>(
        &self,
        what: &str,
        result: Result<tonic::Response<T>, Status>,
    ) -> anyhow::Result<()> {
        self.show_with(what, result, &View::default())
    }

    /// Prints the message of a successful call as `view` says.
    pub fn show_with<T: Serialize>(
        &self,
        what: &str,
        result: Result<tonic::Response<T>, Status>,
        view: &View,
    ) -> anyhow::Result<()> {
        let message = self.reply(what, result)?;
        output::print(&message, self.format, view)
    }

    /// Prints a reply that carries a secret, and in table mode the warning that it is shown once.
    pub fn show_secret<T: Serialize>(
        &self,
        what: &str,
        result: Result<tonic::Response<T>, Status>,
    ) -> anyhow::Result<()> {
        self.show(what, result)?;
        if self.format == Format::Table {
            output::emit("\nThe secret is shown only this once: store it now.\n")?;
        }
        Ok(())
    }
}
