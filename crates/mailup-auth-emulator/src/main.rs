//! `mailup-auth-emulator`: run the MailUp emulator from the command line.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mailup_auth_emulator::{EmulatorBuilder, EmulatorConfig, RateLimit};

/// A local emulator of MailUp's OAuth 2.0 authorization server and Console API, for tests and
/// demos. Never expose it beyond your machine: it is not a security boundary.
#[derive(Debug, Parser)]
#[command(name = "mailup-auth-emulator", version, about)]
struct Args {
    /// TCP port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080, env = "MAILUP_EMULATOR_PORT")]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1", env = "MAILUP_EMULATOR_HOST")]
    host: IpAddr,
    /// TOML (or .json) file with clients, users, lifetimes and limits.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve the /_emulator admin API (faults, expiry, counters).
    #[arg(long)]
    admin: bool,
    /// Access token lifetime (expires_in), in seconds.
    #[arg(long, value_name = "SECS")]
    access_token_lifetime: Option<u64>,
    /// Authorization code lifetime, in seconds.
    #[arg(long, value_name = "SECS")]
    code_lifetime: Option<u64>,
    /// Per-token API rate limit as REQUESTS/SECONDS, e.g. 5/1.
    #[arg(long, value_name = "N/SECS", value_parser = parse_rate_limit)]
    rate_limit: Option<RateLimit>,
}

fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    let (requests, secs) = text
        .split_once('/')
        .ok_or_else(|| "expected REQUESTS/SECONDS, e.g. 5/1".to_owned())?;
    let requests: u32 = requests.trim().parse().map_err(|e| format!("{e}"))?;
    let secs: u64 = secs.trim().parse().map_err(|e| format!("{e}"))?;
    if requests == 0 || secs == 0 {
        return Err("both numbers must be positive".to_owned());
    }
    Ok(RateLimit {
        requests,
        window: Duration::from_secs(secs),
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => match EmulatorConfig::from_path(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        },
        None => EmulatorConfig::default(),
    };
    if args.admin {
        config.admin_api = true;
    }
    if let Some(secs) = args.access_token_lifetime {
        config.access_token_lifetime = Duration::from_secs(secs);
    }
    if let Some(secs) = args.code_lifetime {
        config.code_lifetime = Duration::from_secs(secs);
    }
    if let Some(limit) = args.rate_limit {
        config.rate_limit = Some(limit);
    }
    let clients = config.clients.clone();
    let users = config.users.clone();
    let emu = match EmulatorBuilder::from_config(config)
        .bind(SocketAddr::new(args.host, args.port))
        .start()
        .await
    {
        Ok(emu) => emu,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if !args.host.is_loopback() {
        eprintln!(
            "warning: listening on {}, which is not a loopback address",
            args.host
        );
    }
    println!("MailUp emulator listening on {}", emu.base_url());
    println!("  LogOn:  {}", emu.logon_url());
    println!("  Token:  {}", emu.token_url());
    println!("  API:    {}", emu.console_api_base());
    if emu.admin_api_enabled() {
        println!("  Admin:  {}", emu.admin_url());
    } else {
        println!("  Admin:  disabled (start with --admin)");
    }
    for client in &clients {
        println!(
            "  client: client_id={} client_secret={} name={:?} redirect prefixes={:?}",
            client.id(),
            client.secret(),
            client.display_name(),
            client.redirect_prefixes()
        );
    }
    for user in &users {
        println!(
            "  user:   username={} password={}",
            user.username(),
            user.password()
        );
    }
    println!("Press Ctrl-C to stop.");
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("error: cannot wait for Ctrl-C: {error}");
    }
    println!("Stopping.");
    emu.shutdown().await;
    ExitCode::SUCCESS
}
