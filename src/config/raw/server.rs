//! `[server]` (listeners), `[timeouts]`, `[tls]`, `[stress]`, and the
//! process's own `[log]` and `[metrics]` listener.

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStress {
    /// Stress mode on when the relay nears its limits. Default true.
    pub enabled: Option<bool>,
    /// Share of `server.max_connections` open at which it turns on. Default 0.8.
    pub sessions_ratio: Option<f64>,
    /// Every timeout (idle, command, data) is at most this. Default "10s".
    pub timeout: Option<String>,
    /// `server.max_errors` under stress. Default 3.
    pub max_errors: Option<u32>,
    /// `limits.tarpit_after_errors` under stress. Default 1.
    pub tarpit_after_errors: Option<u32>,
    /// It stays on at least this long. Default "30s".
    pub min_duration: Option<String>,
    /// How often the load is looked at. Default "250ms".
    pub check_interval: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Addresses to listen on: `"IP:port"`, or a table
    /// `{ address = "IP:port", proxy_protocol = true }` for a listener behind
    /// a load balancer that sends the PROXY protocol (v1 or v2) header.
    /// Default `["127.0.0.1:2525"]`.
    pub listen: Option<Vec<RawListen>>,
    /// Name used in the banner, the EHLO reply and Received headers.
    /// Default: the machine's host name.
    pub hostname: Option<String>,
    /// Largest message accepted, octets; advertised as SIZE. Default 26214400 (25 MiB).
    pub max_message_size: Option<u64>,
    /// Recipients per transaction; beyond this RCPT gets 452 4.5.3. Default 100.
    pub max_recipients: Option<u64>,
    /// Concurrent client sessions; beyond this a client gets 421 4.7.0. Default 10000.
    pub max_connections: Option<u64>,
    /// Longest command line, octets without CRLF. Default 4096.
    pub max_command_line: Option<u64>,
    /// Longest message line, octets without CRLF; longer gets 552 5.3.4. Default 8192.
    pub max_line_length: Option<u64>,
    /// Largest header section, octets; larger gets 552 5.3.4. Default 262144.
    pub max_header_size: Option<u64>,
    /// Received headers allowed before the message is treated as a loop
    /// (554 5.4.6). Default 50 (as Postfix's hopcount_limit).
    pub max_received_headers: Option<u64>,
    /// Protocol errors a session may make before 421 and disconnect. Default 20.
    pub max_errors: Option<u64>,
    /// Octets of arriving message bodies all sessions together hold in
    /// memory; beyond this (and an 8 KiB floor per session) a body goes to
    /// a file under the spool's `incoming/`. Default 33554432 (32 MiB).
    pub body_memory: Option<u64>,
    /// Memory for whole message bodies, in octets: a message is checked
    /// at the end of DATA once twice its size fits (one larger than half
    /// of this waits for all of it), and delivery holds a body's size while
    /// it sends one read back from the spool, so many large bodies take
    /// turns. Default 25165824 (24 MiB).
    pub check_memory: Option<u64>,
    /// The load balancers (addresses or CIDR networks) allowed to connect
    /// to a `proxy_protocol` listener; a connection from anywhere else on
    /// such a listener is refused. Default `[]`.
    pub proxy_from: Option<Vec<String>>,
    /// How long a load balancer has to send the PROXY header after it
    /// connects. Default "3s".
    pub proxy_timeout: Option<String>,
}

/// One `server.listen` entry: an address, or a table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawListen {
    Address(String),
    Table(RawListenTable),
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenTable {
    /// Required: "IP:port".
    pub address: Option<String>,
    /// Connections carry a PROXY protocol header first (from
    /// `server.proxy_from` only). Default false.
    pub proxy_protocol: Option<bool>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    /// Waiting for the next command inside a transaction, and the longest
    /// a command line may take from its first octet to its end (a client
    /// trickling one byte at a time gets no more). Default "300s"
    /// (RFC 5321 §4.5.3.2.7).
    pub command: Option<String>,
    /// Waiting for the next command outside a transaction (after connect or
    /// after a finished message). Default "300s".
    pub idle: Option<String>,
    /// Waiting for the next block of DATA/BDAT octets. Default "180s".
    pub data: Option<String>,
    /// The least average rate of a message's octets, in bytes per second,
    /// after `data` of grace (Postfix's `smtpd_min_data_rate`): each octet
    /// received extends the deadline by 1/rate. 0 turns it off. Default 500.
    pub data_min_rate: Option<u64>,
    /// The longest a message (DATA, or every BDAT chunk) may take from its
    /// first octet to its last. Default "1h".
    pub message: Option<String>,
    /// After SIGTERM/SIGINT: how long sessions mid-DATA and in-flight
    /// deliveries may take to finish. Default "30s".
    pub shutdown_grace: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain. Re-read when it changes on disk. Required
    /// when `[tls]` is present.
    pub cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Required when `[tls]` is
    /// present.
    pub key: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// "error", "warn", "info", "debug" or "trace" (RUST_LOG overrides). Default "info".
    pub level: Option<String>,
    /// "text" or "json". Default "text".
    pub format: Option<String>,
    /// Where the event log (one JSON line per decision) goes: "log" (the
    /// human log above, target `sluice::event`), "stdout", or a file path
    /// (appended; reopened on SIGUSR1 for logrotate). Default "log".
    pub events: Option<String>,
}

/// The metrics listener: `/metrics` (Prometheus), `/healthz`, `/readyz`,
/// the status page `/` and `/api/status`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Default true.
    pub enabled: Option<bool>,
    /// Address to listen on; keep it private. Default "127.0.0.1:9425".
    pub listen: Option<String>,
    /// How long `/readyz` waits for each probe (next hop, clamd). Default "2s".
    pub probe_timeout: Option<String>,
}
