//! A role (control plane, edge, aggregator) served in the background by a test.
//!
//! A role that stops serving on its own is a crash, and a crash must fail the test even when
//! nothing the test checks afterwards happens to notice: [`Served`] reports the serve
//! future's error (or panic) from [`Served::stop`], and panics on drop if the role had
//! already stopped with one.

use std::fmt::Display;
use std::future::Future;

use anyhow::{Result, anyhow};
use futures::FutureExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The future a role's `serve` gets as its shutdown signal.
pub type Shutdown = futures::future::BoxFuture<'static, ()>;

/// A role's serve future running on the test's runtime.
pub struct Served {
    name: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Served {
    /// Spawns `serve(shutdown)`; `name` says which role in failure messages.
    pub fn spawn<F, E>(name: impl Into<String>, serve: impl FnOnce(Shutdown) -> F) -> Served
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = async {
            let _ = stopped.await;
        }
        .boxed();
        let serving = serve(shutdown);
        let task = tokio::spawn(async move { serving.await.map_err(|e| e.to_string()) });
        Served {
            name: name.into(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Asks the role to stop, waits until it has, and returns its serve error if it had one.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => outcome(&self.name, task.await),
            None => Ok(()),
        }
    }
}

fn outcome(name: &str, joined: Result<Result<(), String>, tokio::task::JoinError>) -> Result<()> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(anyhow!("{name} stopped serving with an error: {error}")),
        Err(error) => Err(anyhow!("{name} crashed: {error}")),
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let Some(mut task) = self.task.take() else {
            return;
        };
        let asked_to_stop = self.stop.is_none();
        if !task.is_finished() {
            task.abort();
            return;
        }
        if let Some(joined) = (&mut task).now_or_never()
            && let Err(error) = outcome(&self.name, joined)
            && !asked_to_stop
            && !std::thread::panicking()
        {
            panic!("{error:#}");
        }
    }
}
