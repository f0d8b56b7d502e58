//! The single integration test binary (one link, shared harness).

mod util;

mod archive; // names inside generated archives; scan.unscannable with a real clamd
mod auth; // SPF, DKIM, DMARC against a real DNS server
mod balancer; // behind a real HAProxy: PROXY protocol v2, the client's address in every event, httpchk /healthz
mod cli; // check-config / serve exit codes, default config
mod cluster; // [cluster]: two nodes sharing a real redis-server (greylisting, rates, the store killed and restarted)
mod delivery; // relay to a recording sink: byte-exact, retry, DSN, LMTP
mod dialogue; // SMTP conversations against the real server
mod e2e; // real next hops: smtp-sink, Postfix, Dovecot LMTP; the corpora
mod firewall; // nftables batches in a real kernel set (network namespace)
mod front; // in front of a real Postfix and Dovecot: drift, DSNs, XFORWARD/XCLIENT, routes, STARTTLS
mod metrics; // /metrics scrape after real traffic, promtool, event log, health, sluice check, status page in Chromium
mod milter; // [milter] behind a real Postfix: EICAR/GTUBE refused in Postfix's session, headers added, hold queue, sluice stopped
mod nexthop; // next-hop client conformance against a scripted server
mod policy; // pre-DATA checks against a real DNS server (DNSBL, RHSBL, allowlist)
mod postfix_policy; // sluice as the policy server (check_policy_service) of a real Postfix: unknown user, DNSBL, greylisting, rates, SPF, bans (nft set in a netns), sluice stopped
mod queue; // sluice queue list/hold/delete/flush/release against the running binary
mod regression; // one test per fixed bug, named by what broke, with the commit that fixed it
mod reload; // sluice reload and SIGHUP under open sessions: thresholds, DNS lists, restart-only keys
mod restart; // durability: kill -9, restart, SIGTERM
mod scan; // virus scanning against a real clamd
mod service; // Type=notify readiness and the watchdog; the man pages
mod spam; // the statistical classifier on the SpamAssassin sample; sluice learn
mod spamfilter; // spam actions in the session, per-domain thresholds, rule reload
mod tls; // STARTTLS
mod trace; // sluice trace against the running binary: greylisted, accepted, scored, delivered; still queued
