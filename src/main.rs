//! The command line: `sluice [-c FILE] serve | check-config | scan | ...`.
//! Parse, validate, build, run, map errors to exit codes; nothing else.
//!
//! The configuration is found as Postfix admins expect: `-c/--config`
//! anywhere on the line, else `SLUICE_CONFIG`, else
//! `/etc/sluice/sluice.toml` when it exists, else the built-in defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cli::args::{Cli, Cmd, DEFAULT_CONFIG, config_path};
use sluice::config::{Config, Role};
use sluice::shutdown::{Signal, Signals};

mod cli;

/// EX_USAGE from sysexits.h: bad configuration.
const EX_CONFIG: u8 = 64;

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
            let spam_cfg = config.as_ref().and_then(|p| Config::load(p).ok()).and_then(|c| c.spam);
            let part_text = spam_cfg
                .as_ref()
                .map_or(sluice::spam::tokenize::PART_TEXT, |s| s.part_scan_size);
            let min_messages = spam_cfg
                .as_ref()
                .map_or(sluice::spam::bayes::MIN_MESSAGES, |s| s.bayes_min_messages);
            let out = out
                .or(spam_cfg.and_then(|s| s.bayes_model))
                .unwrap_or_else(|| PathBuf::from("sluice-bayes.model"));
            let opts = cli::learn::LearnOpts {
                spam,
                ham,
                out,
                rebuild,
                forget,
                min_count,
                part_text,
                min_messages,
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
        Cmd::Serve => run_server(config.as_ref(), Role::All),
        Cmd::Policy => run_server(config.as_ref(), Role::Policy),
        Cmd::Milter => run_server(config.as_ref(), Role::Milter),
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

/// `sluice serve`: every file loaded first (exit 64 when one fails), then
/// serve until SIGTERM/SIGINT. `role`: `sluice policy` runs the policy
/// server alone, `sluice milter` the milter alone (each with its defaults
/// when its section is absent), with no SMTP listener.
fn run_server(path: Option<&PathBuf>, role: Role) -> ExitCode {
    let (mut config, pre) = match load_checked(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    config.narrow(role);
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
