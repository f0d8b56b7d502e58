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
    /// Run the content pipeline (virus scan, banned parts, spam score) on
    /// messages and print the verdict and every contribution. FILE may be a
    /// directory (its files) or - (stdin). Exit 0 = all delivered as they
    /// are, 1 = something tagged, held or refused, 75 = a scan failed.
    Scan {
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
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
        /// The configuration whose rules and thresholds --cross-validate uses.
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// The firewall's bans, from the running daemon (its control socket).
    Bans {
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: BansCmd,
    },
    /// Nagios-style check of the running daemon (its metrics listener):
    /// one status line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL
    /// (not ready: spool, next hop or scanners), 3 UNKNOWN (not answering).
    Check {
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
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
    /// Messages refused after acceptance (virus found by a deferred scan).
    Quarantine {
        #[arg(short, long, env = "SLUICE_CONFIG")]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: QuarantineCmd,
    },
}

#[derive(Subcommand)]
enum BansCmd {
    /// Every active ban.
    List,
    /// Ban an address or network by hand.
    Add {
        net: String,
        /// How long, e.g. "1h", "7d".
        #[arg(long = "for", default_value = "1h")]
        duration: String,
    },
    /// Lift a ban.
    Del { net: String },
    /// Why an address is banned: the rule, the offences, until when.
    Explain { ip: std::net::IpAddr },
    /// Read a Postfix mail log (smtpd, postscreen, amavis lines: unknown
    /// recipients, DNSBL rejects, pregreeting, "lost connection after"
    /// floods, rate limits, viruses) into the running daemon's ban engine,
    /// with the lines' own times. FILE may be - (stdin).
    ImportPostfixLog {
        file: PathBuf,
        /// Only print what would be banned (a local engine with the
        /// configured rules; the daemon is not asked).
        #[arg(long)]
        dry_run: bool,
        /// Seconds east of UTC of the log's timestamps when they carry no
        /// zone (classic syslog). Default 0 (UTC).
        #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
        utc_offset: i32,
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

/// [`load`], and the spam rules and model the configuration names must
/// load too (a rule error names its file:line).
fn load_checked(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let config = load(path)?;
    match sluice::app::spam_filter(&config, true, None) {
        Ok(_) => Ok(config),
        Err(e) => {
            eprintln!("sluice: configuration error: spam: {e:#}");
            Err(ExitCode::from(EX_CONFIG))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::CheckConfig { file } => match load_checked(Some(&file)) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Cmd::Scan {
            config,
            json,
            offline,
            bayes_model,
            rcpt,
            ip,
            helo,
            mail_from,
            files,
        } => {
            let (mut config, rt) = match load(config.as_ref()).and_then(|c| Ok((c, runtime()?))) {
                Ok(v) => v,
                Err(code) => return code,
            };
            if let (Some(m), Some(spam)) = (bayes_model, config.spam.as_mut()) {
                spam.bayes_model = Some(m);
            }
            let opts = sluice::scan_cli::ScanOptions {
                json,
                rcpt_domain: rcpt.map(|r| r.rsplit('@').next().unwrap_or_default().to_string()),
                ip,
                helo,
                mail_from,
                offline,
            };
            let code = rt.block_on(async {
                let (filter, _) = sluice::scan::ContentFilter::from_config(&config);
                let spam = match sluice::app::spam_filter(&config, offline, None) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("sluice: {e:#}");
                        return EX_CONFIG;
                    }
                };
                sluice::scan_cli::run(&filter, spam.as_deref(), &files, &opts).await
            });
            ExitCode::from(code)
        }
        Cmd::Learn {
            cross_validate: Some(k),
            spam,
            ham,
            config,
            ..
        } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match cross_validate(&config, &spam, &ham, k) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sluice: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Learn {
            spam,
            ham,
            out,
            min_count,
            ..
        } => match learn(&spam, &ham, &out, min_count) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Check {
            config,
            addr,
            warn_queue,
            crit_queue,
            warn_age,
            crit_age,
            timeout,
        } => check(
            config.as_ref(),
            addr,
            (warn_queue, crit_queue),
            (&warn_age, &crit_age),
            &timeout,
        ),
        Cmd::Bans { config, action } => with_config(config.as_ref(), |c| async move { bans(&c, action).await }),
        Cmd::Quarantine { config, action } => with_config(config.as_ref(), |c| async move {
            quarantine(&c, action).await.map_err(anyhow::Error::from)
        }),
        Cmd::Serve { config } => {
            let config = match load_checked(config.as_ref()) {
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

/// `sluice learn --cross-validate K`: the report of [`sluice::spam::eval`],
/// with each directory as a group.
fn cross_validate(config: &Config, spam: &[PathBuf], ham: &[PathBuf], k: usize) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let mut cfg = config.spam.clone().unwrap_or_default();
    cfg.bayes_model = None;
    cfg.auth = false;
    let threshold = cfg.default.required().unwrap_or(5.0);
    let filter = sluice::spam::filter::SpamFilter::new(cfg, None)?;
    let mut samples = Vec::new();
    for (dirs, is_spam) in [(spam, true), (ham, false)] {
        for dir in dirs {
            let group = dir
                .file_name()
                .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
            for f in sluice::spam::message_files(dir).with_context(|| format!("{}", dir.display()))? {
                let raw = std::fs::read(&f).with_context(|| format!("{}", f.display()))?;
                samples.push(sluice::spam::eval::Sample {
                    name: f.display().to_string(),
                    raw,
                    group: group.clone(),
                    spam: is_spam,
                });
            }
        }
    }
    // Fold = index mod K, so every fold has some of each directory.
    let scores = sluice::spam::eval::cross_validate(&filter, &samples, k, true);
    Ok(format!(
        "{k}-fold cross-validation of {} messages\n\n{}\n{}",
        samples.len(),
        scores.report(threshold),
        scores.mistakes(threshold)
    ))
}

/// `sluice bans ...`: one request to the daemon's control socket.
async fn bans(config: &Config, action: BansCmd) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use sluice::firewall::control::{Request, Response, request};
    let fw = config
        .firewall
        .as_ref()
        .context("the firewall is off (firewall.enabled = false)")?;
    let net = |s: &str| -> anyhow::Result<ipnet::IpNet> {
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            .with_context(|| format!("{s:?} is not an address or CIDR"))
    };
    if let BansCmd::ImportPostfixLog {
        file,
        dry_run,
        utc_offset,
    } = &action
    {
        return import_postfix_log(fw, file, *dry_run, *utc_offset).await;
    }
    let req = match &action {
        BansCmd::ImportPostfixLog { .. } => unreachable!("handled above"),
        BansCmd::List => Request::List,
        BansCmd::Add { net: n, duration } => Request::Add {
            net: net(n)?,
            seconds: humantime::parse_duration(duration)
                .with_context(|| format!("--for {duration:?}"))?
                .as_secs(),
        },
        BansCmd::Del { net: n } => Request::Del { net: net(n)? },
        BansCmd::Explain { ip } => Request::Explain { ip: *ip },
    };
    let path = &fw.control_socket;
    let resp = request(path, &req)
        .await
        .with_context(|| format!("{}: is sluice running?", path.display()))?;
    match resp {
        Response::Done => println!("done"),
        Response::NotBanned => println!("not banned"),
        Response::Error(e) => anyhow::bail!(e),
        Response::Bans(list) => {
            for b in list {
                if matches!(action, BansCmd::Explain { .. }) {
                    println!("{} is banned until {} (strike {})", b.net, when(b.until), b.strike);
                    println!("  rule: {}", b.rule);
                    println!("  offence: {}", b.offence.as_str());
                    for t in &b.evidence {
                        println!("  offence at {}", when(*t));
                    }
                } else {
                    println!("{}", ban_line(&b));
                }
            }
        }
    }
    Ok(())
}

/// A Unix time as RFC 3339 (seconds).
fn when(t: u64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
}

/// One ban as `sluice bans list` prints it.
fn ban_line(b: &sluice::firewall::engine::Ban) -> String {
    format!(
        "{}\t{}\tuntil {}\tstrike {}\t{}",
        b.net,
        b.offence.as_str(),
        when(b.until),
        b.strike,
        b.rule
    )
}

/// Offences sent to the daemon per request.
const IMPORT_BATCH: usize = 5000;

/// `sluice bans import-postfix-log`.
async fn import_postfix_log(
    fw: &sluice::firewall::service::FirewallConfig,
    file: &std::path::Path,
    dry_run: bool,
    utc_offset: i32,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use sluice::firewall::control::{Request, Response, request};
    use sluice::firewall::engine::{Decision, Engine};
    use std::io::BufRead as _;
    let now = sluice::smtp::date::now_secs();
    let reader: Box<dyn std::io::BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(file).with_context(|| format!("{}", file.display()))?,
        ))
    };
    let mut parser = sluice::firewall::postfix_log::Parser::new(now).with_utc_offset(utc_offset);
    let (mut lines, mut found) = (0usize, Vec::new());
    for line in reader.split(b'\n') {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        lines += 1;
        if let Some(o) = parser.line(&String::from_utf8_lossy(&line)) {
            found.push(o);
        }
    }
    found.sort_by_key(|o| o.at);
    let mut bans = Vec::new();
    if dry_run {
        let mut engine = Engine::new(fw.bans.clone());
        for o in &found {
            if let Decision::Ban(b) | Decision::Aggregated(b) = engine.record(o.at, o.ip, o.offence)
                && b.until > now
            {
                bans.push(b);
            }
        }
    } else {
        for chunk in found.chunks(IMPORT_BATCH) {
            let req = Request::Record {
                offences: chunk.iter().map(|o| (o.at, o.ip, o.offence)).collect(),
            };
            match request(&fw.control_socket, &req)
                .await
                .with_context(|| format!("{}: is sluice running?", fw.control_socket.display()))?
            {
                Response::Bans(b) => bans.extend(b),
                Response::Error(e) => anyhow::bail!(e),
                _ => {}
            }
        }
    }
    for b in &bans {
        println!("{}", ban_line(b));
    }
    println!(
        "{lines} lines, {} offences, {} bans in force{}",
        found.len(),
        bans.len(),
        if dry_run { " (dry run: nothing banned)" } else { "" }
    );
    Ok(())
}

/// `sluice check`: every failure to even ask is UNKNOWN (exit 3).
fn check(
    config: Option<&PathBuf>,
    addr: Option<std::net::SocketAddr>,
    queue: (u64, u64),
    age: (&str, &str),
    timeout: &str,
) -> ExitCode {
    use sluice::metrics::check::{Status, Thresholds};
    let unknown = |msg: String| {
        println!("SLUICE UNKNOWN - {msg}");
        ExitCode::from(Status::Unknown as u8)
    };
    let secs = |s: &str| humantime::parse_duration(s).map(|d| d.as_secs());
    let (Ok(warn_age), Ok(crit_age), Ok(within)) = (secs(age.0), secs(age.1), humantime::parse_duration(timeout))
    else {
        return unknown("bad --warn-age, --crit-age or --timeout (e.g. \"1h\", \"10s\")".into());
    };
    let addr = match addr {
        Some(a) => a,
        None => {
            let loaded = match config {
                Some(p) => Config::load(p),
                None => Config::default_config(),
            };
            match loaded {
                Ok(c) => match c.metrics {
                    Some(m) => m.listen,
                    None => return unknown("metrics.enabled is false in the configuration".into()),
                },
                Err(e) => return unknown(format!("configuration: {e}")),
            }
        }
    };
    let t = Thresholds {
        warn_queue: queue.0,
        crit_queue: queue.1,
        warn_age,
        crit_age,
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return unknown(format!("cannot start the runtime: {e}")),
    };
    let (status, line) = rt.block_on(sluice::metrics::check::run(addr, &t, within));
    println!("{line}");
    ExitCode::from(status as u8)
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
            // Spam quarantined while its virus scan was still pending
            // (admission control, or held during a clamd outage) is
            // scanned now: release never delivers unscanned mail. Mail the
            // scan itself put here is the operator's call.
            let entry = q.entry(&id)?;
            if entry.envelope.scan_pending && entry.reason == "spam" {
                let (filter, _) = sluice::scan::ContentFilter::from_config(config);
                let refused = |why: String| QuarantineError::Release(id.clone(), format!("not released: {why}"));
                match filter.check(&q.body(&id)?).await {
                    Ok(sluice::scan::Verdict::Clean) => {}
                    Ok(sluice::scan::Verdict::Virus(name)) => return Err(refused(format!("virus found: {name}"))),
                    Ok(sluice::scan::Verdict::Banned(what) | sluice::scan::Verdict::Malformed(what)) => {
                        return Err(refused(what));
                    }
                    Err(e) => return Err(refused(format!("its virus scan is pending and failed now: {e}"))),
                }
            }
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
