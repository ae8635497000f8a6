//! Reaching the admin and usage APIs: addresses, the bearer token (flag, environment or the
//! file `tollgate up` writes), the connection, and errors a person understands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow};
use tollgate_runtime::tls::ClientTls;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How long to wait for a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An API the CLI calls, named for messages.
#[derive(Clone, Debug)]
pub struct Api {
    /// What it is, for example "admin API".
    pub name: &'static str,
    /// Where, as given on the command line.
    pub addr: String,
    /// What to check when it cannot be reached.
    pub hint: &'static str,
    /// Whether a token was given (changes the advice when it is refused).
    pub token_given: bool,
}

impl Api {
    /// The error for an API that does not answer.
    pub fn unreachable(&self, detail: &str) -> anyhow::Error {
        let tls = if self.addr.starts_with("https://") {
            "; over TLS, TOLLGATE_TLS_CA must name the CA of the server's certificate, and a \
             server that asks for a client certificate needs TOLLGATE_TLS_CLIENT_CERT and \
             TOLLGATE_TLS_CLIENT_KEY"
        } else {
            ""
        };
        anyhow!(
            "cannot reach the {} at {} — {}{tls} ({detail})",
            self.name,
            self.addr,
            self.hint
        )
    }

    /// The error for a refused token; `detail` is the server's reason.
    pub fn not_authorised(&self, detail: &str, code: &str) -> anyhow::Error {
        if self.token_given {
            anyhow!("not authorised: {detail}; check --token or TOLLGATE_ADMIN_TOKEN ({code})")
        } else {
            anyhow!("not authorised: no token given; set --token or TOLLGATE_ADMIN_TOKEN ({code})")
        }
    }

    /// The one-line error for a failed call; `what` says what was being done.
    pub fn failed(&self, what: &str, status: &Status) -> anyhow::Error {
        let code = code_name(status.code());
        let message = match status.message() {
            "" => status.code().description(),
            message => message,
        };
        match status.code() {
            Code::Unauthenticated => self.not_authorised(message, code),
            // A transport failure (the server went away), not an answer from the server.
            Code::Unavailable | Code::Unknown | Code::Cancelled => {
                match std::error::Error::source(status) {
                    // What broke the connection (a TLS alert, say) is in the causes.
                    Some(cause) => {
                        self.unreachable(&format!("{message}: {}, {code}", causes(cause)))
                    }
                    None => anyhow!("{what}: {message} ({code})"),
                }
            }
            Code::Unimplemented => anyhow!(
                "{what}: the server at {} does not serve the {}; check --addr ({code})",
                self.addr,
                self.name
            ),
            _ => anyhow!("{what}: {message} ({code})"),
        }
    }
}

/// `addr` as a URL: `host:port` means `http://host:port` (TLS needs `https://`).
pub fn url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// The token: the flag (or `TOLLGATE_ADMIN_TOKEN`, which clap reads into it), else the file
/// `$TOLLGATE_DATA_DIR/admin-token` (default `./.tollgate/admin-token`) when it exists.
pub fn token(flag: Option<String>) -> anyhow::Result<Option<String>> {
    if let Some(token) = flag.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
        return Ok(Some(token));
    }
    let dir = std::env::var_os("TOLLGATE_DATA_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./.tollgate"));
    let path = dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!(
            "cannot read the admin token from {}: {e}",
            path.display()
        )),
    }
}

/// The value of an `authorization: Bearer <token>` header.
pub fn bearer_value(token: &str) -> anyhow::Result<String> {
    let value = format!("Bearer {token}");
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        Ok(value)
    } else {
        Err(anyhow!(
            "the token contains characters that cannot be sent in a header"
        ))
    }
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// The interceptor for `token`.
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        Ok(Bearer(match token {
            Some(token) => Some(
                bearer_value(token)?
                    .parse()
                    .map_err(|_| anyhow!("the token cannot be sent in a header"))?,
            ),
            None => None,
        }))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The CLI's TLS settings: `TOLLGATE_TLS_CA`, `TOLLGATE_TLS_CLIENT_CERT` and
/// `TOLLGATE_TLS_CLIENT_KEY`.
fn client_tls() -> anyhow::Result<ClientTls> {
    ClientTls::from_settings(|name| std::env::var(name).ok())
        .map_err(|missing| anyhow!("{missing} is required beside the other half of the pair"))
}

/// An HTTP client for the aggregator's export: over `https://` it trusts and shows what the gRPC
/// connections do.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    let pems = client_tls()?.read()?;
    let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
    if let Some(ca) = pems.ca {
        let ca = reqwest::Certificate::from_pem(&ca).context("TOLLGATE_TLS_CA")?;
        builder = builder.tls_certs_only([ca]);
    }
    if let Some((mut pem, key)) = pems.identity {
        pem.extend(key);
        let identity = reqwest::Identity::from_pem(&pem)
            .context("TOLLGATE_TLS_CLIENT_CERT and TOLLGATE_TLS_CLIENT_KEY")?;
        builder = builder.identity(identity);
    }
    builder.build().context("starting the HTTP client")
}

/// A connection to `api`, made now, within [`CONNECT_TIMEOUT`]; over TLS for an `https://`
/// address, verifying the server against `TOLLGATE_TLS_CA` (else the public web roots) and
/// presenting `TOLLGATE_TLS_CLIENT_CERT` / `TOLLGATE_TLS_CLIENT_KEY` when set.
pub async fn channel(api: &Api) -> anyhow::Result<Channel> {
    let endpoint = client_tls()?
        .endpoint(&url(&api.addr))
        .map_err(|e| anyhow!("the {} address {:?}: {e}", api.name, api.addr))?
        .connect_timeout(CONNECT_TIMEOUT);
    match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(api.unreachable(&causes(&e))),
        Err(_) => Err(api.unreachable("no answer within 5 s")),
    }
}

/// An error and its causes on one line, without repeats.
pub fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The canonical name of a gRPC status code (`INVALID_ARGUMENT`, …).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(token_given: bool) -> Api {
        Api {
            name: "admin API",
            addr: "127.0.0.1:50051".into(),
            hint: "is tollgate running?",
            token_given,
        }
    }

    #[test]
    fn statuses_read_as_one_line() {
        assert_eq!(
            api(true)
                .failed(
                    "setting the budget",
                    &Status::invalid_argument("period: unknown \"yearly\"")
                )
                .to_string(),
            "setting the budget: period: unknown \"yearly\" (INVALID_ARGUMENT)"
        );
        assert_eq!(
            api(false)
                .failed("listing teams", &Status::unauthenticated("missing"))
                .to_string(),
            "not authorised: no token given; set --token or TOLLGATE_ADMIN_TOKEN (UNAUTHENTICATED)"
        );
        assert!(
            api(true)
                .failed("listing teams", &Status::unauthenticated("unknown token"))
                .to_string()
                .starts_with("not authorised: unknown token;")
        );
    }

    #[test]
    fn addresses_become_urls() {
        assert_eq!(url("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(url("https://cp.example.com"), "https://cp.example.com");
    }
}
