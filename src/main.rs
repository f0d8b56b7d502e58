//! The command line: `sluice [-c FILE] serve | check-config | scan | ...`.
//! Parse, validate, build, run, map errors to exit codes; nothing else.
//!
//! The configuration is found as Postfix admins expect: `-c/--config`
//! anywhere on the line, else `SLUICE_CONFIG`, else
//! `/etc/sluice/sluice.toml` when it exists, else the built-in defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use cli::bans::BansCmd;
use cli::quarantine::QuarantineCmd;
use cli::queue::QueueCmd;
use sluice::config::Config;
use sluice::shutdown::{Signal, Signals};

mod cli;

/// EX_USAGE from sysexits.h: bad configuration.
const EX_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "High-throughput SMTP relay and content filter",
    after_help = "Examples:\n  sluice serve -c /etc/sluice/sluice.toml\n  sluice check-config\n  sluice config --changed\n  sluice queue list\n\n`sluice COMMAND --help` shows each command's options and an example."
)]
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
    ///
    /// Every file the configuration names is loaded first (exit 64 when one
    /// fails), contradictions are logged as warnings, then it serves until
    /// SIGTERM/SIGINT; SIGHUP re-reads the configuration (as `sluice
    /// reload`).
    #[command(after_help = "Example:\n  sluice serve --config /etc/sluice/sluice.toml")]
    Serve,
    /// Run only the Postfix policy server (`[policy_server]`).
    ///
    /// As `serve`, with the same configuration file, but without the SMTP
    /// listeners (`server.listen`): only Postfix's `check_policy_service`
    /// requests are answered, with the same checks, events, metrics and
    /// bans. `[policy_server]` may be left out (it listens on
    /// 127.0.0.1:10023 then).
    #[command(after_help = "Example:\n  sluice policy --config /etc/sluice/sluice.toml\n\n\
        In Postfix's main.cf:\n  smtpd_recipient_restrictions = reject_unauth_destination,\n    \
        check_policy_service { inet:127.0.0.1:10023, timeout=10s, default_action=DUNNO }")]
    Policy,
    /// Run only the milter for Postfix: no SMTP listener of sluice's own.
    ///
    /// The content checks of `serve` (MIME decoding, banned attachments,
    /// clamd, spam rules and classifier, SPF/DKIM/DMARC) for Postfix's
    /// smtpd_milters, on milter.listen (127.0.0.1:8891 when the file has
    /// no [milter]). Verdicts go into Postfix's session: 5xx/4xx replies,
    /// the hold queue, added headers. Signals as with `serve`.
    #[command(
        after_help = "Example:\n  sluice milter --config /etc/sluice/sluice.toml\n  # Postfix main.cf: smtpd_milters = inet:127.0.0.1:8891"
    )]
    Milter,
    /// Make the running daemon re-read and apply its configuration file.
    ///
    /// As SIGHUP does, and says what happened: applied (settings that need
    /// a restart are named and keep their running value) or failed (nothing
    /// changed; the failing key is named, exit 64 when the file does not
    /// validate here, 1 when the daemon refused it). Talks to
    /// <spool.dir>/daemon.sock.
    #[command(after_help = "Example:\n  sluice -c /etc/sluice/sluice.toml reload")]
    Reload,
    /// Validate a configuration file and every file it names.
    ///
    /// Exit 0 = valid, 64 = invalid. Settings that contradict each other
    /// (a spam tag threshold above reject, thresholds for a domain that is
    /// not ours, ...) are printed as warnings on stderr. FILE defaults to
    /// the configuration the other commands use.
    #[command(
        after_help = "Examples:\n  sluice check-config /etc/sluice/sluice.toml\n  sluice check-config --strict    # warnings fail too (exit 64)"
    )]
    CheckConfig {
        /// The file to check (default: --config, SLUICE_CONFIG, then
        /// /etc/sluice/sluice.toml).
        file: Option<PathBuf>,
        /// Warnings are errors: exit 64 when there is one.
        #[arg(long)]
        strict: bool,
    },
    /// Print the effective configuration, defaults filled in (postconf).
    ///
    /// Every key, the defaults filled in, relative paths resolved against
    /// the file's directory; the output is itself a valid configuration
    /// file. With --changed, only what differs from the defaults.
    #[command(
        after_help = "Examples:\n  sluice config                   # everything\n  sluice config --changed         # only what differs from the defaults (postconf -n)\n  sluice config /etc/sluice/sluice.toml > /tmp/effective.toml"
    )]
    Config {
        /// The file to print (default: --config, SLUICE_CONFIG, then
        /// /etc/sluice/sluice.toml, else the built-in defaults).
        file: Option<PathBuf>,
        /// Only the keys whose value differs from the default, as
        /// `section.key = value` lines.
        #[arg(long)]
        changed: bool,
    },
    /// Run the content pipeline on messages and print the verdicts.
    ///
    /// The virus scan, banned parts and the spam score, with every
    /// contribution. FILE may be a
    /// directory (its files) or - (stdin). Exit 0 = all delivered as they
    /// are, 1 = something tagged, held or refused, 75 = a scan failed.
    #[command(
        after_help = "Examples:\n  sluice scan --offline message.eml\n  sluice scan --json --rcpt user@example.org maildir/cur/\n  sluice scan - < message.eml"
    )]
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
        /// Messages (one per file), directories of them, or - (stdin).
        files: Vec<PathBuf>,
    },
    /// Trains the statistical spam classifier and writes the model file.
    ///
    /// Messages come from Maildirs (cur/ and new/), directories of files,
    /// mbox files, or - (one message or an mbox on stdin). When the model
    /// file exists, the messages are added to it (as sa-learn does);
    /// --rebuild starts from nothing, --forget takes messages back out. A
    /// new model needs at least 10 spam and 10 ham.
    #[command(
        after_help = "Examples:\n  sluice learn --rebuild --spam Maildir/.Junk --ham Maildir -o /var/lib/sluice/bayes.model\n  sluice learn --spam - < message.eml              # one more spam (IMAPSieve: moved to Junk)\n  sluice learn --forget --spam - < message.eml     # moved out of Junk: forget it as spam ...\n  sluice learn --ham - < message.eml               # ... and learn it as ham\n  sluice learn --daemon --spam Maildir/.Junk/new   # the running daemon learns and uses it at once\n  sluice learn --spam spam/ --ham ham/ --cross-validate 5"
    )]
    #[command(group = clap::ArgGroup::new("mail").required(true).multiple(true).args(["spam", "ham"]))]
    Learn {
        /// Spam: Maildirs, directories of messages, mbox files, or -.
        #[arg(long)]
        spam: Vec<PathBuf>,
        /// Ham (wanted mail): Maildirs, directories, mbox files, or -.
        #[arg(long)]
        ham: Vec<PathBuf>,
        /// The model file (default: spam.bayes_model of the configuration,
        /// else sluice-bayes.model).
        #[arg(short, long)]
        out: Option<PathBuf>,
        /// Start from nothing instead of adding to the model file.
        #[arg(long)]
        rebuild: bool,
        /// Take the messages back out of the model (they were learned as
        /// --spam or --ham), as `sa-learn --forget`.
        #[arg(long, conflicts_with = "rebuild")]
        forget: bool,
        /// Send the messages to the running daemon (its daemon.sock): it
        /// learns them into spam.bayes_model and scores with the new model
        /// at once.
        #[arg(long, conflicts_with_all = ["rebuild", "out", "cross_validate"])]
        daemon: bool,
        /// Tokens seen fewer times in total are left out of the file (above
        /// 1, adding to the model later is no longer exact).
        #[arg(long, default_value_t = 1)]
        min_count: u32,
        /// Instead of writing a model: measure the whole score (the
        /// configured rules + a classifier trained on the other folds) by
        /// K-fold cross-validation and print recall, false positives and
        /// the curve.
        #[arg(long, value_name = "K")]
        cross_validate: Option<usize>,
    },
    /// The firewall's bans, from the running daemon (its control socket).
    #[command(
        after_help = "Examples:\n  sluice bans list\n  sluice bans add 192.0.2.0/24 --for 7d\n  sluice bans explain 192.0.2.7"
    )]
    Bans {
        #[command(subcommand)]
        action: BansCmd,
    },
    /// Nagios-style check of the running daemon.
    ///
    /// Asks its metrics listener; one status line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL
    /// (not ready: spool, next hop or scanners), 3 UNKNOWN (not answering).
    #[command(
        after_help = "Examples:\n  sluice check\n  sluice check --addr 127.0.0.1:9425 --warn-queue 500 --crit-age 2h"
    )]
    Check {
        /// The metrics listener (default: metrics.listen of the config).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// Spool messages for WARNING / CRITICAL.
        #[arg(long, default_value_t = 1000)]
        warn_queue: u64,
        /// Spool messages for CRITICAL.
        #[arg(long, default_value_t = 10000)]
        crit_queue: u64,
        /// Age of the oldest message to deliver for WARNING / CRITICAL.
        #[arg(long, default_value = "1h")]
        warn_age: String,
        /// Age of the oldest message to deliver for CRITICAL.
        #[arg(long, default_value = "4h")]
        crit_age: String,
        /// How long to wait for each answer.
        #[arg(long, default_value = "10s")]
        timeout: String,
    },
    /// The running daemon's queue: list, show, flush, hold, release, delete, bounce
    /// (as postqueue/postsuper).
    #[command(
        after_help = "Examples:\n  sluice queue list\n  sluice queue flush\n  sluice queue hold 6620246496C3E3EB"
    )]
    Queue {
        #[command(subcommand)]
        action: QueueCmd,
    },
    /// Every decision about a message, a client or an address, in order.
    ///
    /// QUERY is sluice's queue id, a Message-ID (<...>), a client IP or an
    /// email address. Read from the event log (log.events, and its rotated
    /// .1 file): the connection and its refusals, HELO, MAIL, RCPT (and
    /// earlier refused tries of the same client and sender, such as
    /// greylisting), the scan and spam verdicts with the rules, the
    /// quarantine, each delivery attempt with the next hop's reply, DSNs,
    /// bans. Then what is live: the message in the queue, the client's ban.
    /// Exit 1 when nothing is found.
    #[command(
        after_help = "Examples:\n  sluice trace 6620246496C3E3EB\n  sluice trace '<20261207.abc@example.org>'\n  sluice trace 192.0.2.7 --since 2h\n  sluice trace user@example.com --json"
    )]
    Trace {
        /// Queue id, <Message-ID>, client IP or email address.
        query: String,
        /// Only events since: a duration back from now ("2h", "3d") or a
        /// time ("2026-12-07T10:00:00Z").
        #[arg(long)]
        since: Option<String>,
        /// One JSON object per line (the events as logged).
        #[arg(long)]
        json: bool,
        /// The event log to read (default: log.events).
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Messages refused after acceptance (virus found by a deferred scan)
    /// and spam the policy quarantines.
    #[command(after_help = "Examples:\n  sluice quarantine list\n  sluice quarantine release 6620246496C3E3EB")]
    Quarantine {
        #[command(subcommand)]
        action: QuarantineCmd,
    },
    /// Writes the manual pages: sluice(8), one per subcommand, and
    /// sluice.toml(5) from the example configuration (for packaging).
    #[command(hide = true)]
    Man {
        /// The directory to write them into.
        #[arg(long)]
        out: PathBuf,
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
        Cmd::CheckConfig { file, strict } => match file.or(config) {
            Some(file) => match load_checked(Some(&file)) {
                Ok((config, _)) => {
                    let warnings = cli::config::print_warnings(&config);
                    if strict && warnings > 0 {
                        eprintln!("sluice: {}: {warnings} warning(s), refused (--strict)", file.display());
                        return ExitCode::from(EX_CONFIG);
                    }
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
        Cmd::Config { file, changed } => cli::config::run(file.or(config).as_deref(), changed, EX_CONFIG),
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
            forget,
            daemon: true,
            ..
        } => with_config(config.as_ref(), |c| async move {
            cli::learn::via_daemon(&c, &spam, &ham, forget).await
        }),
        Cmd::Learn {
            spam,
            ham,
            out,
            rebuild,
            forget,
            min_count,
            ..
        } => {
            // The model the daemon reads, when the configuration names one.
            let configured = config
                .as_ref()
                .and_then(|p| Config::load(p).ok())
                .and_then(|c| c.spam.and_then(|s| s.bayes_model));
            let out = out
                .or(configured)
                .unwrap_or_else(|| PathBuf::from("sluice-bayes.model"));
            let opts = cli::learn::LearnOpts {
                spam,
                ham,
                out,
                rebuild,
                forget,
                min_count,
            };
            done(cli::learn::learn(&opts))
        }
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
        Cmd::Trace {
            query,
            since,
            json,
            log,
        } => with_config(config.as_ref(), |c| async move {
            let opts = cli::trace::TraceOpts {
                query,
                since,
                json,
                log,
            };
            cli::trace::trace(&c, opts).await
        }),
        Cmd::Queue { action } => with_config(config.as_ref(), |c| async move { cli::queue::queue(&c, action).await }),
        Cmd::Quarantine { action } => with_config(config.as_ref(), |c| async move {
            cli::quarantine::quarantine(&c, action)
                .await
                .map_err(anyhow::Error::from)
        }),
        Cmd::Man { out } => done(
            cli::man::write_all(Cli::command(), &out)
                .map(|pages| pages.iter().for_each(|p| println!("{}", p.display())))
                .map_err(|e| anyhow::anyhow!("{}: {e}", out.display())),
        ),
        Cmd::Serve => run_server(config.as_ref(), Only::All),
        Cmd::Policy => run_server(config.as_ref(), Only::Policy),
        Cmd::Milter => run_server(config.as_ref(), Only::Milter),
        Cmd::Reload => with_config(config.as_ref(), |c| async move { reload(&c).await }),
    }
}

/// `sluice reload`: asks the daemon; exit 1 when the file did not apply.
async fn reload(config: &Config) -> anyhow::Result<()> {
    use sluice::app::ReloadResult;
    let path = sluice::app::daemon_socket(config);
    match sluice::app::request_reload(config).await {
        Ok(ReloadResult::Applied { restart_needed }) if restart_needed.is_empty() => {
            println!("configuration reloaded");
            Ok(())
        }
        Ok(ReloadResult::Applied { restart_needed }) => {
            println!("configuration reloaded; these changed settings need a restart and keep their running value:");
            for key in restart_needed {
                println!("  {key}");
            }
            Ok(())
        }
        Ok(ReloadResult::Failed { error }) => {
            anyhow::bail!("configuration not reloaded (the running one stays): {error}")
        }
        Err(e) => anyhow::bail!("cannot reach the daemon at {}: {e}", path.display()),
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

/// Which listeners `run_server` starts.
#[derive(Clone, Copy)]
enum Only {
    /// `sluice serve`: everything the file configures.
    All,
    /// `sluice policy`.
    Policy,
    /// `sluice milter`.
    Milter,
}

/// `sluice serve`: every file loaded first (exit 64 when one fails), then
/// serve until SIGTERM/SIGINT. `only`: `sluice policy` runs the policy
/// server alone, `sluice milter` the milter alone (each with its defaults
/// when its section is absent), with no SMTP listener.
fn run_server(path: Option<&PathBuf>, only: Only) -> ExitCode {
    let (mut config, pre) = match load_checked(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match only {
        Only::All => {}
        Only::Policy => {
            config.server.listen.clear();
            config.milter = None;
            config
                .policy_server
                .get_or_insert_with(sluice::config::policy_server::PolicyServerConfig::defaults);
        }
        Only::Milter => {
            config.server.listen.clear();
            config.policy_server = None;
            config.milter.get_or_insert_with(Default::default);
        }
    }
    sluice::logging::init(&config.log);
    for w in config.warnings() {
        tracing::warn!("configuration: {w}");
    }
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(serve(config, pre, path.cloned())) {
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

/// Serves until SIGTERM/SIGINT. Under systemd: READY=1 once the
/// listeners are bound, and the watchdog fed from this loop, so a stuck
/// runtime is restarted.
async fn serve(config: Config, pre: sluice::app::Preflight, path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    // SIGUSR1 reopens the event log file; logrotate may send it whatever
    // log.events says, and its default action would end the process.
    let _usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let running = sluice::app::start_with(config, pre, path).await?;
    let listening: Vec<_> = running
        .local_addrs
        .iter()
        .chain(&running.policy_addrs)
        .copied()
        .collect();
    cli::systemd::ready(&listening);
    let mut watchdog = cli::systemd::Watchdog::from_env();
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Reload => {
                    running.reload().await;
                }
                Signal::Terminate => break,
            },
            () = watchdog.tick() => watchdog.feed(),
        }
    }
    cli::systemd::stopping();
    running.shutdown().await;
    Ok(())
}
