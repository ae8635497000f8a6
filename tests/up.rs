//! `tollgate up` end to end, driven through the CLI as a newcomer would: the printed curl line
//! works; teams, users, keys, prices and budgets made with `tollgate admin` take effect; the
//! call shows in `tollgate usage` and its CSV; and after a restart everything is still there,
//! with no event added twice by the configuration file.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use common::words;
use serde_json::Value;

/// A `tollgate up` process, stopped with SIGTERM (as Ctrl-C or an orchestrator would) on drop.
/// Its listeners take ports the system picks (port 0), read back from the banner: ports picked
/// beforehand could be taken by a test running beside this one before `up` binds them.
struct Up {
    child: Child,
    dir: std::path::PathBuf,
}

/// The addresses `tollgate up` listens on, as its banner prints them.
#[derive(Clone, Copy)]
struct Ports {
    admin: u16,
    edge: u16,
    usage: u16,
    export: u16,
}

impl Ports {
    /// The ports a banner names, once all four are printed.
    fn from_banner(banner: &str) -> Option<Ports> {
        let port = |label: &str| -> Option<u16> {
            let line = banner.lines().find(|l| l.trim_start().starts_with(label))?;
            let (_, after) = line.split_once("://127.0.0.1:")?;
            let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        };
        Some(Ports {
            admin: port("admin API (gRPC)")?,
            edge: port("OpenAI-compatible API")?,
            usage: port("usage API (gRPC)")?,
            export: port("usage CSV export")?,
        })
    }
}

const CONFIG: &str = r#"
[[models]]
name = "file-model"
provider = "mock"
input_per_mtok = 1000.0
output_per_mtok = 2000.0
settings = { output_tokens = "4" }

[[models]]
name = "hosted-model"
provider = "openai_compatible"
api_base = "http://127.0.0.1:9/v1"
api_key_env = "TOLLGATE_TEST_UPSTREAM_KEY"
"#;

impl Up {
    fn start(dir: &Path) -> Result<Self> {
        let stdout = std::fs::File::create(dir.join("up.out"))?;
        let stderr = std::fs::File::create(dir.join("up.err"))?;
        let child = any_ports(Command::new(env!("CARGO_BIN_EXE_tollgate")).arg("up"))
            .env("TOLLGATE_DATA_DIR", dir.join("data"))
            .env("TOLLGATE_CONFIG", dir.join("tollgate.toml"))
            .env("TOLLGATE_TEST_UPSTREAM_KEY", "sk-test-upstream")
            .env("RUST_LOG", "warn")
            // `up` is self-contained: servers meant for other tests must not matter.
            .env("DATABASE_URL", "postgres://nowhere.invalid/ignored")
            .env("NATS_URL", "nats://nowhere.invalid:4222")
            .stdout(stdout)
            .stderr(stderr)
            .spawn()?;
        Ok(Up {
            child,
            dir: dir.to_owned(),
        })
    }

