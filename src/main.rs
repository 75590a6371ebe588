//! The `klaxon` command: thin, it parses arguments and calls into the library, or into [`cli`]
//! for the commands that talk to a running server.

mod cli;

use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use cli::client::{Remote, RemoteError};
use cli::incidents::IncidentsCommand;
use cli::Output;
use klaxon::api::tokens::{self, IssueError};
use klaxon::config::{self, Config, ConfigError, Origin};
use klaxon::domain::token::token_name;
use klaxon::domain::{Role, Timestamp, Token, TokenSecret, User, UserFields};
use klaxon::server::{self, Roles};
use klaxon::store::StoreError;
use klaxon::telemetry::{self, LogFormat};
use uuid::Uuid;

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

/// Exit code for a bad configuration (SPEC §5), and for input a command refuses (as clap exits
/// for bad arguments), the server's refusals (4xx) included.
const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code for any other failure to run: a server that cannot be reached, or answers 5xx.
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
        /// Listen on ADDR (such as 127.0.0.1:3000), whatever the file or KLAXON_LISTEN say.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Apply migrations and run the escalation worker alone (no HTTP API). Any number of workers
    /// may share one PostgreSQL database.
    Worker,
    /// Apply database migrations and exit.
    Migrate,
    /// See and act on the incidents of a running server.
    Incidents {
        #[command(flatten)]
        remote: Remote,
        /// How to print what the server answered.
        #[arg(long, global = true, value_enum, default_value_t)]
        output: Output,
        #[command(subcommand)]
        command: IncidentsCommand,
    },
    /// Manage API tokens: `create` writes to the database, `list` and `revoke` ask a running
    /// server.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Check or print the configuration `serve` would run with.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print the completion script of a shell (for packages).
    #[command(hide = true)]
    Completions { shell: clap_complete::Shell },
    /// Print the man page, in roff (for packages).
    #[command(hide = true)]
    Man,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the file, the environment and `.env` as `serve` would; exit 2 listing every
    /// problem.
    Check,
    /// Print the effective configuration as TOML, secrets masked.
    Show,
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
    /// List every token of a running server, revoked ones included, without secrets (admin).
    List {
        #[command(flatten)]
        remote: Remote,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke a token on a running server: it stops working at once (admin).
    Revoke {
        id: Uuid,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user and print it as JSON.
    Create {
        /// Unique and never changed: 1 to 64 lowercase letters, digits, `.`, `_` or `-`.
        #[arg(long)]
        handle: String,
        /// The full name, as people read it.
        #[arg(long)]
        name: String,
        /// Where email notifications go.
        #[arg(long)]
        email: String,
        /// E.164, such as +14155550100.
        #[arg(long)]
        phone: Option<String>,
        /// responder if not given.
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// An IANA time zone name; UTC if not given.
        #[arg(long)]
        time_zone: Option<String>,
    },
    /// Create a token that acts for a user, with the user's role, and print its secret (shown
    /// this once).
    Token {
        #[arg(long)]
        handle: String,
        /// What the token is for: 1 to 100 characters.
        #[arg(long, value_parser = parse_token_name)]
        name: String,
    },
}

/// Input a command refuses once it has looked at it (an invalid user, a taken handle): exits with
/// [`EXIT_BAD_CONFIG`], like a bad argument.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

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
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("klaxon: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(run(cli.command, cli.config.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("klaxon: {error}");
            let refused = error.is::<Refused>()
                || error.is::<ConfigError>()
                || error
                    .downcast_ref::<RemoteError>()
                    .is_some_and(RemoteError::is_refusal);
            ExitCode::from(if refused {
                EXIT_BAD_CONFIG
            } else {
                EXIT_FAILURE
            })
        }
    }
}

/// Says what is wrong with the configuration and exits with [`EXIT_BAD_CONFIG`].
fn bad_config(error: ConfigError) -> ExitCode {
    eprintln!("klaxon: {error}");
    ExitCode::from(EXIT_BAD_CONFIG)
}

