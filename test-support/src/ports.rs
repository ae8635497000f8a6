//! Ports for servers a test starts as processes, which must be told their port up front.
//!
//! Binding port 0 and releasing it (the usual trick) hands out a port from the kernel's
//! ephemeral range, which the kernel may give again to anyone before the server binds it: to
//! another test asking for port 0, or as the local end of any outgoing connection. Tests run in
//! parallel and connect all the time, so that race is real (a server once took a port another
//! test's server had been told to use). The ports here come from below the ephemeral range
//! (32768 and up on Linux, 49152 and up on macOS), which the kernel never picks by itself, and
//! this process hands each out once in 12,000 calls.

use std::net::TcpListener;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// The ports handed out: `FIRST..END`, below every common ephemeral range.
const FIRST: u16 = 20_000;
const END: u16 = 32_000;

/// The next port to try; `None` until the first call picks where this process starts.
static NEXT: Mutex<Option<u16>> = Mutex::new(None);

/// A port of 127.0.0.1 that nothing listens on now, that this process has not handed out
/// lately, and that the kernel will not give to anyone asking it for a port.
pub fn free_port() -> Result<u16> {
    let mut next = NEXT.lock().unwrap_or_else(PoisonError::into_inner);
    // Test binaries of one `cargo test` run one after another, but start each process at its
    // own place so that two at once (two checkouts, a loadtest beside the tests) rarely meet.
    let mut port = next.unwrap_or_else(|| FIRST + (std::process::id() % 1000) as u16 * 12);
    for _ in FIRST..END {
        let candidate = port;
        port = if port + 1 >= END { FIRST } else { port + 1 };
        if TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            *next = Some(port);
            return Ok(candidate);
        }
    }
    bail!("no port of 127.0.0.1 between {FIRST} and {END} is free")
}

/// Whether a server accepts connections on `port` of 127.0.0.1 within `within`, tried every
/// 50 ms.
pub async fn listening(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_below_the_ephemeral_range() -> Result<()> {
        let held = TcpListener::bind(("127.0.0.1", free_port()?))?;
        let mut seen = vec![held.local_addr()?.port()];
        for _ in 0..50 {
            let port = free_port()?;
            assert!((FIRST..END).contains(&port), "{port}");
            assert!(!seen.contains(&port), "{port} handed out twice");
            TcpListener::bind(("127.0.0.1", port))?;
            seen.push(port);
        }
        Ok(())
    }
}
