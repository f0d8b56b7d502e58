//! The effective configuration, as `sluice config` prints it
//! (`postconf`, `rspamadm configdump`): the file with every key it leaves
//! out filled in from [`super::defaults`], as TOML that is itself a valid
//! configuration, and (`--changed`) only the keys whose value differs from
//! what leaving them out would give.

use std::path::Path;

use super::defaults as d;
use super::raw::*;
use super::scan::DEFAULT_BANNED;
use super::spam::Thresholds;

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

fn list(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

/// A path in the spool directory, as the validation derives it.
fn in_spool(spool_dir: &str, name: &str) -> Option<String> {
    Some(Path::new(spool_dir).join(name).to_string_lossy().into_owned())
}

fn threshold(v: Option<f64>) -> Option<RawThreshold> {
    Some(match v {
        Some(x) => RawThreshold::Score(x),
        None => RawThreshold::Word("off".into()),
    })
}

fn secs(n: u64) -> Option<String> {
    Some(humantime::format_duration(std::time::Duration::from_secs(n)).to_string())
}

/// `raw` with every key it leaves out set to its default (derived ones,
/// such as `relay.helo_name` or the files in the spool, derived from the
/// filled values). Validating the result gives the same configuration as
/// validating `raw`; `[tls]` stays absent when it is.
pub fn filled(raw: RawConfig) -> RawConfig {
    let RawConfig {
        server,
        timeouts,
        tls,
        relay,
        recipients,
        spool,
        log,
        dns,
        dnsbl,
        policy,
        limits,
        helo,
        greylist,
        callahead,
        clamd,
        scan,
        spam,
        firewall,
        metrics,
        stress,
        cluster,
        policy_server,
        milter,
    } = raw;
    let server = RawServer {
        listen: server
            .listen
            .or_else(|| list(d::SERVER_LISTEN).map(|v| v.into_iter().map(RawListen::Address).collect())),
        hostname: server.hostname.or_else(|| Some(super::server::system_hostname())),
        max_message_size: server.max_message_size.or(Some(d::SERVER_MAX_MESSAGE_SIZE)),
        max_recipients: server.max_recipients.or(Some(d::SERVER_MAX_RECIPIENTS)),
        max_connections: server.max_connections.or(Some(d::SERVER_MAX_CONNECTIONS)),
        max_command_line: server.max_command_line.or(Some(d::SERVER_MAX_COMMAND_LINE)),
        max_line_length: server.max_line_length.or(Some(d::SERVER_MAX_LINE_LENGTH)),
        max_header_size: server.max_header_size.or(Some(d::SERVER_MAX_HEADER_SIZE)),
        max_received_headers: server.max_received_headers.or(Some(d::SERVER_MAX_RECEIVED_HEADERS)),
        max_errors: server.max_errors.or(Some(d::SERVER_MAX_ERRORS)),
        body_memory: server.body_memory.or(Some(d::SERVER_BODY_MEMORY)),
        check_memory: server.check_memory.or(Some(d::SERVER_CHECK_MEMORY)),
        proxy_from: server.proxy_from.or_else(|| Some(Vec::new())),
        proxy_timeout: server.proxy_timeout.or_else(|| s(d::SERVER_PROXY_TIMEOUT)),
    };
    let timeouts = RawTimeouts {
        command: timeouts.command.or_else(|| s(d::TIMEOUTS_COMMAND)),
        idle: timeouts.idle.or_else(|| s(d::TIMEOUTS_IDLE)),
        data: timeouts.data.or_else(|| s(d::TIMEOUTS_DATA)),
        data_min_rate: timeouts.data_min_rate.or(Some(d::TIMEOUTS_DATA_MIN_RATE)),
        message: timeouts.message.or_else(|| s(d::TIMEOUTS_MESSAGE)),
        shutdown_grace: timeouts.shutdown_grace.or_else(|| s(d::TIMEOUTS_SHUTDOWN_GRACE)),
    };
    let relay = fill_relay(relay, server.hostname.clone());
    let milter = milter.map(|m| RawMilter {
        listen: m.listen.or_else(|| list(d::MILTER_LISTEN)),
        timeout: m.timeout.or_else(|| s(d::MILTER_TIMEOUT)),
        max_connections: m.max_connections.or(Some(d::MILTER_MAX_CONNECTIONS)),
    });
    let cluster = cluster.map(|c| RawCluster {
        prefix: c.prefix.or_else(|| s(d::CLUSTER_PREFIX)),
        timeout: c.timeout.or_else(|| s(d::CLUSTER_TIMEOUT)),
        node: c.node.or_else(|| server.hostname.clone()),
        ..c
    });
    let domains = recipients.domains.or_else(|| list(d::RECIPIENTS_DOMAINS));
    let postmaster = recipients.postmaster.or_else(|| {
        let first = domains.as_ref().and_then(|v| v.first())?;
        Some(format!("postmaster@{}", first.trim_end_matches('.').to_lowercase()))
    });
    let recipients = RawRecipients {
        domains,
        table: recipients.table.or_else(|| s(d::RECIPIENTS_TABLE)),
        delimiter: recipients.delimiter.or_else(|| s("")),
        reload_interval: recipients.reload_interval.or_else(|| s(d::RECIPIENTS_RELOAD_INTERVAL)),
        postmaster,
    };
    let spool = RawSpool {
        dir: spool.dir.or_else(|| s(d::SPOOL_DIR)),
        fsync: spool.fsync.or(Some(d::SPOOL_FSYNC)),
        segment_size: spool.segment_size.or(Some(d::SPOOL_SEGMENT_SIZE)),
        min_free: spool.min_free.or(Some(d::SPOOL_MIN_FREE)),
    };
    let spool_dir = spool.dir.clone().unwrap_or_default();
    let log = RawLog {
        level: log.level.or_else(|| s(d::LOG_LEVEL)),
        format: log.format.or_else(|| s(d::LOG_FORMAT)),
        events: log.events.or_else(|| s(d::LOG_EVENTS)),
    };
    let dns = RawDns {
        resolver: dns.resolver.or_else(|| s("")),
        timeout: dns.timeout.or_else(|| s(d::DNS_TIMEOUT)),
        negative_ttl: dns.negative_ttl.or_else(|| s(d::DNS_NEGATIVE_TTL)),
        min_ttl: dns.min_ttl.or_else(|| s(d::DNS_MIN_TTL)),
        budget: dns.budget.or_else(|| s(d::DNS_BUDGET)),
        health_window: dns.health_window.or_else(|| s(d::DNS_HEALTH_WINDOW)),
        health_min_queries: dns.health_min_queries.or(Some(d::DNS_HEALTH_MIN_QUERIES)),
        health_failing_ratio: dns.health_failing_ratio.or(Some(d::DNS_HEALTH_FAILING_RATIO)),
    };
    let dnsbl = RawDnsbl {
        zones: dnsbl.zones.or_else(|| Some(Vec::new())),
        domain_zones: dnsbl.domain_zones.or_else(|| Some(Vec::new())),
        probe_interval: dnsbl.probe_interval.or_else(|| s(d::DNSBL_PROBE_INTERVAL)),
        threshold: dnsbl.threshold.or(Some(d::DNSBL_THRESHOLD)),
        replies: dnsbl.replies.or_else(|| Some(Default::default())),
    };
    let policy = RawPolicy {
        allowlist: policy.allowlist.or_else(|| Some(Vec::new())),
        greet_delay: policy.greet_delay.or_else(|| s(d::POLICY_GREET_DELAY)),
        reject_early_talkers: policy.reject_early_talkers.or(Some(d::POLICY_REJECT_EARLY_TALKERS)),
    };
    let limits = RawLimits {
        per_ip_connections: limits.per_ip_connections.or(Some(d::LIMITS_PER_IP_CONNECTIONS)),
        per_ip_connection_rate: limits.per_ip_connection_rate.or(Some(d::LIMITS_PER_IP_CONNECTION_RATE)),
        per_ip_message_rate: limits.per_ip_message_rate.or(Some(d::LIMITS_PER_IP_MESSAGE_RATE)),
        per_ip_recipient_rate: limits.per_ip_recipient_rate.or(Some(d::LIMITS_PER_IP_RECIPIENT_RATE)),
        tarpit_after_errors: limits.tarpit_after_errors.or(Some(d::LIMITS_TARPIT_AFTER_ERRORS)),
        tarpit_delay: limits.tarpit_delay.or_else(|| s(d::LIMITS_TARPIT_DELAY)),
    };
    let helo = RawHelo {
        bare_ip: helo.bare_ip.or_else(|| s(d::HELO_ACTION)),
        non_fqdn: helo.non_fqdn.or_else(|| s(d::HELO_ACTION)),
        our_name: helo.our_name.or_else(|| s(d::HELO_ACTION)),
        fcrdns: helo.fcrdns.or_else(|| s(d::HELO_ACTION)),
    };
    let greylist = RawGreylist {
        enabled: greylist.enabled.or(Some(d::GREYLIST_ENABLED)),
        delay: greylist.delay.or_else(|| s(d::GREYLIST_DELAY)),
        retry_window: greylist.retry_window.or_else(|| s(d::GREYLIST_RETRY_WINDOW)),
        max_age: greylist.max_age.or_else(|| s(d::GREYLIST_MAX_AGE)),
        auto_allowlist_after: greylist.auto_allowlist_after.or(Some(d::GREYLIST_AUTO_ALLOWLIST_AFTER)),
        state: greylist.state.or_else(|| in_spool(&spool_dir, "greylist.state")),
        on_store_failure: greylist.on_store_failure.or_else(|| s(d::GREYLIST_ON_STORE_FAILURE)),
    };
    let callahead = RawCallAhead {
        enabled: callahead.enabled.or(Some(d::CALLAHEAD_ENABLED)),
        positive_ttl: callahead.positive_ttl.or_else(|| s(d::CALLAHEAD_POSITIVE_TTL)),
        negative_ttl: callahead.negative_ttl.or_else(|| s(d::CALLAHEAD_NEGATIVE_TTL)),
        probes_per_client: callahead.probes_per_client.or(Some(d::CALLAHEAD_PROBES_PER_CLIENT)),
        pool_size: callahead.pool_size.or(Some(d::CALLAHEAD_POOL_SIZE)),
        max_concurrent: callahead.max_concurrent.or(Some(d::CALLAHEAD_MAX_CONCURRENT)),
        max_per_second: callahead.max_per_second.or(Some(d::CALLAHEAD_MAX_PER_SECOND)),
    };
    let clamd = RawClamd {
        endpoints: clamd.endpoints.or_else(|| Some(Vec::new())),
        timeout: clamd.timeout.or_else(|| s(d::CLAMD_TIMEOUT)),
        max_size: clamd.max_size.or(Some(d::CLAMD_MAX_SIZE)),
        max_concurrent: clamd.max_concurrent.or(Some(d::CLAMD_MAX_CONCURRENT)),
        health_interval: clamd.health_interval.or_else(|| s(d::CLAMD_HEALTH_INTERVAL)),
        stream: clamd.stream.or(Some(d::CLAMD_STREAM)),
    };
    let scan = RawScan {
        ambiguous_mime: scan.ambiguous_mime.or_else(|| s(d::SCAN_AMBIGUOUS_MIME)),
        unknown_encoding: scan.unknown_encoding.or_else(|| s(d::SCAN_UNKNOWN_ENCODING)),
        max_depth: scan.max_depth.or(Some(d::SCAN_MAX_DEPTH)),
        max_parts: scan.max_parts.or(Some(d::SCAN_MAX_PARTS)),
        max_decoded_size: scan.max_decoded_size.or(Some(d::SCAN_MAX_DECODED_SIZE)),
        banned_extensions: scan.banned_extensions.or_else(|| list(DEFAULT_BANNED)),
        banned_in_archives: scan.banned_in_archives.or(Some(d::SCAN_BANNED_IN_ARCHIVES)),
        unscannable: scan.unscannable.or_else(|| s(d::SCAN_UNSCANNABLE)),
        unscannable_trusted: scan.unscannable_trusted.or_else(|| s(d::SCAN_UNSCANNABLE_TRUSTED)),
        scanner_unrar: scan.scanner_unrar.or(Some(d::SCAN_SCANNER_UNRAR)),
        archive_max_depth: scan.archive_max_depth.or(Some(d::SCAN_ARCHIVE_MAX_DEPTH)),
        archive_max_entries: scan.archive_max_entries.or(Some(d::SCAN_ARCHIVE_MAX_ENTRIES)),
        archive_max_size: scan.archive_max_size.or(Some(d::SCAN_ARCHIVE_MAX_SIZE)),
        archive_member_scan_size: scan.archive_member_scan_size.or(Some(d::SCAN_ARCHIVE_MEMBER_SCAN_SIZE)),
        on_failure: scan.on_failure.or_else(|| s(d::SCAN_ON_FAILURE)),
        latency_budget: scan.latency_budget.or_else(|| s(d::SCAN_LATENCY_BUDGET)),
        max_held: scan.max_held.or(Some(d::SCAN_MAX_HELD)),
        retry: scan.retry.or_else(|| s(d::SCAN_RETRY)),
        quarantine_dir: scan.quarantine_dir.or_else(|| in_spool(&spool_dir, "quarantine")),
    };
    let spam = fill_spam(spam);
    let firewall = fill_firewall(firewall, &spool_dir);
    let metrics = RawMetrics {
        enabled: metrics.enabled.or(Some(d::METRICS_ENABLED)),
        listen: metrics.listen.or_else(|| s(d::METRICS_LISTEN)),
        probe_timeout: metrics.probe_timeout.or_else(|| s(d::METRICS_PROBE_TIMEOUT)),
    };
    let stress = RawStress {
        enabled: stress.enabled.or(Some(d::STRESS_ENABLED)),
        sessions_ratio: stress.sessions_ratio.or(Some(d::STRESS_SESSIONS_RATIO)),
        timeout: stress.timeout.or_else(|| s(d::STRESS_TIMEOUT)),
        max_errors: stress.max_errors.or(Some(d::STRESS_MAX_ERRORS)),
        tarpit_after_errors: stress.tarpit_after_errors.or(Some(d::STRESS_TARPIT_AFTER_ERRORS)),
        min_duration: stress.min_duration.or_else(|| s(d::STRESS_MIN_DURATION)),
        check_interval: stress.check_interval.or_else(|| s(d::STRESS_CHECK_INTERVAL)),
    };
    let policy_server = policy_server.map(|p| RawPolicyServer {
        listen: p.listen.or_else(|| list(d::POLICY_SERVER_LISTEN)),
        idle_timeout: p.idle_timeout.or_else(|| s(d::POLICY_SERVER_IDLE_TIMEOUT)),
        check_timeout: p.check_timeout.or_else(|| s(d::POLICY_SERVER_CHECK_TIMEOUT)),
        max_request_size: p.max_request_size.or(Some(d::POLICY_SERVER_MAX_REQUEST_SIZE)),
        max_attributes: p.max_attributes.or(Some(d::POLICY_SERVER_MAX_ATTRIBUTES)),
    });
    RawConfig {
        server,
        timeouts,
        tls,
        relay,
        recipients,
        spool,
        log,
        dns,
        dnsbl,
        policy,
        limits,
        helo,
        greylist,
        callahead,
        clamd,
        scan,
        spam,
        firewall,
        metrics,
        stress,
        cluster,
        policy_server,
        milter,
    }
}

fn fill_relay(r: RawRelay, hostname: Option<String>) -> RawRelay {
    let tls = r.tls.or_else(|| s(d::RELAY_TLS));
    let tls_ca_file = r.tls_ca_file.or_else(|| s(d::RELAY_TLS_CA_FILE));
    let forward_client = r.forward_client.or_else(|| s(d::RELAY_FORWARD_CLIENT));
    let routes = r
        .routes
        .into_iter()
        .map(|(domain, route)| {
            let route = match route {
                RawRoute::Url(url) => RawRoute::Url(url),
                RawRoute::Table(t) => RawRoute::Table(RawRouteTable {
                    next_hop: t.next_hop,
                    tls: t.tls.or_else(|| tls.clone()),
                    tls_ca_file: t.tls_ca_file.or_else(|| tls_ca_file.clone()),
                    forward_client: t.forward_client.or_else(|| forward_client.clone()),
                }),
            };
            (domain, route)
        })
        .collect();
    RawRelay {
        next_hop: r.next_hop.or_else(|| s(d::RELAY_NEXT_HOP)),
        helo_name: r.helo_name.or(hostname),
        retry_initial: r.retry_initial.or_else(|| s(d::RELAY_RETRY_INITIAL)),
        retry_max: r.retry_max.or_else(|| s(d::RELAY_RETRY_MAX)),
        max_queue_age: r.max_queue_age.or_else(|| s(d::RELAY_MAX_QUEUE_AGE)),
        concurrency: r.concurrency.or(Some(d::RELAY_CONCURRENCY)),
        connect_timeout: r.connect_timeout.or_else(|| s(d::RELAY_CONNECT_TIMEOUT)),
        command_timeout: r.command_timeout.or_else(|| s(d::RELAY_COMMAND_TIMEOUT)),
        data_timeout: r.data_timeout.or_else(|| s(d::RELAY_DATA_TIMEOUT)),
        idle_timeout: r.idle_timeout.or_else(|| s(d::RELAY_IDLE_TIMEOUT)),
        max_messages_per_connection: r
            .max_messages_per_connection
            .or(Some(d::RELAY_MAX_MESSAGES_PER_CONNECTION)),
        tls,
        tls_ca_file,
        forward_client,
        bounce_next_hop: r.bounce_next_hop.or_else(|| s("")),
        mx_port: r.mx_port.or(Some(d::RELAY_MX_PORT)),
        double_bounce_to: r.double_bounce_to.or_else(|| s("")),
        routes,
    }
}

fn fill_spam(sp: RawSpam) -> RawSpam {
    let base = Thresholds::default();
    let tag = sp.tag.or_else(|| threshold(base.tag));
    let quarantine = sp.quarantine.or_else(|| threshold(base.quarantine));
    let tempfail = sp.tempfail.or_else(|| threshold(base.tempfail));
    let reject = sp.reject.or_else(|| threshold(base.reject));
    let subject_prefix = sp.subject_prefix.or_else(|| s(""));
    let domains = sp.domains.map(|domains| {
        domains
            .into_iter()
            .map(|(name, dom)| {
                let dom = RawSpamDomain {
                    tag: dom.tag.or_else(|| tag.clone()),
                    quarantine: dom.quarantine.or_else(|| quarantine.clone()),
                    tempfail: dom.tempfail.or_else(|| tempfail.clone()),
                    reject: dom.reject.or_else(|| reject.clone()),
                    subject_prefix: dom.subject_prefix.or_else(|| subject_prefix.clone()),
                };
                (name, dom)
            })
            .collect()
    });
    let defaults = super::spam::SpamConfig::default();
    RawSpam {
        enabled: sp.enabled.or(Some(d::SPAM_ENABLED)),
        builtin_rules: sp.builtin_rules.or(Some(defaults.builtin_rules)),
        rules_dir: sp.rules_dir.or_else(|| s("")),
        bayes_model: sp.bayes_model.or_else(|| s("")),
        bayes_min_messages: sp.bayes_min_messages.or(Some(u64::from(defaults.bayes_min_messages))),
        auth: sp.auth.or(Some(defaults.auth)),
        auth_timeout: sp.auth_timeout.or_else(|| s(d::SPAM_AUTH_TIMEOUT)),
        max_size: sp.max_size.or(Some(defaults.max_size as u64)),
        part_scan_size: sp.part_scan_size.or(Some(defaults.part_scan_size as u64)),
        reload_interval: sp.reload_interval.or_else(|| s(d::SPAM_RELOAD_INTERVAL)),
        tag,
        quarantine,
        tempfail,
        reject,
        subject_prefix,
        domains: domains.or_else(|| Some(Default::default())),
    }
}

fn fill_firewall(f: RawFirewall, spool_dir: &str) -> RawFirewall {
    use super::firewall::{BanConfig, Offence};
    let defaults = BanConfig::default();
    let mut rules = f.rules.unwrap_or_default();
    for o in Offence::ALL {
        let Some(def) = defaults.rules.get(&o) else { continue };
        let rule = rules.entry(o.as_str().to_string()).or_default();
        rule.count = rule.count.or(Some(def.count));
        rule.window = rule.window.take().or_else(|| secs(def.window));
        rule.ban = rule.ban.take().or_else(|| secs(def.ban));
    }
    RawFirewall {
        enabled: f.enabled.or(Some(d::FIREWALL_ENABLED)),
        dry_run: f.dry_run.or(Some(d::FIREWALL_DRY_RUN)),
        allowlist: f.allowlist.or_else(|| Some(Vec::new())),
        exporter: f.exporter.or_else(|| s(d::FIREWALL_EXPORTER)),
        ipset_name: f.ipset_name.or_else(|| s(d::FIREWALL_IPSET_NAME)),
        nft_table: f.nft_table.or_else(|| s(d::FIREWALL_NFT_TABLE)),
        ports: f.ports.or_else(|| Some(Vec::new())),
        flush_interval: f.flush_interval.or_else(|| s(d::FIREWALL_FLUSH_INTERVAL)),
        store: f.store.or_else(|| in_spool(spool_dir, "bans.json")),
        control_socket: f.control_socket.or_else(|| in_spool(spool_dir, "control.sock")),
        file: f.file.or_else(|| s("")),
        memory: f.memory.or_else(|| s(d::FIREWALL_MEMORY)),
        max_ban: f.max_ban.or_else(|| s(d::FIREWALL_MAX_BAN)),
        aggregate: f.aggregate.or(Some(0)),
        rules: Some(rules),
    }
}

/// [`filled`], with every relative path made relative to `base` (the
/// config file's directory) as the validation does, so the result means
/// the same wherever it is written.
pub fn effective(raw: RawConfig, base: &Path) -> RawConfig {
    resolved(filled(raw), base)
}

fn resolved(mut r: RawConfig, base: &Path) -> RawConfig {
    let path = |p: &mut Option<String>| {
        if let Some(v) = p.as_mut()
            && !v.is_empty()
        {
            *v = super::resolve(base, v).to_string_lossy().into_owned();
        }
    };
    let hop = |p: &mut Option<String>| {
        if let Some(v) = p.as_mut()
            && !v.starts_with("lmtp://")
            && let Some(rest) = v.strip_prefix("lmtp:").or_else(|| v.strip_prefix("unix:"))
            && !rest.is_empty()
        {
            *v = format!("lmtp:{}", super::resolve(base, rest).display());
        }
    };
    if let Some(t) = r.tls.as_mut() {
        path(&mut t.cert);
        path(&mut t.key);
    }
    hop(&mut r.relay.next_hop);
    hop(&mut r.relay.bounce_next_hop);
    path(&mut r.relay.tls_ca_file);
    for route in r.relay.routes.values_mut() {
        match route {
            RawRoute::Url(url) => {
                let mut u = Some(std::mem::take(url));
                hop(&mut u);
                *url = u.unwrap_or_default();
            }
            RawRoute::Table(t) => {
                hop(&mut t.next_hop);
                path(&mut t.tls_ca_file);
            }
        }
    }
    path(&mut r.recipients.table);
    path(&mut r.spool.dir);
    if !matches!(r.log.events.as_deref(), Some("log" | "stdout")) {
        path(&mut r.log.events);
    }
    path(&mut r.greylist.state);
    path(&mut r.scan.quarantine_dir);
    path(&mut r.spam.rules_dir);
    path(&mut r.spam.bayes_model);
    path(&mut r.firewall.store);
    path(&mut r.firewall.control_socket);
    path(&mut r.firewall.file);
    r
}

/// The configuration as TOML: every section in the order of the file.
pub fn to_toml(raw: &RawConfig) -> String {
    toml::to_string(raw).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
}

/// The keys of `file` (as written) whose value differs from what leaving
/// them out would give, as `dotted.key = value` lines (TOML, so the output
/// is itself a configuration; paths as in [`effective`]). A key equal to
/// its default is left out.
pub fn changed(file: &RawConfig, base: &Path) -> Vec<String> {
    let table = |raw: &RawConfig| toml::Table::try_from(raw).unwrap_or_default();
    let full = leaves(&table(&effective(file.clone(), base)));
    let written = table(file);
    let mut out = Vec::new();
    for (path, _) in leaves(&written) {
        let Some(value) = full.iter().find(|(p, _)| *p == path).map(|(_, v)| v) else {
            continue;
        };
        // What the key would be if it were left out.
        let mut without = written.clone();
        remove(&mut without, &path);
        let default = without
            .try_into::<RawConfig>()
            .ok()
            .map(|r| leaves(&table(&effective(r, base))))
            .and_then(|f| f.into_iter().find(|(p, _)| *p == path).map(|(_, v)| v));
        if default.as_ref() != Some(value) {
            out.push(format!("{} = {}", dotted(&path), value));
        }
    }
    out
}

/// Every value that is not a table, with its path.
fn leaves(t: &toml::Table) -> Vec<(Vec<String>, toml::Value)> {
    let mut out = Vec::new();
    for (k, v) in t {
        match v {
            toml::Value::Table(inner) => {
                for (mut p, v) in leaves(inner) {
                    p.insert(0, k.clone());
                    out.push((p, v));
                }
            }
            v => out.push((vec![k.clone()], v.clone())),
        }
    }
    out
}

fn remove(t: &mut toml::Table, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            t.remove(last);
        }
        [first, rest @ ..] => {
            if let Some(toml::Value::Table(inner)) = t.get_mut(first) {
                remove(inner, rest);
            }
        }
    }
}

/// `spam.domains."example.org".tag`: a segment that is not a bare key is
/// quoted.
fn dotted(path: &[String]) -> String {
    let bare = |k: &str| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    path.iter()
        .map(|k| {
            if bare(k) {
                k.clone()
            } else {
                toml::Value::String(k.clone()).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests;
