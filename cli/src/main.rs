//! weirctl: the Weir command-line client.
//!
//! Offline commands (`validate`, `plan`) need no cluster: they run the same parser,
//! validator and planner the master runs.

mod offline;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

/// weirctl: validate, plan, submit and upgrade Weir streaming apps.
#[derive(Parser, Debug)]
#[command(name = "weirctl", version, about, long_about = None)]
struct Cli {
    /// How results are printed.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// Output format of every command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Readable text.
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check app specs (YAML or JSON) and list every problem with its path.
    ///
    /// Exits 0 when every file is valid, 1 otherwise.
    Validate {
        /// Spec files; `.json` files are read as JSON, anything else as YAML.
        #[arg(required = true)]
        files: Vec<String>,
    },
    /// Show the online-upgrade plan from one version of an app to another, offline.
    ///
    /// Without --placement, instructions are grouped per PE; with it, per worker.
    /// Exits 0 when both specs are valid and upgradable, 1 otherwise.
    Plan {
        /// The running version's spec.
        old: String,
        /// The new version's spec.
        new: String,
        /// A YAML or JSON mapping of PE id to worker id (as `weirctl get` shows).
        #[arg(long)]
        placement: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Validate { files } => offline::validate(files, cli.output),
        Command::Plan {
            old,
            new,
            placement,
        } => offline::plan(old, new, placement.as_deref(), cli.output),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("weirctl: {e:#}");
            ExitCode::from(2)
        }
    }
}
