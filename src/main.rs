//! `sluice serve [--config FILE]` and `sluice check-config FILE`.
//! Parse, validate, build, run, map errors to exit codes; nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::Config;
use sluice::shutdown::{Signal, Signals};

/// EX_USAGE from sysexits.h: bad configuration.
const EX_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "sluice", version, about = "High-throughput SMTP relay and content filter")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay (without --config: built-in defaults, see README).
    Serve {
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and exit (0 = valid, 64 = invalid).
    CheckConfig { file: PathBuf },
    /// Scan files (messages or attachments) with the configured scanners and
    /// print a verdict per file. Exit 0 = all clean, 1 = something found,
    /// 75 = a file could not be scanned.
    Scan {
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let res = match path {
        Some(p) => Config::load(p),
        None => Config::default_config(),
    };
    res.map_err(|e| {
        eprintln!("sluice: configuration error: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::CheckConfig { file } => match load(Some(&file)) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Cmd::Scan { config, files } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let Some(clamd) = config.clamd.clone() else {
                eprintln!("sluice: configuration error: clamd.endpoints: no scanner configured");
                return ExitCode::from(EX_CONFIG);
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sluice: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            ExitCode::from(rt.block_on(sluice::scan::scan_files(clamd, &files)))
        }
        Cmd::Serve { config } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            sluice::logging::init(&config.log);
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sluice: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("sluice: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let running = sluice::app::start(config).await?;
    while signals.next().await == Signal::Reload {
        running.reload();
    }
    running.shutdown().await;
    Ok(())
}
