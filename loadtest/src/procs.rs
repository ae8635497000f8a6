//! Child processes of the suite (mock, floor proxy, Tollgate's roles, LiteLLM) and what
//! `/proc` says about them: resident memory and CPU time.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A child process, killed (with its process group) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    /// The address it printed as `listening on ADDR`, for our own binaries.
    pub addr: String,
}

impl Proc {
    /// Starts `command` with stderr to `log` and, when `announce` is set, waits for a
    /// `listening on ADDR` line on its stdout.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log: &Path,
        announce: bool,
    ) -> anyhow::Result<Proc> {
        let log_file =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stderr(log_file.try_clone()?)
            .stdout(if announce {
                Stdio::piped()
            } else {
                Stdio::from(log_file)
            });
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        let mut addr = String::new();
        if announce {
            let stdout = child.stdout.take().context("stdout")?;
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                if let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
                // Keep draining so the child never blocks on a full pipe.
                for _ in lines {}
            });
            let line = rx
                .recv_timeout(Duration::from_secs(20))
                .with_context(|| format!("{name} did not announce its address"))?;
            addr = line
                .strip_prefix("listening on ")
                .with_context(|| format!("{name} printed {line:?}"))?
                .to_owned();
        }
        Ok(Proc {
            name: name.to_owned(),
            child,
            addr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has already exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status})", self.name);
        }
        Ok(())
    }

    /// Resident memory of the process and its descendants, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        tree(self.pid()).iter().map(|&p| rss_bytes(p)).sum()
    }

    /// Open file descriptors (sockets included) of the process and its descendants.
    pub fn open_files(&self) -> usize {
        tree(self.pid())
            .iter()
            .filter_map(|p| std::fs::read_dir(format!("/proc/{p}/fd")).ok())
            .map(Iterator::count)
            .sum()
    }

    /// CPU time (user + system) of the process and its descendants so far.
    pub fn cpu_time(&self) -> Duration {
        tree(self.pid()).iter().map(|&p| cpu_time(p)).sum()
    }

    /// Context switches of every thread of the process and its descendants so far.
    pub fn switches(&self) -> Switches {
        tree(self.pid()).iter().map(|&p| switches(p)).sum()
    }

    /// How long the threads of the process and its descendants have waited, runnable, for a
    /// core so far (the scheduler's run delay).
    pub fn run_delay(&self) -> Duration {
        tree(self.pid()).iter().map(|&p| run_delay(p)).sum()
    }
}

/// A thread's context switches: voluntary ones (it waited for something, and was woken up when
/// it came) and involuntary ones (the scheduler took the core away).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Switches {
    pub voluntary: u64,
    pub involuntary: u64,
}

impl std::ops::Add for Switches {
    type Output = Switches;
    fn add(self, other: Switches) -> Switches {
        Switches {
            voluntary: self.voluntary + other.voluntary,
            involuntary: self.involuntary + other.involuntary,
        }
    }
}

impl std::ops::Sub for Switches {
    type Output = Switches;
    fn sub(self, other: Switches) -> Switches {
        Switches {
            voluntary: self.voluntary.saturating_sub(other.voluntary),
            involuntary: self.involuntary.saturating_sub(other.involuntary),
        }
    }
}

impl std::iter::Sum for Switches {
    fn sum<I: Iterator<Item = Switches>>(iter: I) -> Switches {
        iter.fold(Switches::default(), |a, b| a + b)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // The whole process group: LiteLLM's workers die with their parent.
        let pgid = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &pgid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &pgid])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every process in `/proc` (none where it cannot be read).
fn pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .collect()
}

/// `pid` and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = pids()
        .into_iter()
        .filter_map(|p| {
            let ppid = stat_fields(p).and_then(|f| f.get(1).and_then(|s| s.parse().ok()))?;
            Some((p, ppid))
        })
        .collect();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// Fields of `/proc/<pid>/stat` after the command name (index 0 is the state).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The context switches of every thread of `pid` (`/proc/<pid>/status` counts the main
/// thread's only). A thread that ended within the round takes its count with it, so the
/// figure is a floor; the edge's worker threads live as long as it does.
fn switches(pid: u32) -> Switches {
    each_thread(pid, "status", thread_switches)
}

fn run_delay(pid: u32) -> Duration {
    each_thread(pid, "schedstat", thread_run_delay)
}

/// `read` of the file `name` of every thread of `pid` (`/proc/<pid>/task/<tid>/<name>`), summed.
fn each_thread<T: std::iter::Sum>(pid: u32, name: &str, read: fn(&str) -> T) -> T {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return std::iter::empty().sum();
    };
    threads
        .flatten()
        .filter_map(|thread| std::fs::read_to_string(thread.path().join(name)).ok())
        .map(|text| read(&text))
        .sum()
}

