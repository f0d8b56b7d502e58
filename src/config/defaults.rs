//! Every default of the configuration, in one place: what a key is when
//! the file leaves it out. `raw.rs` documents each key, and
//! `deploy/sluice.example.toml` shows them; this is what the code uses.
//! (Composite defaults, the ban rules and the spam thresholds, are the
//! `Default` of their types: `firewall::BanConfig`, `spam::SpamConfig`.)

// [callahead]
/// `callahead.max_concurrent`
pub const CALLAHEAD_MAX_CONCURRENT: u64 = 8;
/// `callahead.max_per_second`
pub const CALLAHEAD_MAX_PER_SECOND: u32 = 50;
/// `callahead.negative_ttl`
pub const CALLAHEAD_NEGATIVE_TTL: &str = "3h";
/// `callahead.pool_size`
pub const CALLAHEAD_POOL_SIZE: u64 = 4;
/// `callahead.positive_ttl`
pub const CALLAHEAD_POSITIVE_TTL: &str = "7d";
/// `callahead.probes_per_client`
pub const CALLAHEAD_PROBES_PER_CLIENT: u32 = 20;

// [clamd]
/// `clamd.health_interval`
pub const CLAMD_HEALTH_INTERVAL: &str = "5s";
/// `clamd.max_concurrent`
pub const CLAMD_MAX_CONCURRENT: u64 = 8;
/// `clamd.max_size`
pub const CLAMD_MAX_SIZE: u64 = 26_214_400;
/// `clamd.stream`
pub const CLAMD_STREAM: bool = true;
/// `clamd.timeout`
pub const CLAMD_TIMEOUT: &str = "30s";

// [dns]
/// `dns.min_ttl`
pub const DNS_MIN_TTL: &str = "60s";
/// `dns.budget`
pub const DNS_BUDGET: &str = "5s";
/// `dns.health_window`
pub const DNS_HEALTH_WINDOW: &str = "60s";
/// `dns.health_min_queries`
pub const DNS_HEALTH_MIN_QUERIES: u32 = 20;
/// `dns.health_failing_ratio`
pub const DNS_HEALTH_FAILING_RATIO: f64 = 0.5;
/// `dns.negative_ttl`
pub const DNS_NEGATIVE_TTL: &str = "60s";
/// `dns.timeout`
pub const DNS_TIMEOUT: &str = "2s";

// [dnsbl]
/// `dnsbl.probe_interval`
pub const DNSBL_PROBE_INTERVAL: &str = "5m";
/// `dnsbl.threshold`
pub const DNSBL_THRESHOLD: i64 = 1;

// [firewall]
/// `firewall.exporter`
pub const FIREWALL_EXPORTER: &str = "none";
/// `firewall.flush_interval`
pub const FIREWALL_FLUSH_INTERVAL: &str = "50ms";
/// `firewall.ipset_name`
pub const FIREWALL_IPSET_NAME: &str = "sluice";
/// `firewall.max_ban`
pub const FIREWALL_MAX_BAN: &str = "7d";
/// `firewall.memory`
pub const FIREWALL_MEMORY: &str = "24h";
/// `firewall.nft_table`
pub const FIREWALL_NFT_TABLE: &str = "sluice";

// [milter]
/// `milter.listen`
pub const MILTER_LISTEN: &[&str] = &["127.0.0.1:8891"];
/// `milter.timeout`
pub const MILTER_TIMEOUT: &str = "10m";
/// `milter.max_connections`
pub const MILTER_MAX_CONNECTIONS: u64 = 1000;

// [cluster]
/// `cluster.prefix`
pub const CLUSTER_PREFIX: &str = "sluice:";
/// `cluster.timeout`
pub const CLUSTER_TIMEOUT: &str = "50ms";

// [greylist]
/// `greylist.on_store_failure`
pub const GREYLIST_ON_STORE_FAILURE: &str = "open";
/// `greylist.auto_allowlist_after`
pub const GREYLIST_AUTO_ALLOWLIST_AFTER: u32 = 5;
/// `greylist.delay`
pub const GREYLIST_DELAY: &str = "300s";
/// `greylist.max_age`
pub const GREYLIST_MAX_AGE: &str = "35d";
/// `greylist.retry_window`
pub const GREYLIST_RETRY_WINDOW: &str = "2d";

// [limits]
/// `limits.per_ip_connection_rate`
pub const LIMITS_PER_IP_CONNECTION_RATE: u32 = 0;
/// `limits.per_ip_connections`
pub const LIMITS_PER_IP_CONNECTIONS: u32 = 0;
/// `limits.per_ip_message_rate`
pub const LIMITS_PER_IP_MESSAGE_RATE: u32 = 0;
/// `limits.per_ip_recipient_rate`
pub const LIMITS_PER_IP_RECIPIENT_RATE: u32 = 0;
/// `limits.tarpit_after_errors`
pub const LIMITS_TARPIT_AFTER_ERRORS: u32 = 10;
/// `limits.tarpit_delay`
pub const LIMITS_TARPIT_DELAY: &str = "1s";

