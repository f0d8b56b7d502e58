//! What a reload cannot change: settings bound to sockets, files and
//! budgets made once at start. [`carry_over`] keeps their running values
//! in a freshly loaded configuration and names the keys that changed, so a
//! reload says "needs a restart" instead of silently ignoring them.

use super::Config;

/// Keys (or sections) whose change needs a restart.
pub const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.max_connections",
    "server.body_memory",
    "server.check_memory",
    "spool",
    "metrics",
    "log.json",
    "log.events",
    "stress",
    "dns.health_window, dns.health_min_queries, dns.health_failing_ratio",
    "relay.concurrency",
    "relay.retry_initial",
    "relay.retry_max",
    "relay.max_queue_age",
    "relay.double_bounce_to",
    "scan.quarantine_dir",
    "greylist.state",
    "firewall (on/off, exporter, ports, store, control socket, dry_run)",
    "cluster",
    "policy_server",
    "milter",
];

/// Copies the restart-only settings of `running` into `new`; returns the
/// keys whose value differed (they keep the running value until restart).
pub fn carry_over(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    // Compared by their printed form: every config type is Debug, and two
    // values print alike exactly when they are alike.
    macro_rules! keep {
        ($key:expr, $($field:tt)+) => {
            if format!("{:?}", running.$($field)+) != format!("{:?}", new.$($field)+) {
                changed.push($key);
                new.$($field)+ = running.$($field)+.clone();
            }
        };
    }
    keep!(RESTART_ONLY[0], server.listen);
    keep!(RESTART_ONLY[1], server.max_connections);
    keep!(RESTART_ONLY[2], server.body_memory);
    keep!(RESTART_ONLY[3], server.check_memory);
    keep!(RESTART_ONLY[4], spool);
    keep!(RESTART_ONLY[5], metrics);
    keep!(RESTART_ONLY[6], log.json);
    keep!(RESTART_ONLY[7], log.events);
    keep!(RESTART_ONLY[8], stress);
    keep!(RESTART_ONLY[9], dns.health);
    keep!(RESTART_ONLY[10], relay.concurrency);
    keep!(RESTART_ONLY[11], relay.retry_initial);
    keep!(RESTART_ONLY[12], relay.retry_max);
    keep!(RESTART_ONLY[13], relay.max_queue_age);
    keep!(RESTART_ONLY[14], relay.double_bounce_to);
    keep!(RESTART_ONLY[15], scan.quarantine_dir);
    if let (Some(old), Some(g)) = (&running.greylist, new.greylist.as_mut())
        && old.state != g.state
    {
        changed.push(RESTART_ONLY[16]);
        g.state = old.state.clone();
    }
    // The ban rules and allowlist reload; the rest of [firewall] does not.
    let bans = new.firewall.as_ref().map(|f| f.bans.clone());
    let mut same = running.firewall.clone();
    if let (Some(f), Some(b)) = (same.as_mut(), bans) {
        f.bans = b;
    }
    if format!("{same:?}") != format!("{:?}", new.firewall) {
        changed.push(RESTART_ONLY[17]);
        new.firewall = same.filter(|_| running.firewall.is_some());
    }
    keep!(RESTART_ONLY[18], cluster);
    keep!(RESTART_ONLY[19], policy_server);
    keep!(RESTART_ONLY[20], milter);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        Config::from_toml(extra, Path::new("/tmp")).expect("valid")
    }

    #[test]
    fn a_changed_listen_address_is_named_and_keeps_its_running_value() {
        let running = config("[server]\nlisten = [\"127.0.0.1:2525\"]\n");
        let mut new = config("[server]\nlisten = [\"127.0.0.1:2600\"]\nmax_errors = 3\n");
        assert_eq!(carry_over(&running, &mut new), vec!["server.listen"]);
        assert_eq!(new.server.listen, running.server.listen);
        assert_eq!(new.server.max_errors, 3, "a reloadable key takes its new value");
    }

    #[test]
    fn a_policy_or_milter_process_reloads_its_file_without_naming_the_listeners_it_left_out() {
        let file = "[server]\nlisten = [\"127.0.0.1:2525\"]\n[milter]\nlisten = [\"127.0.0.1:8891\"]\n";
        for role in [Role::Policy, Role::Milter] {
            let mut running = config(file);
            running.narrow(role);
            assert!(running.server.listen.is_empty(), "{role:?}");
            // The file as it is read again: narrowed as the running one was.
            let mut new = config(file);
            new.narrow(running.role);
            assert!(carry_over(&running, &mut new).is_empty(), "{role:?}");
            // Not narrowed, the same file would look like a change of listeners.
            let mut raw = config(file);
            assert!(carry_over(&running, &mut raw).contains(&"server.listen"), "{role:?}");
        }
    }

    #[test]
    fn thresholds_and_lists_are_not_restart_only() {
        let running = config("");
        let mut new = config("[dnsbl]\nzones = [\"bl.test\"]\n[limits]\nper_ip_connections = 2\n");
        assert!(carry_over(&running, &mut new).is_empty());
    }
}
