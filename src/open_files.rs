//! The open-file limit. A proxy holds two sockets per stream, and service managers often start
//! a process with a soft limit of 1,024 (systemd's default) under a far higher hard one: an
//! edge would refuse connections after about 500 streams. Go's runtime and nginx
//! (`worker_rlimit_nofile`) raise the limit for the same reason; the server roles raise their
//! soft limit to the hard one at start, and say so.

/// Below this many files a server role warns at start.
const LOW: libc::rlim_t = 4_096;

/// Raises the soft open-file limit to the hard one and logs what the process has.
pub fn raise() {
    match raise_to_hard() {
        Ok((before, after)) => {
            if after > before {
                tracing::info!(from = before, to = after, "open-file limit raised");
            }
            if after < LOW {
                tracing::warn!(
                    limit = after,
                    "the open-file limit is low: an edge holds two files per stream; raise the hard limit (ulimit -Hn, systemd's LimitNOFILE, the container's nofile ulimit)"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "the open-file limit could not be read or raised"),
    }
}

/// The soft limit before and after.
#[allow(unsafe_code)]
fn raise_to_hard() -> std::io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    // macOS refuses a soft limit above OPEN_MAX (10,240), whatever the hard limit says.
    let ceiling = if cfg!(target_os = "macos") {
        limit.rlim_max.min(10_240)
    } else {
        limit.rlim_max
    };
    if ceiling > before {
        limit.rlim_cur = ceiling;
        // SAFETY: setrlimit reads only the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}
