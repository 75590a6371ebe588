//! The operator's commands, as `amtool` is Alertmanager's: `incidents` and `token list|revoke`
//! talk to a running server over its HTTP API ([`client`]), `config check|show` read the
//! configuration as `serve` would ([`configuration`]), and the hidden `completions` and `man`
//! print what the package ships ([`manual`]). Only the binary uses them; the library knows
//! nothing of them.

pub mod client;
pub mod configuration;
pub mod incidents;
pub mod manual;
mod table;
pub mod tokens;

/// How a command prints what it read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Columns for people.
    #[default]
    Table,
    /// The API's JSON, for scripts.
    Json,
}
