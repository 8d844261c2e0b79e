//! The `herald` command line: parses arguments, loads configuration and calls
//! the library. Exit status 2 means bad usage or configuration, 1 a failure.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use herald::config::{ConfigError, Settings};
use herald::queue::BatchError;

/// mimalloc instead of glibc's malloc: a batch allocates and frees many
/// small values (JSON, SQL rows, messages) across threads, where glibc spent
/// a tenth of the worker bench's CPU (see docs/benchmarks.md).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Serve the notifications WebSocket (`/ws/notifications/`) and the job
    /// API until Ctrl-C or SIGTERM; needs a shared (Redis) channel layer.
    Sidecar,
    /// Run queued and scheduled jobs until Ctrl-C or SIGTERM; needs a
    /// shared (Redis) channel layer.
    Worker,
    /// Everything in one process: worker, scheduler, sidecar and job API.
    /// With no configuration: embedded SQLite, in-memory layer.
    Run {
        /// Development mode on this machine: the demo page gets tokens from
        /// POST /demo/token and the job API needs no key, for clients on
        /// this machine (only with the embedded store, its generated
        /// secret and a loopback listen address).
        #[arg(long)]
        dev: bool,
    },
    /// Submit a job: KIND and its JSON payload; or many with --file.
    Enqueue {
        /// deadline_reminder, overdue_check, file_attached, status_changed or notify.
        #[arg(required_unless_present = "file")]
        kind: Option<String>,
        /// The payload, as JSON (see jobs/<kind>.example.json).
        #[arg(required_unless_present = "file")]
        payload: Option<String>,
        /// When to run it (RFC 3339, such as 2026-12-01T09:00:00Z); default now.
        #[arg(long)]
        run_at: Option<chrono::DateTime<chrono::Utc>>,
        /// A repeat with the same key is not queued again.
        #[arg(long)]
        dedup_key: Option<String>,
        /// Submit the jobs of a file instead (`-`: standard input), one JSON
        /// object `{kind, payload, run_at?, dedup_key?}` per line; every line
        /// is checked before any job is queued.
        #[arg(long, conflicts_with_all = ["kind", "payload", "run_at", "dedup_key"])]
        file: Option<PathBuf>,
    },
    /// Probe this configuration's listener: `/readyz` on `sidecar.listen`
    /// (the database migrated, the channel layer reachable), or `/healthz`.
    /// Exits 0 or 1 with one line saying why; for container health checks.
    Health {
        /// The worker's listener (`worker.listen`, `/healthz`) instead.
        #[arg(long)]
        worker: bool,
        /// Only whether the process answers (`/healthz`), not whether it is ready.
        #[arg(long)]
        live: bool,
        /// Probe this address instead of the configured one.
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Inspect and retry jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List dead jobs (failed on their last attempt), newest first.
    Failed {
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Queue a dead job again with a fresh set of attempts.
    Retry { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    herald::telemetry::init();
    let mut settings = match herald::startup::load_settings(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => return config_failure(&error),
    };
    if let Command::Run { dev: true } = cli.command
        && let Err(error) = settings.enable_development()
    {
        return config_failure(&error);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return failure(&error.into()),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Migrate => herald::commands::migrate(&settings).await,
            Command::Token { user_id, ttl } => herald::commands::token(&settings, user_id, ttl),
            Command::Sidecar => herald::startup::sidecar(&settings, herald::shutdown::signal())
                .await
                .map(|()| String::new()),
            Command::Worker => herald::startup::worker(&settings, herald::shutdown::signal())
                .await
                .map(|()| String::new()),
            Command::Run { .. } => herald::startup::run(&settings, herald::shutdown::signal())
                .await
                .map(|()| String::new()),
            Command::Enqueue {
                file: Some(file), ..
            } => enqueue_file(&settings, &file).await,
            Command::Enqueue {
                kind,
                payload,
                run_at,
                dedup_key,
                file: None,
            } => {
                let (kind, payload) = (kind.unwrap_or_default(), payload.unwrap_or_default());
                enqueue(&settings, kind, &payload, run_at, dedup_key).await
            }
            Command::Health {
                worker,
                live,
                listen,
                timeout,
            } => health(&settings, worker, live, listen, timeout).await,
            Command::Jobs { command } => match command {
                JobsCommand::Failed { limit } => {
                    herald::commands::jobs_failed(&settings, limit).await
                }
                JobsCommand::Retry { id } => herald::commands::jobs_retry(&settings, &id).await,
            },
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
            None if is_bad_input(&error) => {
                eprintln!("herald: {error:#}");
                ExitCode::from(2)
            }
            None => failure(&error),
        },
    }
}

/// `herald health`: a probe that fails is exit status 1 with its reason; a
/// listen address that is not one is bad input (2).
async fn health(
    settings: &Settings,
    worker: bool,
    live: bool,
    listen: Option<String>,
    timeout: Duration,
) -> anyhow::Result<String> {
    use herald::http::probe::{ProbeError, probe, probe_address};
    let (setting, configured, path) = if worker {
        ("worker.listen", settings.worker.listen.clone(), "/healthz")
    } else if live {
        (
            "sidecar.listen",
            settings.sidecar.listen.clone(),
            "/healthz",
        )
    } else {
        ("sidecar.listen", settings.sidecar.listen.clone(), "/readyz")
    };
    let (setting, value) = match listen {
        Some(listen) => ("--listen", listen),
        None if configured.is_empty() => {
            return Err(
                BadInput(format!("{setting} is empty: this process serves no HTTP")).into(),
            );
        }
        None => (setting, configured),
    };
    let addr = probe_address(setting, &value).map_err(|error| match error {
        ProbeError::BadAddress { .. } => anyhow::Error::new(BadInput(error.to_string())),
        other => other.into(),
    })?;
    Ok(probe(addr, path, timeout).await?)
}

/// Parses the payload argument, then submits.
async fn enqueue(
    settings: &Settings,
    kind: String,
    payload: &str,
    run_at: Option<chrono::DateTime<chrono::Utc>>,
    dedup_key: Option<String>,
) -> anyhow::Result<String> {
    let payload = serde_json::from_str(payload)
        .map_err(|e| anyhow::Error::new(BadInput(format!("payload is not valid JSON: {e}"))))?;
    let submission = herald::queue::Submission {
        kind,
        payload,
        run_at,
        dedup_key,
    };
    herald::commands::enqueue(settings, submission).await
}

/// Reads `herald enqueue --file` (`-`: standard input), then submits.
async fn enqueue_file(settings: &Settings, path: &Path) -> anyhow::Result<String> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    let text = text.map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))?;
    let mut submissions = Vec::new();
    let mut lines = Vec::new(); // the file line of each job
    for (number, line) in text.lines().enumerate().map(|(i, line)| (i + 1, line)) {
        if line.trim().is_empty() {
            continue;
        }
        let submission = serde_json::from_str(line)
            .map_err(|e| BadInput(format!("line {number}: not a job: {e}")))?;
        submissions.push(submission);
        lines.push(number);
    }
    if submissions.is_empty() {
        return Err(BadInput(format!("{}: no jobs in it", path.display())).into());
    }
    herald::commands::enqueue_many(settings, submissions)
        .await
        .map_err(|error| match error.downcast_ref::<BatchError>() {
            // Bad input names its job by file line.
            Some(BatchError { at: Some(i), error }) => {
                BadInput(format!("line {}: {error}", lines[*i])).into()
            }
            _ => error,
        })
}

/// A command-line argument that cannot be used (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadInput(String);

/// Whether `error` is the user's input at fault rather than the system.
fn is_bad_input(error: &anyhow::Error) -> bool {
    use herald::queue::SubmitError;
    error.downcast_ref::<BadInput>().is_some()
        || matches!(
            error.downcast_ref::<SubmitError>(),
            Some(
                SubmitError::Input(_)
                    | SubmitError::DedupKey(_)
                    | SubmitError::NotFound(_)
                    | SubmitError::NotDead { .. }
            )
        )
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("herald: {error}");
    ExitCode::from(2)
}

fn failure(error: &anyhow::Error) -> ExitCode {
    eprintln!("herald: {error:#}");
    ExitCode::FAILURE
}
