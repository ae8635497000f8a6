//! System calls a process makes over a round, counted by `perf stat` on the kernel's syscall
//! tracepoints. Each is an entry into the kernel, and on a VM the ones that wake a thread or
//! touch a socket often cost an exit to the hypervisor too: beside wake-ups, the count shows
//! where a target's kernel time (about half of an edge's CPU) comes from, and a change that
//! adds a system call per request shows as a number.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The system calls counted one by one; the total counts every kind.
pub const KINDS: [&str; 24] = [
    "read",
    "recvfrom",
    "recvmsg",
    "write",
    "writev",
    "sendto",
    "sendmsg",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "futex",
    "sched_yield",
    "accept4",
    "close",
    "openat",
    "pread64",
    "pwrite64",
    "lseek",
    "fdatasync",
    "fsync",
    "getrandom",
    "mmap",
    "munmap",
    "madvise",
];

/// The tracepoint counting every system call.
const EVERY: &str = "raw_syscalls:sys_enter";

/// What `perf stat` counted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Syscalls {
    /// Every system call.
    pub total: u64,
    /// The kinds of [`KINDS`] that were made at least once.
    pub by_kind: BTreeMap<String, u64>,
}

/// A `perf stat` attached to a process, counting until [`Counting::stop`].
pub struct Counting {
    perf: Child,
}

impl Counting {
    /// Starts counting the system calls of every thread of `pid`; `None` where `perf` is
    /// missing. Waits a moment so that the count covers what comes next.
    pub async fn start(pid: u32) -> Option<Counting> {
        let events: Vec<String> = std::iter::once(EVERY.to_owned())
            .chain(KINDS.iter().map(|k| format!("syscalls:sys_enter_{k}")))
            .collect();
        let perf = Command::new("perf")
            .args(["stat", "-x", ",", "-e", &events.join(","), "-p"])
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some(Counting { perf })
    }

    /// Stops counting; `None` where `perf` could not count (no tracepoints, not permitted).
    pub fn stop(mut self) -> Option<Syscalls> {
        let _ = Command::new("kill")
            .args(["-INT", &self.perf.id().to_string()])
            .status();
        let _ = self.perf.wait();
        let mut text = String::new();
        self.perf.stderr.take()?.read_to_string(&mut text).ok()?;
        parse(&text)
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        let _ = self.perf.kill();
        let _ = self.perf.wait();
    }
}

/// Reads `perf stat -x ,` output: `count,unit,event,…` a line; `None` unless the total was
/// counted.
fn parse(text: &str) -> Option<Syscalls> {
    let mut out = Syscalls::default();
    let mut counted = false;
    for line in text.lines() {
        let mut fields = line.split(',');
        let (Some(count), Some(_unit), Some(event)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(count) = count.trim().parse::<u64>() else {
            continue;
        };
        if event == EVERY {
            out.total = count;
            counted = true;
        } else if let Some(kind) = event.strip_prefix("syscalls:sys_enter_")
            && count > 0
        {
            out.by_kind.insert(kind.to_owned(), count);
        }
    }
    counted.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perf_stat_lines_are_read_as_a_total_and_kinds() {
        let text = "\
1053,,raw_syscalls:sys_enter,1197490,100.00,,
2,,syscalls:sys_enter_read,1197490,100.00,,
0,,syscalls:sys_enter_epoll_wait,1197490,100.00,,
<not supported>,,syscalls:sys_enter_futex,0,100.00,,
";
        let counted = parse(text).expect("a total");
        assert_eq!(counted.total, 1053);
        assert_eq!(
            counted.by_kind,
            BTreeMap::from([("read".to_owned(), 2)]),
            "kinds never made, or not counted, are left out"
        );
    }

    #[test]
    fn no_total_is_no_count() {
        let text = "<not supported>,,raw_syscalls:sys_enter,0,100.00,,\n";
        assert_eq!(parse(text), None);
        assert_eq!(parse("perf: command not found"), None);
    }
}
