//! `sluice bans ...`: the daemon's bans over its control socket,
//! `import-postfix-log`, and `flush-kernel` (in this process: it works
//! with the daemon stopped or the firewall off).

use std::path::PathBuf;

use clap::Subcommand;
use sluice::config::Config;

#[derive(Subcommand)]
pub(crate) enum BansCmd {
    /// Every active ban.
    #[command(after_help = "Example:\n  sluice bans list")]
    List,
    /// Ban an address or network by hand. Exit 1 when the ban is recorded
    /// (sluice refuses the client) but the exporter cannot put it in the
    /// kernel; the reason is printed.
    #[command(after_help = "Examples:\n  sluice bans add 192.0.2.7\n  sluice bans add 198.51.100.0/24 --for 7d")]
    Add {
        /// An address or a CIDR network.
        net: String,
        /// How long, e.g. "1h", "7d".
        #[arg(long = "for", default_value = "1h")]
        duration: String,
    },
    /// Lift a ban.
    #[command(after_help = "Example:\n  sluice bans del 192.0.2.7")]
    Del {
        /// The address or CIDR network as banned.
        net: String,
    },
    /// Why an address is banned: the rule, the offences, until when.
    #[command(after_help = "Example:\n  sluice bans explain 192.0.2.7")]
    Explain {
        /// The client address.
        ip: std::net::IpAddr,
    },
    /// Remove what sluice owns in the kernel: its nftables table (sets,
    /// chain, rules), its ipsets and the iptables/ip6tables rules that use
    /// them. Done here, not by the daemon: a running sluice with an
    /// exporter puts its own back within a second. Needs CAP_NET_ADMIN
    /// (root).
    #[command(after_help = "Example:\n  sluice bans flush-kernel")]
    FlushKernel,
    /// Read a Postfix mail log (smtpd, postscreen, amavis lines: unknown
    /// recipients, DNSBL rejects, pregreeting, "lost connection after"
    /// floods, rate limits, viruses) into the running daemon's ban engine,
    /// with the lines' own times. FILE may be - (stdin).
    #[command(
        after_help = "Examples:\n  sluice bans import-postfix-log /var/log/mail.log\n  zcat /var/log/mail.log.2.gz | sluice bans import-postfix-log --dry-run -"
    )]
    ImportPostfixLog {
        /// The log file, or - (stdin).
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

/// `sluice bans ...`: one request to the daemon's control socket.
pub(crate) async fn bans(config: &Config, action: BansCmd) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use sluice::firewall::control::{Request, Response, request};
    if let BansCmd::FlushKernel = action {
        return flush_kernel(config);
    }
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
        BansCmd::ImportPostfixLog { .. } | BansCmd::FlushKernel => unreachable!("handled above"),
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
        Response::NotInKernel(why) => match &req {
            Request::Add { net, .. } => anyhow::bail!(
                "{} banned: sluice refuses its connections, but the ban is NOT enforced in the kernel: {why}",
                net.trunc()
            ),
            _ => anyhow::bail!("lifted: sluice admits it again, but the kernel may still drop it: {why}"),
        },
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

/// `sluice bans flush-kernel`: removes sluice's nftables table, ipsets and
/// iptables rules (by the configured names), whatever the exporter.
fn flush_kernel(config: &Config) -> anyhow::Result<()> {
    use sluice::firewall::kernel::remove;
    let names = &config.kernel_names;
    let (removed, failed) = remove(names, None);
    for r in &removed {
        println!("removed {r}");
    }
    if removed.is_empty() && failed.is_empty() {
        println!(
            "nothing to remove: no nftables table inet {}, no ipsets {}/{}",
            names.nft.table, names.ipset.set_v4, names.ipset.set_v6
        );
    }
    if let Some(x) = config.firewall.as_ref().and_then(|f| f.kernel_exporter()) {
        eprintln!(
            "note: a running sluice puts its {} state back within a second (firewall.exporter = \"{}\"); \
             set firewall.exporter = \"none\" or stop it first to keep the kernel free of it",
            x.as_str(),
            x.as_str()
        );
    }
    if !failed.is_empty() {
        let why: Vec<String> = failed
            .iter()
            .map(|(x, e)| format!("{}: {}", x.as_str(), e.reason()))
            .collect();
        anyhow::bail!("flush-kernel: {}", why.join("; "));
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
    let now = sluice::mail::date::now_secs();
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
