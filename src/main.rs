//! `sluice serve [--config FILE]` and `sluice check-config FILE`.
//! Parse, validate, build, run, map errors to exit codes; nothing else.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::config::Config;
use sluice::quarantine::{Quarantine, QuarantineError};
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
    },
    /// Messages refused after acceptance (virus found by a deferred scan).
    Quarantine {
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: QuarantineCmd,
    },
}

#[derive(Subcommand)]
enum QuarantineCmd {
    /// One line per message: id, time, reason, sender, recipients.
    List,
    /// The envelope, the reason and the message.
    Show { id: String },
    /// Delivers the message to the next hop, then removes it.
    Release { id: String },
    /// Removes the message.
    Delete { id: String },
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
            let (config, rt) = match load(config.as_ref()).and_then(|c| Ok((c, runtime()?))) {
                Ok(v) => v,
                Err(code) => return code,
            };
            let code = rt.block_on(async {
                let (filter, _) = sluice::scan::ContentFilter::from_config(&config);
                sluice::scan::scan_files(&filter, &files).await
            });
            ExitCode::from(code)
        }
        Cmd::Learn {
            spam,
            ham,
            out,
            min_count,
        } => match learn(&spam, &ham, &out, min_count) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Quarantine { config, action } => {
            let (config, rt) = match load(config.as_ref()).and_then(|c| Ok((c, runtime()?))) {
                Ok(v) => v,
                Err(code) => return code,
            };
            match rt.block_on(quarantine(&config, action)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sluice: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Serve { config } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            sluice::logging::init(&config.log);
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
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

fn learn(spam: &[PathBuf], ham: &[PathBuf], out: &std::path::Path, min_count: u32) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let model = sluice::spam::learn_dirs(spam, ham).context("reading the training mail")?;
    let tmp = out.with_extension("tmp");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?);
    model.save(&mut w, min_count)?;
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, out).with_context(|| format!("{}", out.display()))?;
    println!(
        "{}: {} spam, {} ham, {} tokens",
        out.display(),
        model.nspam(),
        model.nham(),
        model.len()
    );
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("sluice: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

async fn quarantine(config: &Config, action: QuarantineCmd) -> Result<(), QuarantineError> {
    let q = Quarantine::new(&config.scan.quarantine_dir);
    match action {
        QuarantineCmd::List => {
            for e in q.list()? {
                let rcpts: Vec<String> = e.envelope.rcpts.iter().map(|r| r.addr.to_string()).collect();
                println!(
                    "{}\t{}\t{}\t<{}>\t{}",
                    e.id,
                    sluice::smtp::date::rfc5322_date(e.quarantined_at),
                    e.reason,
                    e.envelope.sender_display(),
                    rcpts.join(",")
                );
            }
        }
        QuarantineCmd::Show { id } => {
            let e = q.entry(&id)?;
            println!(
                "Id: {}\nReason: {}\nClient: {} ({})",
                e.id, e.reason, e.envelope.client_ip, e.envelope.helo
            );
            println!("Sender: <{}>", e.envelope.sender_display());
            for r in &e.envelope.rcpts {
                println!("Recipient: <{}>", r.addr);
            }
            println!();
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(&q.body(&id)?);
        }
        QuarantineCmd::Release { id } => {
            let transport = sluice::delivery::NextHopTransport::new(config.relay.clone());
            let e = q.release(&id, &transport).await?;
            println!("{}: released to {}", e.id, config.relay.next_hop);
        }
        QuarantineCmd::Delete { id } => {
            q.delete(&id)?;
            println!("{id}: deleted");
        }
    }
    Ok(())
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
