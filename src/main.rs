//! The command line: `sluice [-c FILE] serve | check-config | scan | ...`.
//! Parse, validate, build, run, map errors to exit codes; nothing else.
//!
//! The configuration is found as Postfix admins expect: `-c/--config`
//! anywhere on the line, else `SLUICE_CONFIG`, else
//! `/etc/sluice/sluice.toml` when it exists, else the built-in defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::bans::BansCmd;
use cli::quarantine::QuarantineCmd;
use cli::queue::QueueCmd;
use sluice::config::Config;
use sluice::shutdown::{Signal, Signals};

mod cli;

/// EX_USAGE from sysexits.h: bad configuration.
const EX_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "sluice", version, about = "High-throughput SMTP relay and content filter")]
struct Cli {
    /// The configuration file (also SLUICE_CONFIG; default
    /// /etc/sluice/sluice.toml when it exists, else the built-in defaults).
    #[arg(short, long, env = "SLUICE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

/// Where the configuration is read from when neither `--config` nor
/// `SLUICE_CONFIG` names it.
const DEFAULT_CONFIG: &str = "/etc/sluice/sluice.toml";

/// `--config`/`SLUICE_CONFIG`, else the default file if it exists.
fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.is_file()))
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the relay.
    Serve,
    /// Validate a configuration file and every file it names, and exit
    /// (0 = valid, 64 = invalid). FILE defaults to the configuration the
    /// other commands use.
    CheckConfig { file: Option<PathBuf> },
    /// Run the content pipeline (virus scan, banned parts, spam score) on
    /// messages and print the verdict and every contribution. FILE may be a
    /// directory (its files) or - (stdin). Exit 0 = all delivered as they
    /// are, 1 = something tagged, held or refused, 75 = a scan failed.
    Scan {
        /// One JSON object per message.
        #[arg(long)]
        json: bool,
        /// No network checks (SPF, DKIM, DMARC).
        #[arg(long)]
        offline: bool,
        /// Use this classifier model instead of spam.bayes_model.
        #[arg(long)]
        bayes_model: Option<PathBuf>,
        /// Apply the thresholds of this recipient's domain.
        #[arg(long)]
        rcpt: Option<String>,
        /// The client address for SPF (default: from the top Received header).
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// The HELO name for SPF (default: from the top Received header).
        #[arg(long)]
        helo: Option<String>,
        /// The MAIL FROM address for SPF (default: the Return-Path).
        #[arg(long)]
        mail_from: Option<String>,
        files: Vec<PathBuf>,
    },
    /// Trains the statistical spam classifier on directories of messages
    /// (one file per message) and writes the model file.
    Learn {
        /// Directories of spam.
        #[arg(long, required = true)]
        spam: Vec<PathBuf>,
        /// Directories of ham (wanted mail).
        #[arg(long, required = true)]
        ham: Vec<PathBuf>,
        /// The model file to write.
        #[arg(short, long, default_value = "sluice-bayes.model")]
        out: PathBuf,
        /// Tokens seen fewer times in total are left out of the file.
        #[arg(long, default_value_t = 2)]
        min_count: u32,
        /// Instead of writing a model: measure the whole score (the
        /// configured rules + a classifier trained on the other folds) by
        /// K-fold cross-validation and print recall, false positives and
        /// the curve.
        #[arg(long, value_name = "K")]
        cross_validate: Option<usize>,
    },
    /// The firewall's bans, from the running daemon (its control socket).
    Bans {
        #[command(subcommand)]
        action: BansCmd,
    },
    /// Nagios-style check of the running daemon (its metrics listener):
    /// one status line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL
    /// (not ready: spool, next hop or scanners), 3 UNKNOWN (not answering).
    Check {
        /// The metrics listener (default: metrics.listen of the config).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// Spool messages for WARNING / CRITICAL.
        #[arg(long, default_value_t = 1000)]
        warn_queue: u64,
        #[arg(long, default_value_t = 10000)]
        crit_queue: u64,
        /// Age of the oldest message to deliver for WARNING / CRITICAL.
        #[arg(long, default_value = "1h")]
        warn_age: String,
        #[arg(long, default_value = "4h")]
        crit_age: String,
        /// How long to wait for each answer.
        #[arg(long, default_value = "10s")]
        timeout: String,
    },
    /// The running daemon's queue: list, show, flush, hold, release, delete, bounce
    /// (as postqueue/postsuper).
    Queue {
        #[command(subcommand)]
        action: QueueCmd,
    },
    /// Messages refused after acceptance (virus found by a deferred scan).
    Quarantine {
        #[command(subcommand)]
        action: QuarantineCmd,
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

/// [`load`], and every file the configuration names (TLS certificate,
/// recipient table, CA files, spam rules and model) loaded by
/// `app::preflight`: a file that would fail at start fails here (exit 64).
fn load_checked(path: Option<&PathBuf>) -> Result<(Config, sluice::app::Preflight), ExitCode> {
    let config = load(path)?;
    match sluice::app::preflight(&config) {
        Ok(pre) => Ok((config, pre)),
        Err(e) => {
            eprintln!("sluice: configuration error: {e}");
            Err(ExitCode::from(EX_CONFIG))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = config_path(cli.config);
    match cli.command {
        Cmd::CheckConfig { file } => match file.or(config) {
            Some(file) => match load_checked(Some(&file)) {
                Ok(_) => {
                    println!("{}: OK", file.display());
                    ExitCode::SUCCESS
                }
                Err(code) => code,
            },
            None => {
                eprintln!(
                    "sluice: no configuration file: give one, --config, SLUICE_CONFIG, or create {DEFAULT_CONFIG}"
                );
                ExitCode::from(EX_CONFIG)
            }
        },
        Cmd::Scan {
            json,
            offline,
            bayes_model,
            rcpt,
            ip,
            helo,
            mail_from,
            files,
        } => {
            let opts = sluice::scan_cli::ScanOptions {
                json,
                rcpt_domain: rcpt.map(|r| r.rsplit('@').next().unwrap_or_default().to_string()),
                ip,
                helo,
                mail_from,
                offline,
            };
            scan(config.as_ref(), bayes_model, &files, &opts)
        }
        Cmd::Learn {
            cross_validate: Some(k),
            spam,
            ham,
            ..
        } => match load(config.as_ref()) {
            Ok(config) => done(cli::learn::cross_validate(&config, &spam, &ham, k).map(|report| print!("{report}"))),
            Err(code) => code,
        },
        Cmd::Learn {
            spam,
            ham,
            out,
            min_count,
            ..
        } => done(cli::learn::learn(&spam, &ham, &out, min_count)),
        Cmd::Check {
            addr,
            warn_queue,
            crit_queue,
            warn_age,
            crit_age,
            timeout,
        } => cli::check::check(
            config.as_ref(),
            addr,
            (warn_queue, crit_queue),
            (&warn_age, &crit_age),
            &timeout,
        ),
        Cmd::Bans { action } => with_config(config.as_ref(), |c| async move { cli::bans::bans(&c, action).await }),
        Cmd::Queue { action } => with_config(config.as_ref(), |c| async move { cli::queue::queue(&c, action).await }),
        Cmd::Quarantine { action } => with_config(config.as_ref(), |c| async move {
            cli::quarantine::quarantine(&c, action)
                .await
                .map_err(anyhow::Error::from)
        }),
        Cmd::Serve => run_server(config.as_ref()),
    }
}

/// Success, or the error printed and exit 1.
fn done(res: anyhow::Result<()>) -> ExitCode {
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `sluice scan`: the content pipeline on files.
fn scan(
    config: Option<&PathBuf>,
    bayes_model: Option<PathBuf>,
    files: &[PathBuf],
    opts: &sluice::scan_cli::ScanOptions,
) -> ExitCode {
    let (mut config, rt) = match load(config).and_then(|c| Ok((c, runtime()?))) {
        Ok(v) => v,
        Err(code) => return code,
    };
    if let (Some(m), Some(spam)) = (bayes_model, config.spam.as_mut()) {
        spam.bayes_model = Some(m);
    }
    let code = rt.block_on(async {
        let metrics = std::sync::Arc::new(sluice::metrics::Metrics::disabled());
        let (filter, _) = sluice::scan::ContentFilter::from_config(&config, metrics);
        let spam = match sluice::app::spam_filter(&config, opts.offline, None) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sluice: {e:#}");
                return EX_CONFIG;
            }
        };
        sluice::scan_cli::run(&filter, spam.as_deref(), files, opts).await
    });
    ExitCode::from(code)
}

/// `sluice serve`: every file loaded first (exit 64 when one fails), then
/// serve until SIGTERM/SIGINT.
fn run_server(config: Option<&PathBuf>) -> ExitCode {
    let (config, pre) = match load_checked(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    sluice::logging::init(&config.log);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(serve(config, pre)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration, runs `f` on a runtime, and turns its result
/// into the exit code (errors printed).
fn with_config<F, Fut>(path: Option<&PathBuf>, f: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let (config, rt) = match load(path).and_then(|c| Ok((c, runtime()?))) {
        Ok(v) => v,
        Err(code) => return code,
    };
    match rt.block_on(f(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("sluice: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

async fn serve(config: Config, pre: sluice::app::Preflight) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let running = sluice::app::start_with(config, pre).await?;
    while signals.next().await == Signal::Reload {
        running.reload();
    }
    running.shutdown().await;
    Ok(())
}
