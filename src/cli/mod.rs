//! `tollgate admin …` and `tollgate usage …`: the command line over the admin API (control
//! plane) and the usage API (aggregator). Results print as aligned tables or as JSON
//! (`--output json`); failures end the command with one readable line and a non-zero exit.

mod admin;
mod connect;
mod output;
mod parse;
mod reply;
mod tree;
mod usage;

use clap::Args;
use tollgate_proto::admin::admin_service_client::AdminServiceClient;

use connect::{Api, Bearer};
use output::Format;
use reply::Out;

/// The help heading of the flags every subcommand takes.
const HEADING: &str = "Connection and output";

/// Flags shared by `tollgate admin` and `tollgate usage`.
#[derive(Args)]
#[command(next_help_heading = HEADING)]
struct Common {
    /// The bearer token [default: the file $TOLLGATE_DATA_DIR/admin-token, which `tollgate up`
    /// writes].
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// How to print results: table or json.
    // The id is "format" so that `prices set` can keep --output for a price (see there).
    #[arg(
        long = "output",
        short = 'o',
        id = "format",
        alias = "format",
        value_name = "FORMAT",
        global = true,
        value_enum,
        default_value_t = Format::Table
    )]
    format: Format,
}

impl Common {
    /// Where results of calls to the API at `addr` go (`name` and `hint` for its messages),
    /// and the token to send it.
    fn out(
        self,
        name: &'static str,
        addr: String,
        hint: &'static str,
    ) -> anyhow::Result<(Out, Option<String>)> {
        let token = connect::token(self.token)?;
        let api = Api {
            name,
            addr,
            hint,
            token_given: token.is_some(),
        };
        let out = Out {
            api,
            format: self.format,
        };
        Ok((out, token))
    }
}

/// Arguments of `tollgate admin`.
#[derive(Args)]
#[command(next_help_heading = HEADING)]
pub struct AdminArgs {
    /// The admin API (control plane): host:port, http://host:port or https://host:port (over
    /// TLS, verified against TOLLGATE_TLS_CA).
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_ADMIN_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    addr: String,
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: admin::AdminCommand,
}

/// Arguments of `tollgate usage`.
#[derive(Args)]
#[command(next_help_heading = HEADING)]
pub struct UsageArgs {
    /// The usage API (aggregator, gRPC): host:port, http://host:port or https://host:port.
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_USAGE_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    addr: String,
    /// The aggregator's HTTP address, for `export` (https://host:port over TLS).
    #[arg(
        long,
        global = true,
        env = "TOLLGATE_USAGE_HTTP_ADDR",
        default_value = "127.0.0.1:4001"
    )]
    http_addr: String,
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: usage::UsageCommand,
}

/// Runs `tollgate admin …`.
pub async fn admin(args: AdminArgs) -> anyhow::Result<()> {
    let (out, token) = args
        .common
        .out("admin API", args.addr, "is tollgate running?")?;
    let channel = connect::channel(&out.api).await?;
    let mut client = AdminServiceClient::with_interceptor(channel, Bearer::new(token.as_deref())?);
    args.command.run(&mut client, &out).await
}

/// Runs `tollgate usage …`.
pub async fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let (out, token) = args.common.out("usage API", args.addr, usage::HINT)?;
    let target = usage::Target {
        api: out.api.clone(),
        http_addr: args.http_addr,
        token,
    };
    args.command.run(target, out).await
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser, Subcommand};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        role: Role,
    }

    #[derive(Subcommand)]
    enum Role {
        Admin(AdminArgs),
        Usage(UsageArgs),
    }

    fn admin(args: &[&str]) -> Result<AdminArgs, clap::Error> {
        let cli = Cli::try_parse_from(["tollgate", "admin"].iter().chain(args))?;
        match cli.role {
            Role::Admin(args) => Ok(args),
            Role::Usage(_) => unreachable!(),
        }
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn output_is_global_except_where_it_is_a_price() -> Result<(), clap::Error> {
        assert_eq!(admin(&["teams", "list"])?.common.format, Format::Table);
        assert_eq!(
            admin(&["--output", "json", "teams", "list"])?.common.format,
            Format::Json
        );
        assert_eq!(
            admin(&["teams", "list", "--output", "json"])?.common.format,
            Format::Json
        );
        let set = [
            "prices", "set", "--model", "m", "--input", "1", "--output", "2",
        ];
        assert_eq!(admin(&set)?.common.format, Format::Table);
        let mut json = vec!["--output", "json"];
        json.extend(set);
        assert_eq!(admin(&json)?.common.format, Format::Json);
        let mut format = set.to_vec();
        format.extend(["--format", "json"]);
        assert_eq!(admin(&format)?.common.format, Format::Json);
        Ok(())
    }
}