// [log]
/// `log.level`
pub const LOG_LEVEL: &str = "info";

// [metrics]
/// `metrics.listen`
pub const METRICS_LISTEN: &str = "127.0.0.1:9425";
/// `metrics.probe_timeout`
pub const METRICS_PROBE_TIMEOUT: &str = "2s";

// [policy]
/// `policy.greet_delay`
pub const POLICY_GREET_DELAY: &str = "0s";
/// `policy.reject_early_talkers`
pub const POLICY_REJECT_EARLY_TALKERS: bool = true;

// [policy_server]
/// `policy_server.listen`
pub const POLICY_SERVER_LISTEN: &[&str] = &["127.0.0.1:10023"];
/// `policy_server.idle_timeout`
pub const POLICY_SERVER_IDLE_TIMEOUT: &str = "10m";
/// `policy_server.check_timeout`
pub const POLICY_SERVER_CHECK_TIMEOUT: &str = "10s";
/// `policy_server.max_request_size`
pub const POLICY_SERVER_MAX_REQUEST_SIZE: u64 = 16384;
/// `policy_server.max_attributes`
pub const POLICY_SERVER_MAX_ATTRIBUTES: u64 = 100;

// [recipients]
/// `recipients.domains`
pub const RECIPIENTS_DOMAINS: &[&str] = &["example.com"];
/// `recipients.reload_interval`
pub const RECIPIENTS_RELOAD_INTERVAL: &str = "2s";
/// `recipients.table`: next to the configuration file (relative paths
/// resolve against its directory), so /etc/sluice/recipients.
pub const RECIPIENTS_TABLE: &str = "recipients";

// [relay]
/// `relay.command_timeout`
pub const RELAY_COMMAND_TIMEOUT: &str = "300s";
/// `relay.concurrency`
pub const RELAY_CONCURRENCY: u64 = 20;
/// `relay.connect_timeout`
pub const RELAY_CONNECT_TIMEOUT: &str = "30s";
/// `relay.data_timeout`
pub const RELAY_DATA_TIMEOUT: &str = "600s";
/// `relay.idle_timeout`
pub const RELAY_IDLE_TIMEOUT: &str = "10s";
/// `relay.max_messages_per_connection`
pub const RELAY_MAX_MESSAGES_PER_CONNECTION: u64 = 1000;
/// `relay.max_queue_age`
pub const RELAY_MAX_QUEUE_AGE: &str = "5d";
/// `relay.mx_port`
pub const RELAY_MX_PORT: u16 = 25;
/// `relay.next_hop`
pub const RELAY_NEXT_HOP: &str = "smtp://127.0.0.1:10025";
/// `relay.retry_initial`
pub const RELAY_RETRY_INITIAL: &str = "60s";
/// `relay.retry_max`
pub const RELAY_RETRY_MAX: &str = "1h";
/// `relay.tls`
pub const RELAY_TLS: &str = "none";
/// `relay.forward_client`
pub const RELAY_FORWARD_CLIENT: &str = "auto";
/// `relay.tls_ca_file`
pub const RELAY_TLS_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

// [scan]
/// `scan.archive_max_depth`
pub const SCAN_ARCHIVE_MAX_DEPTH: u64 = 8;
/// `scan.archive_max_entries`
pub const SCAN_ARCHIVE_MAX_ENTRIES: u64 = 10_000;
/// `scan.archive_max_size`
pub const SCAN_ARCHIVE_MAX_SIZE: u64 = 100 << 20;
/// `scan.archive_member_scan_size`
pub const SCAN_ARCHIVE_MEMBER_SCAN_SIZE: u64 = 16 << 20;
/// `scan.banned_in_archives`
pub const SCAN_BANNED_IN_ARCHIVES: bool = true;
/// `scan.latency_budget`
pub const SCAN_LATENCY_BUDGET: &str = "20s";
/// `scan.max_decoded_size`
pub const SCAN_MAX_DECODED_SIZE: u64 = 64 << 20;
/// `scan.max_depth`
pub const SCAN_MAX_DEPTH: u64 = 8;
/// `scan.max_held`
pub const SCAN_MAX_HELD: u64 = 100_000;
/// `scan.max_parts`
pub const SCAN_MAX_PARTS: u64 = 1000;
/// `scan.on_failure`
pub const SCAN_ON_FAILURE: &str = "tempfail";
/// `scan.retry`
pub const SCAN_RETRY: &str = "1m";
/// `scan.scanner_unrar`
pub const SCAN_SCANNER_UNRAR: bool = false;
/// `scan.unscannable`
pub const SCAN_UNSCANNABLE: &str = "quarantine";
/// `scan.unscannable_trusted`
pub const SCAN_UNSCANNABLE_TRUSTED: &str = "accept";

