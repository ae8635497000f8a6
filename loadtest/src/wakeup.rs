//! What waking a sleeping thread costs on this machine: two threads pass a byte back and forth
//! over a socket pair, pinned to one CPU or to two. Each pass is one wake-up, as each hop of a
//! request through a proxy is. On a VM, waking a thread on another, idle vCPU goes through the
//! hypervisor; that cost, more than the code under test, sets the latency at concurrency 1.

// Pinning a thread to a CPU is a libc call, and libc calls are `unsafe`.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Passes measured per placement.
const PASSES: usize = 4_000;
/// The pause between rounds, about what a request spends elsewhere at concurrency 1, so that
/// the other CPU has gone idle when it is woken (back to back, it would still be polling).
const PAUSE: Duration = Duration::from_micros(200);

/// The median time of one wake-up (half a round trip).
#[derive(Clone, Copy, Debug)]
pub struct WakeUps {
    pub same_cpu: Duration,
    pub other_cpu: Duration,
}

/// Measures both placements, on the first two CPUs this process may use; `None` where it
/// may use only one, or threads cannot be pinned.
pub fn measure() -> Option<WakeUps> {
    let cpus = allowed_cpus()?;
    let (&first, &second) = (cpus.first()?, cpus.get(1)?);
    Some(WakeUps {
        same_cpu: median_pass(first, first)?,
        other_cpu: median_pass(first, second)?,
    })
}

fn median_pass(ping_cpu: usize, pong_cpu: usize) -> Option<Duration> {
    let (mut ping, mut pong) = UnixStream::pair().ok()?;
    let ponger = std::thread::spawn(move || -> Option<()> {
        pin_to(pong_cpu)?;
        let mut byte = [0u8];
        while pong.read(&mut byte).ok()? == 1 {
            pong.write_all(&byte).ok()?;
        }
        Some(())
    });
    let pinger = std::thread::spawn(move || -> Option<Vec<Duration>> {
        pin_to(ping_cpu)?;
        let mut byte = [0u8];
        let mut passes = Vec::with_capacity(PASSES);
        for _ in 0..PASSES {
            let pause = Instant::now();
            while pause.elapsed() < PAUSE {
                std::hint::spin_loop();
            }
            let sent = Instant::now();
            ping.write_all(&byte).ok()?;
            ping.read_exact(&mut byte).ok()?;
            passes.push(sent.elapsed() / 2);
        }
        Some(passes)
    });
    let mut passes = pinger.join().ok()??;
    let _ = ponger.join();
    passes.sort_unstable();
    passes.get(passes.len() / 2).copied()
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: as in `pin_to`; `sched_getaffinity` writes only into `set`.
    let (got, set) = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let got = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        (got, set)
    };
    // SAFETY: `CPU_ISSET` reads the bit set filled above.
    let cpus = (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) });
    (got == 0).then(|| cpus.collect())
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> Option<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return None;
    }
    // SAFETY: `set` is a plain bit set owned by this frame; `sched_setaffinity` only reads it,
    // and pid 0 names the calling thread.
    let pinned = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    (pinned == 0).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_up_is_measured_on_each_placement_where_there_are_two_cpus() {
        let cpus = allowed_cpus().expect("the affinity of this thread");
        assert!(!cpus.is_empty());
        match measure() {
            Some(wake_ups) => {
                assert!(cpus.len() > 1, "{cpus:?}");
                assert!(wake_ups.same_cpu > Duration::ZERO, "{wake_ups:?}");
                assert!(wake_ups.other_cpu > Duration::ZERO, "{wake_ups:?}");
            }
            None => assert_eq!(cpus.len(), 1, "two CPUs, but no measurement"),
        }
    }
}