async fn run(command: Command, config_file: Option<&Path>) -> Result<(), Box<dyn Error>> {
    // Loaded by each command that needs it: those that ask a server read it only for its
    // address, when no URL is given, so a broken file on an operator's laptop does not stop them.
    let load = || Config::load(config_file);
    match command {
        Command::Serve { no_worker, listen } => {
            let mut config = load()?;
            if let Some(addr) = listen {
                config.listen_on(addr, Origin::Flag("--listen"));
            }
            let roles = Roles {
                api: true,
                worker: !no_worker,
            };
            let running = server::start_with(&config, roles).await?;
            let shutdown = server::shutdown_signal();
            server::reload_on_hangup(running.reloadable.clone(), reload_from(config_file));
            if let Some(secret) = &running.generated_admin_token {
                server::show_generated_admin_token(secret);
            }
            if let Some(addr) = running.api_addr {
                println!("Klaxon is listening on http://{addr}");
            }
            running.run_until(shutdown).await?;
        }
        Command::Worker => {
            let config = load()?;
            let roles = Roles {
                api: false,
                worker: true,
            };
            let running = server::start_with(&config, roles).await?;
            let shutdown = server::shutdown_signal();
            server::reload_on_hangup(running.reloadable.clone(), reload_from(config_file));
            println!("Klaxon worker running");
            running.run_until(shutdown).await?;
        }
        Command::Migrate => {
            server::open_store(&load()?).await?;
            println!("migrations applied");
        }
        Command::Token {
            command: TokenCommand::Create { name, role },
        } => {
            let store = server::open_store(&load()?).await?;
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
        Command::User {
            command:
                UserCommand::Create {
                    handle,
                    name,
                    email,
                    phone,
                    role,
                    time_zone,
                },
        } => {
            let fields = UserFields {
                handle,
                name,
                email,
                phone,
                role,
                time_zone,
            };
            let user = create_user(&load()?, fields).await?;
            println!("{}", serde_json::to_string(&user)?);
        }
        Command::User {
            command: UserCommand::Token { handle, name },
        } => {
            let (user, token, secret) = issue_user_token(&load()?, &handle, &name).await?;
            println!(
                "created token `{}` ({}) for user `{}`, with the {} role",
                token.name,
                token.id,
                user.handle,
                token.role.as_str()
            );
            println!("{}", secret.expose());
        }
        Command::Token {
            command: TokenCommand::List { remote, output },
        } => cli::tokens::list(&remote.client(config_file)?, output).await?,
        Command::Token {
            command: TokenCommand::Revoke { id, remote },
        } => cli::tokens::revoke(&remote.client(config_file)?, id).await?,
        Command::Incidents {
            remote,
            output,
            command,
        } => cli::incidents::run(&remote.client(config_file)?, output, command).await?,
        Command::Config { command } => {
            let config = cli::configuration::check(config_file)?;
            match command {
                ConfigCommand::Check => {
                    print!("{}", cli::configuration::summary(&config, config_file))
                }
                ConfigCommand::Show => print!("{}", cli::configuration::show(&config)?),
            }
        }
        Command::Completions { shell } => {
            cli::manual::completions(shell, Cli::command(), &mut std::io::stdout())
        }
        Command::Man => cli::manual::man_page(Cli::command(), &mut std::io::stdout())?,
    }
    Ok(())
}

/// What SIGHUP reloads: the same file, through the same loader as start-up.
fn reload_from(config_file: Option<&Path>) -> impl Fn() -> Result<Config, ConfigError> + Send {
    let config_file = config_file.map(Path::to_owned);
    move || Config::load(config_file.as_deref())
}

/// Registers a user; invalid fields and a taken handle are [`Refused`]. The fields are checked
/// before anything is opened, so invalid input touches no database.
async fn create_user(config: &Config, fields: UserFields) -> Result<User, Box<dyn Error>> {
    let user = User::new(fields, Timestamp::now())
        .map_err(|invalid| Refused(format!("invalid user: {invalid}")))?;
    let store = server::open_store(config).await?;
    store.create_user(&user).await.map_err(|error| match error {
        StoreError::Duplicate(message) => Refused(format!("{message}: `{}`", user.handle)).into(),
        other => other.into(),
    })
}

/// Issues a token that acts for the user `handle`; an unknown or deactivated user is [`Refused`].
async fn issue_user_token(
    config: &Config,
    handle: &str,
    name: &str,
) -> Result<(User, Token, TokenSecret), Box<dyn Error>> {
    let store = server::open_store(config).await?;
    let user = store
        .users()
        .await?
        .into_iter()
        .find(|user| user.handle == handle)
        .ok_or_else(|| Refused(format!("no user has the handle `{handle}`")))?;
    let (token, secret) =
        tokens::issue_for_user(store.as_ref(), &user, name, TokenSecret::generate())
            .await
            .map_err(|error| -> Box<dyn Error> {
                match error {
                    IssueError::Deactivated(_) => Refused(error.to_string()).into(),
                    other => other.into(),
                }
            })?;
    Ok((user, token, secret))
}
