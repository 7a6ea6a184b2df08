use std::process::ExitCode;

use clap::Parser;
use egressd::cli::{Cli, Command};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run {
            config,
            shards,
            cpus,
            log_level,
        } => egressd::runtime::run::run(egressd::runtime::run::RunArgs {
            config,
            shards,
            cpus: cpus.map(|c| c.0),
            log_level,
        }),
        Command::Validate { config } => egressd::commands::validate(&config),
        Command::CheckSystem { config, shards } => egressd::commands::check_system(&config, shards),
        Command::Certs { out } => egressd::commands::certs(&out),
    };
    ExitCode::from(code)
}