    /// Waits until the banner is printed and the edge is ready; its ports.
    async fn wait_ready(&mut self) -> Result<Ports> {
        // Generous: a debug build on a busy CI machine starts slowly.
        for _ in 0..1200 {
            if let Some(status) = self.child.try_wait()? {
                let said = std::fs::read_to_string(self.dir.join("up.err")).unwrap_or_default();
                bail!("tollgate up exited with {status} before it was ready:\n{said}");
            }
            let banner = std::fs::read_to_string(self.dir.join("up.out"))?;
            if let Some(ports) = Ports::from_banner(&banner) {
                let url = format!("http://127.0.0.1:{}/health/ready", ports.edge);
                if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                    return Ok(ports);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let said = std::fs::read_to_string(self.dir.join("up.err")).unwrap_or_default();
        bail!("tollgate up did not become ready in 60 s; it said:\n{said}")
    }

    fn stop(mut self) -> Result<()> {
        tollgate_test_support::terminate(&self.child);
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "tollgate up exited with {status}");
        Ok(())
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends the request a printed `curl URL (-H 'header')* -d 'body'` line describes, as curl
/// would, without needing curl on the machine; returns the status and the body.
async fn replay_curl(line: &str) -> Result<(u16, String)> {
    let words = shell_words(line)?;
    let [program, url, options @ ..] = words.as_slice() else {
        bail!("too short for a curl line: {line}");
    };
    anyhow::ensure!(program == "curl", "not a curl line: {line}");
    let mut request = reqwest::Client::new().post(url);
    let mut options = options.iter();
    while let Some(option) = options.next() {
        let value = options
            .next()
            .with_context(|| format!("{option} without a value in: {line}"))?;
        request = match option.as_str() {
            "-H" => {
                let (name, value) = value
                    .split_once(": ")
                    .with_context(|| format!("header {value:?} is not `name: value`"))?;
                request.header(name, value)
            }
            "-d" => request.body(value.clone()),
            other => bail!("unexpected curl option {other} in: {line}"),
        };
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// Splits a POSIX shell line into words: single and double quotes, backslash escapes.
fn shell_words(line: &str) -> Result<Vec<String>> {
    let (mut words, mut word, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => bail!("unclosed ' in: {line}"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('$') if chars.next() == Some('(') => {
                            // Only `$(cat FILE)`, the way the banner passes the key.
                            let inner: String = chars.by_ref().take_while(|&c| c != ')').collect();
                            let Ok([command, file]) = <[String; 2]>::try_from(shell_words(&inner)?)
                            else {
                                bail!("only $(cat FILE) is replayed: {line}");
                            };
                            anyhow::ensure!(
                                command == "cat",
                                "only $(cat FILE) is replayed: {line}"
                            );
                            let content = std::fs::read_to_string(&file)
                                .with_context(|| format!("reading {file}"))?;
                            word.push_str(content.trim_end_matches('\n'));
                        }
                        Some('$' | '`') => bail!("substitutions are not replayed: {line}"),
                        Some('\\') => word.extend(chars.next()),
                        Some(c) => word.push(c),
                        None => bail!("unclosed \" in: {line}"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '$' | '`' | ';' | '|' | '&' | '<' | '>' => bail!("shell syntax {c} in: {line}"),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Runs `tollgate <args>` against this instance; returns stdout, failing on a non-zero exit.
fn tollgate(dir: &Path, ports: Ports, args: &[&str]) -> Result<String> {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env("TOLLGATE_DATA_DIR", dir.join("data"))
        .env("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{}", ports.admin))
        .env("TOLLGATE_USAGE_ADDR", format!("127.0.0.1:{}", ports.usage))
        .env(
            "TOLLGATE_USAGE_HTTP_ADDR",
            format!("127.0.0.1:{}", ports.export),
        )
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .output()?;
    if !output.status.success() {
        bail!(
            "tollgate {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

fn admin_json(dir: &Path, ports: Ports, args: &[&str]) -> Result<Value> {
    let mut full = vec!["admin", "--output", "json"];
    full.extend_from_slice(args);
    let out = tollgate(dir, ports, &full)?;
    serde_json::from_str(&out).with_context(|| format!("parsing {out}"))
}

async fn chat(ports: Ports, key: &str, model: &str) -> Result<u16> {
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1/chat/completions",
            ports.edge
        ))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

fn event_count(dir: &Path, ports: Ports) -> Result<u64> {
    let events = admin_json(dir, ports, &["events", "--limit", "1000"])?;
    Ok(events["events"].as_array().map_or(0, |e| e.len() as u64))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_runs_manages_calls_and_restarts_tollgate_up() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = temp.path();
    std::fs::write(dir.join("tollgate.toml"), CONFIG)?;
    let mut up = Up::start(dir)?;
    let ports = up.wait_ready().await?;

    // The printed curl line works as printed (the banner comes once every role is up).
    let mut banner = String::new();
    for _ in 0..100 {
        banner = std::fs::read_to_string(dir.join("up.out"))?;
        if banner.contains("\ncurl ") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let curl = banner
        .lines()
        .find(|l| l.starts_with("curl "))
        .context("no curl line printed")?;
    let secret_on_disk = std::fs::read_to_string(dir.join("data/first-key"))?;
    assert!(
        !banner.contains(secret_on_disk.trim()),
        "the banner prints the key itself: {banner}"
    );
    let (status, answered) = replay_curl(curl).await?;
    assert!(
        status == 200 && answered.contains("chat.completion"),
        "{status} {answered}"
    );
    // The data directory and everything secret in it belong to the owner alone.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |name: &str| -> Result<u32> {
            Ok(std::fs::metadata(dir.join("data").join(name))?
                .permissions()
                .mode()
                & 0o777)
        };
        assert_eq!(mode("")?, 0o700, "the data directory");
        for file in [
            "policy.db",
            "usage.db",
            "admin-token",
            "credential-key",
            "first-key",
        ] {
            assert_eq!(mode(file)?, 0o600, "{file}");
        }
    }

    // An admin sets up a team, a user, a key, a price and a budget with the CLI.
    let team = admin_json(dir, ports, &["teams", "create", "--name", "research"])?;
    let team_id = team["id"].as_str().context("team id")?.to_owned();
    admin_json(
        dir,
        ports,
        &words(&format!(
            "users create --email ada@example.com --team {team_id}"
        )),
    )?;
    let key = admin_json(
        dir,
        ports,
        &words(&format!(
            "keys create --alias ada --team {team_id} --model file-model"
        )),
    )?;
    let secret = key["secret"].as_str().context("secret")?.to_owned();
    assert!(secret.starts_with("tg-"));
    admin_json(
        dir,
        ports,
        &words("prices set --model file-model --input 1000 --output 2000"),
    )?;
    admin_json(
        dir,
        ports,
        &words(&format!(
            "budgets set --scope team --scope-id {team_id} --amount 50 --period monthly \
             --threshold 80"
        )),
    )?;
    let events_before_restart = event_count(dir, ports)?;

    assert_eq!(chat(ports, &secret, "file-model").await?, 200);
    assert_eq!(
        chat(ports, &secret, "mock").await?,
        403,
        "the key is limited to file-model"
    );

    // The call shows in usage and in the CSV (after the aggregator has taken it).
    let today = chrono::Utc::now().date_naive();
    let range = format!(
        "--start {today} --end {} --group-by team,model",
        today + chrono::Days::new(1)
    );
    let query = format!("usage --output json query {range}");
    let mut rows = Value::Null;
    for _ in 0..100 {
        rows = serde_json::from_str(&tollgate(dir, ports, &words(&query))?)?;
        if rows["rows"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["model"] == "file-model"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let row = rows["rows"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["model"] == "file-model"))
        .with_context(|| format!("the call is not in usage: {rows}"))?
        .clone();
    assert_eq!(row["team"], team_id.as_str());
    assert_eq!(row["requests"], 1);
    let csv = tollgate(dir, ports, &words(&format!("usage export {range}")))?;
    assert!(
        csv.starts_with("bucket_start,team,model,requests,"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.contains(&team_id) && l.contains(",file-model,1,")),
        "{csv}"
    );

    // Restart: keys, budgets and usage survive; the config file adds no event twice.
    up.stop()?;
    let mut up = Up::start(dir)?;
    let ports = up.wait_ready().await?;
    assert_eq!(
        event_count(dir, ports)?,
        events_before_restart,
        "no duplicate events after a restart"
    );
    let file_model_requests = |rows: &Value| -> u64 {
        rows["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["model"] == "file-model")
            .filter_map(|r| r["requests"].as_u64())
            .sum()
    };
    let rows: Value = serde_json::from_str(&tollgate(dir, ports, &words(&query))?)?;
    assert_eq!(
        file_model_requests(&rows),
        1,
        "the request made before the restart is counted once: {rows}"
    );
    let budgets = admin_json(dir, ports, &["budgets", "list"])?;
    assert!(
        budgets.to_string().contains(&team_id),
        "the budget survived: {budgets}"
    );
    assert_eq!(
        chat(ports, &secret, "file-model").await?,
        200,
        "the key survived"
    );
    let mut rows = Value::Null;
    for _ in 0..100 {
        rows = serde_json::from_str(&tollgate(dir, ports, &words(&query))?)?;
        if file_model_requests(&rows) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        file_model_requests(&rows),
        2,
        "the request after the restart is counted too, once: {rows}"
    );
    up.stop()?;
    Ok(())
}

#[test]
fn an_unreadable_credential_key_stops_the_start_instead_of_being_replaced() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let data = temp.path().join("data");
    // Unreadable even to root: a directory where the key file should be.
    std::fs::create_dir_all(data.join("credential-key"))?;
    let output = up_on_any_ports(&data)
        .env_remove("TOLLGATE_CREDENTIAL_KEY")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()?;
    assert!(!output.status.success(), "tollgate up started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read") && stderr.contains("credential-key"),
        "{stderr}"
    );
    assert!(
        data.join("credential-key").is_dir(),
        "the unreadable key was replaced"
    );
    Ok(())
}

/// With `TOLLGATE_LOG_FORMAT=json` every log line is one JSON object with its fields at the top
/// level, and none holds the first key's secret; an unknown format stops the start.
#[test]
fn json_logs_are_one_object_per_line_and_hold_no_key() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let data = temp.path().join("data");
    let start = |format: &str| -> Result<Child> {
        Ok(up_on_any_ports(&data)
            .env("TOLLGATE_LOG_FORMAT", format)
            .env("RUST_LOG", "debug")
            .env_remove("DATABASE_URL")
            .env_remove("NATS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?)
    };

    let wrong = start("yaml")?.wait_with_output()?;
    assert!(!wrong.status.success(), "started with an unknown format");
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(said.contains("TOLLGATE_LOG_FORMAT"), "{said}");

    let child = start("json")?;
    // Running a few seconds logs the start of every role.
    std::thread::sleep(Duration::from_secs(4));
    tollgate_test_support::terminate(&child);
    let output = child.wait_with_output()?;
    let logs = String::from_utf8(output.stderr)?;
    let secret = std::fs::read_to_string(data.join("first-key"))?;
    let secret = secret.trim();
    assert!(!secret.is_empty());
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "too few log lines:\n{logs}");
    for line in lines {
        let event: Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        for field in ["timestamp", "level", "target"] {
            assert!(event[field].is_string(), "no {field}: {line}");
        }
        assert!(!line.contains(secret), "a log line holds the key: {line}");
    }
    Ok(())
}

/// `tollgate up` on `data`, every listener on a port the system picks.
fn up_on_any_ports(data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    any_ports(command.arg("up")).env("TOLLGATE_DATA_DIR", data);
    command
}

/// Every listener of `tollgate up` on a port the system picks (the console's too).
fn any_ports(command: &mut Command) -> &mut Command {
    command
        .env("TOLLGATE_UI_ADDR", "127.0.0.1:0")
        .env("TOLLGATE_ADMIN_ADDR", "127.0.0.1:0")
        .env("TOLLGATE_EDGE_ADDR", "127.0.0.1:0")
        .env("TOLLGATE_USAGE_ADDR", "127.0.0.1:0")
        .env("TOLLGATE_USAGE_HTTP_ADDR", "127.0.0.1:0")
}

/// A server role started under a low soft open-file limit (systemd's default is 1,024) raises
/// it to the hard limit, and says so: an edge holds two files per stream.
#[cfg(target_os = "linux")]
#[test]
fn a_low_soft_open_file_limit_is_raised_to_the_hard_one() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let (_, hard) = open_file_limits("self")?;
    anyhow::ensure!(
        hard > 128,
        "this machine's hard open-file limit is only {hard}"
    );
    let log = temp.path().join("up.err");
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "ulimit -Sn 128 && exec \"$0\" up",
        env!("CARGO_BIN_EXE_tollgate"),
    ]);
    let child = any_ports(&mut command)
        .env("TOLLGATE_DATA_DIR", temp.path().join("data"))
        .env("TOLLGATE_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("DATABASE_URL", "postgres://nowhere.invalid/ignored")
        .env("NATS_URL", "nats://nowhere.invalid:4222")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut up = Up {
        child,
        dir: temp.path().to_owned(),
    };
    // Generous: a debug build on a busy CI machine starts slowly.
    let mut said = String::new();
    for _ in 0..1200 {
        said = std::fs::read_to_string(&log)?;
        if said.contains("open-file limit raised") {
            break;
        }
        if let Some(status) = up.child.try_wait()? {
            bail!("tollgate up exited with {status}:\n{said}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = said
        .lines()
        .find(|line| line.contains("open-file limit raised"))
        .with_context(|| format!("no word of the open-file limit in 60 s:\n{said}"))?;
    let event: Value = serde_json::from_str(line)?;
    assert_eq!(
        (event["from"].as_u64(), event["to"].as_u64()),
        (Some(128), Some(hard))
    );
    assert_eq!(open_file_limits(&up.child.id().to_string())?, (hard, hard));
    Ok(())
}

/// The soft and hard open-file limits of process `pid` ("self" for this one).
#[cfg(target_os = "linux")]
fn open_file_limits(pid: &str) -> Result<(u64, u64)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let fields: Vec<&str> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .context("no open-file limit in /proc/<pid>/limits")?
        .split_whitespace()
        .collect();
    let number = |i: usize| -> Result<u64> {
        Ok(fields
            .get(i)
            .context("a short open-file limit line")?
            .parse()?)
    };
    Ok((number(3)?, number(4)?))
}
