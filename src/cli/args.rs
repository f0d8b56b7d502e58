//! The command line as clap reads it: the global options, every
//! subcommand with its help text and example. `main.rs` dispatches.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::bans::BansCmd;
use super::quarantine::QuarantineCmd;
use super::queue::QueueCmd;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "High-throughput SMTP relay and content filter",
    after_help = "Examples:\n  sluice serve -c /etc/sluice/sluice.toml\n  sluice check-config\n  sluice config --changed\n  sluice queue list\n\n`sluice COMMAND --help` shows each command's options and an example."
)]
pub(crate) struct Cli {
    /// The configuration file (also SLUICE_CONFIG; default
    /// /etc/sluice/sluice.toml when it exists, else the built-in defaults).
    #[arg(short, long, env = "SLUICE_CONFIG", global = true)]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

/// Where the configuration is read from when neither `--config` nor
/// `SLUICE_CONFIG` names it.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/sluice/sluice.toml";

/// `--config`/`SLUICE_CONFIG`, else the default file if it exists.
pub(crate) fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.is_file()))
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
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