// [server]
/// `server.listen`
pub const SERVER_LISTEN: &[&str] = &["127.0.0.1:2525"];
/// `server.proxy_timeout`
pub const SERVER_PROXY_TIMEOUT: &str = "3s";
/// `server.max_command_line`
pub const SERVER_MAX_COMMAND_LINE: u64 = 4096;
/// `server.body_memory`
pub const SERVER_BODY_MEMORY: u64 = 32 << 20;
/// `server.check_memory`
pub const SERVER_CHECK_MEMORY: u64 = 24 << 20;
/// `server.max_connections`
pub const SERVER_MAX_CONNECTIONS: u64 = 10_000;
/// `server.max_errors`
pub const SERVER_MAX_ERRORS: u64 = 20;
/// `server.max_header_size`
pub const SERVER_MAX_HEADER_SIZE: u64 = 262_144;
/// `server.max_line_length`
pub const SERVER_MAX_LINE_LENGTH: u64 = 8192;
/// `server.max_message_size`
pub const SERVER_MAX_MESSAGE_SIZE: u64 = 26_214_400;
/// `server.max_received_headers`
pub const SERVER_MAX_RECEIVED_HEADERS: u64 = 50;
/// `server.max_recipients`
pub const SERVER_MAX_RECIPIENTS: u64 = 100;

// [spam]
/// `spam.part_scan_size` (`spam::view::PART_SCAN`)
pub const SPAM_PART_SCAN_SIZE: usize = 50_000;
/// `spam.bayes_min_messages`, and the least it may be: below this many
/// spam and ham a model's counts say nothing (`spam::bayes::MIN_MESSAGES`).
pub const SPAM_BAYES_MIN_MESSAGES: u32 = 10;
/// `spam.auth_timeout`
pub const SPAM_AUTH_TIMEOUT: &str = "5s";
/// `spam.reload_interval`
pub const SPAM_RELOAD_INTERVAL: &str = "5s";

// [spool]
/// `spool.dir`
pub const SPOOL_DIR: &str = "/var/spool/sluice";
/// `spool.fsync`
pub const SPOOL_FSYNC: bool = true;
/// `spool.min_free` (bytes)
pub const SPOOL_MIN_FREE: u64 = 64 << 20;
/// `spool.segment_size`
pub const SPOOL_SEGMENT_SIZE: u64 = 64 << 20;

// [timeouts]
/// `timeouts.command`
pub const TIMEOUTS_COMMAND: &str = "300s";
/// `timeouts.data_min_rate` (bytes per second)
pub const TIMEOUTS_DATA_MIN_RATE: u64 = 500;
/// `timeouts.message`
pub const TIMEOUTS_MESSAGE: &str = "1h";
/// `timeouts.data`
pub const TIMEOUTS_DATA: &str = "180s";
/// `timeouts.idle`
pub const TIMEOUTS_IDLE: &str = "300s";
/// `timeouts.shutdown_grace`
pub const TIMEOUTS_SHUTDOWN_GRACE: &str = "30s";

// [stress]

/// `stress.sessions_ratio`
pub const STRESS_SESSIONS_RATIO: f64 = 0.8;
/// `stress.timeout` (Postfix's smtpd_timeout under stress)
pub const STRESS_TIMEOUT: &str = "10s";
/// `stress.max_errors`
pub const STRESS_MAX_ERRORS: u32 = 3;
/// `stress.tarpit_after_errors`
pub const STRESS_TARPIT_AFTER_ERRORS: u32 = 1;
/// `stress.min_duration`
pub const STRESS_MIN_DURATION: &str = "30s";
/// `stress.check_interval`
pub const STRESS_CHECK_INTERVAL: &str = "250ms";

// Switches and words, used by the validation and by `sluice config`.

/// `callahead.enabled`
pub const CALLAHEAD_ENABLED: bool = false;
/// `firewall.enabled`
pub const FIREWALL_ENABLED: bool = true;
/// `firewall.dry_run`
pub const FIREWALL_DRY_RUN: bool = false;
/// `greylist.enabled`
pub const GREYLIST_ENABLED: bool = false;
/// `helo.*` (each check)
pub const HELO_ACTION: &str = "off";
/// `log.format`
pub const LOG_FORMAT: &str = "text";
/// `log.events`
pub const LOG_EVENTS: &str = "log";
/// `metrics.enabled`
pub const METRICS_ENABLED: bool = true;
/// `stress.enabled`
pub const STRESS_ENABLED: bool = true;
/// `scan.ambiguous_mime`
pub const SCAN_AMBIGUOUS_MIME: &str = "scan-all";
/// `scan.unknown_encoding`
pub const SCAN_UNKNOWN_ENCODING: &str = "reject";
/// `spam.enabled`
pub const SPAM_ENABLED: bool = true;

/// Where relative paths resolve when no configuration file is given (the
/// directory of `/etc/sluice/sluice.toml`): the built-in defaults describe
/// an installed system.
pub const CONFIG_DIR: &str = "/etc/sluice";
