//! `konnector`: connects remote API services to local APIs.

use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use konnector::cli::Cli;
use konnector::{app, logging};

/// The static (musl) build's allocator: musl's own is slow under many threads (see Cargo.toml).
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
    let cli = match Cli::try_parse_normalized(args) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        // Flag errors exit 1 like the reference (cobra), not clap's 2.
        Err(e) => {
            eprint!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.version {
        println!("konnector version {}", app::version());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = logging::init(cli.logging_format, cli.verbosity) {
        eprintln!("Error: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(app::run(cli));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `{}` and not `{:#}`: the top-level message is the exact reference text.
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
