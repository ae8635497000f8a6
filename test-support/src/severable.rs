//! A TCP forwarder to a server that a test can cut, as a network partition would: every
//! connection through it is closed and new ones are refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running forwarder; it stops when dropped.
pub struct Severable {
    addr: SocketAddr,
    severed: Arc<AtomicBool>,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Severable {
    /// Forwards connections on a random port of 127.0.0.1 to `target` (`host:port`).
    pub async fn start(target: &str) -> anyhow::Result<Severable> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let severed = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(false);
        let (target, flag, signal) = (target.to_owned(), severed.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let mut cut = signal.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Ok(Severable {
            addr,
            severed,
            cut,
            task,
        })
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection and refuses new ones from now on.
    pub fn sever(&self) {
        self.severed.store(true, Ordering::SeqCst);
        let _ = self.cut.send(true);
    }
}

impl Drop for Severable {
    fn drop(&mut self) {
        self.task.abort();
    }
}