/// The run delay in a thread's `schedstat`: time on the CPU, time waiting for it, timeslices
/// (nanoseconds, nanoseconds, count).
fn thread_run_delay(schedstat: &str) -> Duration {
    schedstat
        .split_whitespace()
        .nth(1)
        .and_then(|ns| ns.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// The switches a thread's `status` text counts.
fn thread_switches(status: &str) -> Switches {
    let count = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    Switches {
        voluntary: count("voluntary_ctxt_switches:"),
        involuntary: count("nonvoluntary_ctxt_switches:"),
    }
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .map_or(0, |kib| kib * 1024)
}

fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

fn cpu_time(pid: u32) -> Duration {
    // utime and stime: fields 14 and 15 of stat.
    stat_time(pid, 11..13)
}

/// The clock-tick fields `fields` of stat (counted after the command name) summed, as time.
fn stat_time(pid: u32, fields: std::ops::Range<usize>) -> Duration {
    let ticks: u64 = stat_fields(pid)
        .map(|f| {
            fields
                .filter_map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
                .sum()
        })
        .unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// A free TCP port on 127.0.0.1 (bound and released: good enough on a quiet machine).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A loopback address (`127.0.0.1:<port>`) on a port [`free_port`] found free.
pub fn free_addr() -> anyhow::Result<String> {
    Ok(format!("127.0.0.1:{}", free_port()?))
}

/// Whether something accepts connections on `addr`.
pub fn answers(addr: &str) -> bool {
    addr.parse().ok().is_some_and(|a| {
        std::net::TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok()
    })
}

/// CPU time of every process on the machine so far, from each one's own account. `/proc/stat`
/// is sampled at the timer tick, and misses work that wakes just after a tick and sleeps
/// before the next (timer-driven work does): on a 2-vCPU VM it read less than one process's
/// own time.
pub fn processes_busy() -> Duration {
    pids().into_iter().map(cpu_time).sum()
}

/// CPU time used on the whole machine so far (all cores, idle and I/O wait excluded).
fn machine_busy() -> Duration {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = text
        .lines()
        .next()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .enumerate()
                // user nice system idle iowait irq softirq steal: skip idle (3) and iowait (4).
                .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64)
}

/// Time the hypervisor ran something else while this machine's vCPUs had work (`steal` in
/// `/proc/stat`, all cores, in 10 ms steps): a vCPU taken away for milliseconds delays
/// everything that was to run on it.
pub fn stolen() -> Duration {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    Duration::from_secs_f64(steal_ticks(&text) as f64 / clock_ticks() as f64)
}

/// The `steal` field (the eighth number) of `/proc/stat`'s first line, in clock ticks.
fn steal_ticks(stat: &str) -> u64 {
    stat.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(8))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU time of this run: this process, its descendants (alive or reaped), and the PostgreSQL
/// and NATS servers it uses.
fn suite_busy() -> Duration {
    let me = std::process::id();
    let descendants: Duration = tree(me).iter().skip(1).map(|&p| cpu_time(p)).sum();
    // utime, stime, cutime, cstime (children already reaped).
    let own = stat_time(me, 11..15);
    let servers = servers_busy();
    descendants + own + servers.nats + servers.postgres
}

/// CPU time of the NATS and PostgreSQL servers on this machine so far (processes that have
/// exited, such as a closed connection's PostgreSQL backend, no longer count).
#[derive(Clone, Copy, Debug, Default)]
pub struct Servers {
    pub nats: Duration,
    pub postgres: Duration,
}

/// What the NATS and PostgreSQL servers have used so far.
pub fn servers_busy() -> Servers {
    let mut servers = Servers::default();
    for p in pids() {
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        match comm.trim() {
            "nats-server" => servers.nats += cpu_time(p),
            "postgres" => servers.postgres += cpu_time(p),
            _ => {}
        }
    }
    servers
}

/// Measures CPU used on the machine by work other than this run between two points.
///
/// The machine's CPU is the higher of two estimates, each short in its own way: `/proc/stat`
/// misses timer-driven work (it samples at the tick), and the sum of live processes misses
/// processes that exited in between (a compiler's, say).
pub struct Foreign {
    ticked: Duration,
    processes: Duration,
    suite: Duration,
    at: std::time::Instant,
}

impl Foreign {
    pub fn start() -> Foreign {
        Foreign {
            ticked: machine_busy(),
            processes: processes_busy(),
            suite: suite_busy(),
            at: std::time::Instant::now(),
        }
    }

    /// Other work's CPU since `start`, as a share of all cores, e.g. "0.35 cores".
    pub fn cores(&self) -> f64 {
        let machine = machine_busy()
            .saturating_sub(self.ticked)
            .max(processes_busy().saturating_sub(self.processes));
        let suite = suite_busy().saturating_sub(self.suite);
        machine.saturating_sub(suite).as_secs_f64() / self.at.elapsed().as_secs_f64().max(0.001)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_figure_of_the_machine_s_line_in_proc_stat() {
        let stat = "cpu  457729 143 93698 281569 2419 0 7042 5580 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(steal_ticks(stat), 5580);
        assert_eq!(steal_ticks(""), 0);
    }

    #[test]
    fn a_threads_run_delay_is_the_second_figure_of_its_schedstat() {
        assert_eq!(
            thread_run_delay("577549 1234000 17\n"),
            Duration::from_micros(1234)
        );
        assert_eq!(thread_run_delay(""), Duration::ZERO);
    }

    #[test]
    fn a_threads_switches_are_read_from_its_status() {
        let status = "Name:\ttokio-runtime-w\nvoluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t56\n";
        let expected = Switches {
            voluntary: 1234,
            involuntary: 56,
        };
        assert_eq!(thread_switches(status), expected);
        assert_eq!(thread_switches(""), Switches::default());
    }

    #[test]
    fn every_thread_of_a_process_is_counted() {
        // Other tests' threads come and go in this process, so the sum is compared with what
        // must be in it: this thread's count, read first, and a live sleeper's five sleeps.
        let (slept, slept_rx) = std::sync::mpsc::channel();
        let (done, done_rx) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || {
            for _ in 0..5 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = slept.send(());
            let _ = done_rx.recv();
        });
        let _ = slept_rx.recv();
        let this_thread = thread_switches(
            &std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default(),
        );
        let all = switches(std::process::id());
        let _ = done.send(());
        let _ = sleeper.join();
        assert!(
            all.voluntary >= this_thread.voluntary + 5,
            "{this_thread:?} of this thread, {all:?} in all"
        );
    }
}
