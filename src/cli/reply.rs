//! Turning the result of a call into printed output, or into the one readable error line.

use serde::Serialize;
use tonic::{Status, Streaming};

use super::connect::Api;
use super::output::{self, Align, Format, View};

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

    /// Prints the messages of a stream as they come, one line each, until the stream ends or
    /// fails: in table mode the `cells` of a message under the names of `columns`.
    pub async fn follow<T: Serialize, const N: usize>(
        &self,
        what: &str,
        result: Result<tonic::Response<Streaming<T>>, Status>,
        columns: &[(&str, Align); N],
        cells: impl Fn(&T) -> [String; N],
    ) -> anyhow::Result<()> {
        let mut stream = self.reply(what, result)?;
        let aligns = columns.map(|(_, align)| align);
        if self.format == Format::Table {
            output::emit(&output::aligned(&aligns, columns.map(|(name, _)| name)))?;
        }
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                Ok(None) => return Ok(()),
                Err(status) => return Err(self.api.failed(what, &status)),
            };
            let line = match self.format {
                Format::Json => serde_json::to_string(&message)? + "\n",
                Format::Table => output::aligned(&aligns, cells(&message)),
            };
            output::emit(&line)?;
        }
    }
}
