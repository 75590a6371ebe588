//! The `klaxon` command: thin, it parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use klaxon::api::tokens;
use klaxon::config::{self, Config, ConfigError};
use klaxon::domain::token::token_name;
use klaxon::domain::{Role, TokenSecret};
use klaxon::server::{self, Roles};
use klaxon::telemetry::{self, LogFormat};

/// jemalloc, not glibc's malloc: after a burst of connections glibc keeps the freed buffers in
/// its arenas (RSS 114 MB, against 11 MB idle, even with `MALLOC_ARENA_MAX=2`), where jemalloc hands
/// them back within seconds (docs/PERFORMANCE.md, "Memory after a burst").
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start: a background thread returns pages freed more than
/// a second ago, so memory comes back while the server is idle, not only on its next allocation.
#[cfg(unix)]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// Exit code for a bad configuration (SPEC §5).
const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code for any other failure to run.
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "klaxon",
    version,
    about = "Incident management and escalation engine"
)]
struct Cli {
    /// TOML configuration file; defaults apply without one.
    #[arg(long, global = true, env = "KLAXON_CONFIG")]
    config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, serve the HTTP API and run the escalation worker.
    Serve {
        /// Serve the API only; escalations are left to `klaxon worker` processes.
        #[arg(long)]
        no_worker: bool,
    },
    /// Apply migrations and run the escalation worker alone (no HTTP API). Any number of workers
    /// may share one PostgreSQL database.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token and print its secret (shown this once).
    Create {
        /// Shown as the actor of everything done with the token: 1 to 100 characters.
        #[arg(long, value_parser = parse_token_name)]
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
}

/// Checked before anything is opened, so a bad name touches no database.
fn parse_token_name(text: &str) -> Result<String, String> {
    token_name(text)
        .map(str::to_owned)
        .map_err(|invalid| format!("invalid token name: {invalid}"))
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| "expected admin, responder or viewer".to_owned())
}

fn main() -> ExitCode {
    // `.env` first: it may set what the command line (`KLAXON_CONFIG`) and the logs (`RUST_LOG`)
    // read.
    if let Err(error) = config::load_dotenv() {
        return bad_config(error);
    }
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => return bad_config(error),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("klaxon: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("klaxon: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Says what is wrong with the configuration and exits with [`EXIT_BAD_CONFIG`].
fn bad_config(error: ConfigError) -> ExitCode {
    eprintln!("klaxon: {error}");
    ExitCode::from(EXIT_BAD_CONFIG)
}

async fn run(command: Command, config: Config) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Serve { no_worker } => {
            let roles = Roles {
                api: true,
                worker: !no_worker,
            };
            let running = server::start_with(&config, roles).await?;
            let shutdown = server::shutdown_signal();
            if let Some(secret) = &running.generated_admin_token {
                server::show_generated_admin_token(secret);
            }
            if let Some(addr) = running.api_addr {
                println!("Klaxon is listening on http://{addr}");
            }
            running.run_until(shutdown).await?;
        }
        Command::Worker => {
            let roles = Roles {
                api: false,
                worker: true,
            };
            let running = server::start_with(&config, roles).await?;
            let shutdown = server::shutdown_signal();
            println!("Klaxon worker running");
            running.run_until(shutdown).await?;
        }
        Command::Migrate => {
            server::open_store(&config).await?;
            println!("migrations applied");
        }
        Command::Token {
            command: TokenCommand::Create { name, role },
        } => {
            let store = server::open_store(&config).await?;
            let secret = TokenSecret::generate();
            let (token, secret) = tokens::issue(store.as_ref(), &name, role, secret).await?;
            println!(
                "created {} token `{}` ({})",
                token.role.as_str(),
                token.name,
                token.id
            );
            println!("{}", secret.expose());
        }
    }
    Ok(())
}
