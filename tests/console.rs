//! The web console in a real browser: headless Chromium driven by Playwright
//! (`tests/python/console_browser.py`) against `tollgate up`. An admin signs in, creates a team
//! and a key (its secret shown once), sets the team a budget and sees what it spent, watches the
//! key's requests in the live tail and on the spend chart, revokes the key and sees the edge
//! refuse it; sets guardrails, routing and traffic rules and limit schedules that the edge then
//! enforces, and deletes them; forged and cross-site changes, made-up and idle sessions are
//! refused; a viewer finds every change refused; finance sees spend and nothing else.
//! Screenshots of each page go to `<target>/tmp/console-screenshots/`.
//!
//! Needs Debian's `chromium` (or `CHROMIUM=/path`); without one the test says so and passes,
//! unless `TOLLGATE_REQUIRE_BROWSER=1` (CI sets it, and installs the browser).

mod common;

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use common::{ADMIN_TOKEN, Up, client, tls_fixture};
use tollgate_test_support::openai_upstream::FakeOpenAi;

/// Idle seconds after which the console's sessions end in this test.
const IDLE_SECONDS: &str = "15";

/// The Chromium to drive, if the machine has one.
fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[tokio::test]
async fn an_admin_and_a_viewer_use_the_console_in_a_browser() -> Result<()> {
    let Some(chromium) = chromium() else {
        if std::env::var_os("TOLLGATE_REQUIRE_BROWSER").is_some() {
            bail!("no Chromium: install Debian's chromium package or set CHROMIUM=/path");
        }
        eprintln!("SKIPPED: no Chromium on this machine (apt install chromium, or CHROMIUM=/path)");
        return Ok(());
    };
    let python = tollgate_test_support::python_with("playwright").await?;
    let upstream = FakeOpenAi::start().await?;
    let temp = tempfile::tempdir()?;
    let env = [("TOLLGATE_UI_SESSION_IDLE_SECONDS", IDLE_SECONDS.to_owned())];
    let up = Up::start_with(temp.path(), &upstream.base_url(), &env)?;
    up.wait_ready().await?;

    let admin = |args: &[&str]| -> Result<Vec<u8>> {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["admin", "--output", "json"])
            .args(args)
            .env("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{}", up.admin))
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "tollgate admin {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out.stdout)
    };
    // Priced, so that the key's requests show as spend.
    admin(&[
        "prices", "set", "--model", "mock", "--input", "1000", "--output", "2000",
    ])?;
    let token = |name: &str, role: &str| -> Result<String> {
        let created = admin(&["tokens", "create", "--name", name, "--role", role])?;
        let created: serde_json::Value = serde_json::from_slice(&created)?;
        let secret = created["secret"].as_str();
        Ok(secret.context("no secret in the created token")?.to_owned())
    };
    let viewer = &token("console-viewer", "viewer")?;
    let finance = &token("console-finance", "finance")?;

    let first_key = std::fs::read_to_string(temp.path().join("data/first-key"))?;
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots)?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/console_browser.py");
    let console = format!("http://127.0.0.1:{}", up.ui);
    let edge = format!("http://127.0.0.1:{}", up.edge);
    let out = tollgate_test_support::run_python(
        &python,
        &[OsStr::new(&script)],
        &[
            ("CONSOLE_URL", &console),
            ("EDGE_URL", &edge),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("VIEWER_TOKEN", viewer),
            ("FINANCE_TOKEN", finance),
            ("CHROMIUM", &chromium.to_string_lossy()),
            ("SHOTS", &shots.to_string_lossy()),
            ("IDLE_SECONDS", IDLE_SECONDS),
            ("UPSTREAM_URL", &upstream.base_url()),
            ("FIRST_KEY", first_key.trim()),
        ],
    )
    .await?;
    assert!(out.contains("DONE"), "{out}");
    // The deployment added in the console reached the upstream with the credential stored there.
    assert_eq!(
        upstream.last_header("authorization").as_deref(),
        Some("Bearer sk-console-upstream-secret")
    );
    for page in [
        "01-sign-in",
        "02-teams",
        "03-key-created",
        "04-budget",
        "05-live-tail",
        "06-spend",
        "07-key-rotated",
        "08-key-revoked",
        "09-viewer-refused",
        "10-users",
        "11-prices",
        "12-audit",
        "13-health",
        "14-providers",
        "15-limits",
        "16-access-groups",
        "17-cache",
        "18-limit-schedule",
        "19-guardrails",
        "20-routing",
        "21-deleted",
        "22-finance",
    ] {
        assert!(
            shots.join(format!("{page}.png")).exists(),
            "no {page} screenshot"
        );
    }
    eprintln!("screenshots in {}", shots.display());
    Ok(())
}

/// With the edge's certificate (`TOLLGATE_TLS_CERT` / `TOLLGATE_TLS_KEY`), `tollgate up` serves
/// the console over HTTPS only, and its session cookie is `Secure` as well as `HttpOnly` and
/// `SameSite=Strict`.
#[tokio::test]
async fn the_console_is_served_over_the_edges_tls_with_a_secure_cookie() -> Result<()> {
    let upstream = FakeOpenAi::start().await?;
    let temp = tempfile::tempdir()?;
    let path = |name: &str| tls_fixture(name).to_string_lossy().into_owned();
    let env = [
        ("TOLLGATE_TLS_CERT", path("edge-a.pem")),
        ("TOLLGATE_TLS_KEY", path("edge-a.key")),
    ];
    let up = Up::start_with(temp.path(), &upstream.base_url(), &env)?;
    up.wait_ready().await?;
    let console = format!("https://127.0.0.1:{}", up.ui);
    let https = client("https")?;

    let sign_in = https.get(format!("{console}/sign-in")).send().await?;
    assert_eq!(sign_in.status(), 200);
    let signed_in = https
        .post(format!("{console}/sign-in"))
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await?;
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .context("no session cookie")?
        .to_str()?;
    for attribute in ["; Secure", "; HttpOnly", "; SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }

    // The same port in plain HTTP answers nothing.
    let plain = client("http")?
        .get(format!("http://127.0.0.1:{}/sign-in", up.ui))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    Ok(())
}
