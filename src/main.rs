//! The `herald` command line: parses arguments, loads configuration and calls
//! the library. Exit status 2 means bad usage or configuration, 1 a failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald::config::{ConfigError, Settings};

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Background jobs and live notifications for Django + Channels"
)]
struct Cli {
    /// Configuration file (TOML), layered over the built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations (a no-op when up to date).
    Migrate,
    /// Print an access token in djangorestframework-simplejwt's format.
    Token {
        /// The user the token is for.
        #[arg(long)]
        user_id: i64,
        /// Lifetime, such as 5m or 1h (default: tokens.access_ttl).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// Serve the notifications WebSocket (`/ws/notifications/`) until
    /// Ctrl-C or SIGTERM; needs a shared (Redis) channel layer.
    Sidecar,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    herald::telemetry::init();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => return config_failure(&error),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return failure(&error.into()),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Migrate => herald::commands::migrate(&settings).await,
            Command::Token { user_id, ttl } => herald::commands::token(&settings, user_id, ttl),
            Command::Sidecar => herald::sidecar::run(&settings, herald::shutdown::signal())
                .await
                .map(|()| String::new()),
        }
    });
    match result {
        Ok(output) => {
            if !output.is_empty() {
                println!("{output}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => match error.downcast_ref::<ConfigError>() {
            Some(config) => config_failure(config),
            None => failure(&error),
        },
    }
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("herald: {error}");
    ExitCode::from(2)
}

fn failure(error: &anyhow::Error) -> ExitCode {
    eprintln!("herald: {error:#}");
    ExitCode::FAILURE
}
