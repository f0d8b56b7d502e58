//! The session over an in-memory stream (no sockets), with the in-memory
//! spool: the paths that need a fault injected.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::delivery::queue::QueueHandle;
use crate::spool::mem::MemSpool;

struct Harness {
    /// Holds `incoming/`, where bodies over 4 KiB go while they arrive.
    _incoming: tempfile::TempDir,
    spool: Arc<MemSpool>,
    queued: tokio::sync::mpsc::UnboundedReceiver<crate::spool::Stored>,
    client: BufReader<DuplexStream>,
}

impl Harness {
    async fn start() -> Harness {
        let config = Config::from_toml(
            "[server]\nhostname = \"mx.test.example\"",
            Path::new(env!("CARGO_MANIFEST_DIR")),
        )
        .unwrap();
        let spool = Arc::new(MemSpool::default());
        let incoming = tempfile::tempdir().unwrap();
        let (queue, queued) = QueueHandle::detached();
        let events = EventBus::new(64);
        let pipeline = Arc::new(crate::pipeline::Pipeline {
            limits: crate::pipeline::HeaderLimits {
                max_header_size: config.server.max_header_size,
                max_received_headers: config.server.max_received_headers,
            },
            min_free: 0,
            content: None,
            deferred: None,
            spam: None,
            spool: spool.clone(),
            check_memory: crate::spool::incoming::BodyBudget::new(config.server.check_memory),
            incoming: Some(Arc::new(
                crate::spool::incoming::IncomingDir::open(incoming.path(), 0)
                    .unwrap()
                    .with_floor(4096),
            )),
            queue,
            quarantine: Arc::new(crate::quarantine::Quarantine::new("/nonexistent/quarantine")),
            events: events.clone(),
        });
        let config_stress = config.stress.clone();
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            checks: CheckChain::default(),
            pipeline,
            events,
            tls: None,
            shutdown: CancellationToken::new(),
            session_seq: Arc::new(AtomicU64::new(1)),
            message_seq: Arc::new(AtomicU64::new(0)),
            filters: Vec::new(),
            stress: Arc::new(crate::policy::stress::Stress::new(config_stress)),
        });
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        tokio::spawn(async move {
            let mut s = Session::new(shared, peer);
            s.run(server, true).await
        });
        let mut h = Harness {
            _incoming: incoming,
            spool,
            queued,
            client: BufReader::new(client),
        };
        h.expect("220 mx.test.example").await;
        h
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.client.get_mut().write_all(bytes).await.unwrap();
    }

    async fn expect(&mut self, prefix: &str) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            assert!(
                self.client.read_line(&mut line).await.unwrap() > 0,
                "closed; got {all:?}"
            );
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        let last = all.trim_end().rsplit('\n').next().unwrap_or("").to_string();
        assert!(last.starts_with(prefix), "expected {prefix:?}, got {all:?}");
        all
    }

    async fn cmd(&mut self, line: &str, prefix: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.expect(prefix).await
    }
}

#[tokio::test]
async fn spool_failure_gives_451_never_250() {
    let mut h = Harness::start().await;
    h.spool.fail.store(true, Ordering::Relaxed);
    h.cmd("EHLO client.example", "250").await;
    h.cmd("MAIL FROM:<a@client.example>", "250").await;
    h.cmd("RCPT TO:<anyone@example.com>", "250").await;
    h.cmd("DATA", "354").await;
    h.send(b"Subject: x\r\n\r\nbody\r\n.\r\n").await;
    h.expect("451 4.3.0").await;
    assert!(h.queued.try_recv().is_err(), "nothing queued");
    // The session goes on; once the spool works again, mail is accepted.
    h.spool.fail.store(false, Ordering::Relaxed);
    h.cmd("MAIL FROM:<a@client.example>", "250").await;
    h.cmd("RCPT TO:<anyone@example.com>", "250").await;
    h.cmd("DATA", "354").await;
    h.send(b"Subject: x\r\n\r\nbody\r\n.\r\n").await;
    h.expect("250 2.0.0 Ok: queued as").await;
    assert!(h.queued.try_recv().is_ok());
}

#[tokio::test]
async fn stored_body_is_trace_header_plus_exact_client_bytes() {
    let mut h = Harness::start().await;
    h.cmd("HELO old.client.example", "250").await;
    h.cmd("MAIL FROM:<>", "250").await;
    h.cmd("RCPT TO:<a@example.com>", "250").await;
    h.cmd("RCPT TO:<b@example.com>", "250").await;
    h.cmd("DATA", "354").await;
    h.send(b"Subject: x\r\n\r\n..stuffed\r\n.\r\n").await;
    h.expect("250").await;
    let stored = h.spool.stored.lock().unwrap().clone();
    let (env, body) = &stored[0];
    assert_eq!(env.mail_from, None);
    assert_eq!(env.rcpts.len(), 2);
    assert_eq!(env.client_ip.to_string(), "192.0.2.7");
    let text = String::from_utf8_lossy(body);
    // HELO (not EHLO) is plain SMTP; two recipients: no "for" clause.
    assert!(
        text.starts_with(
            "Received: from old.client.example ([192.0.2.7])\r\n\tby mx.test.example (sluice) with SMTP id "
        ),
        "{text}"
    );
    assert!(!text.contains("\tfor <"), "{text}");
    assert!(text.ends_with("\r\nSubject: x\r\n\r\n.stuffed\r\n"), "{text}");
}

#[tokio::test]
async fn data_after_bdat_and_other_sequence_replies() {
    let mut h = Harness::start().await;
    h.cmd("EHLO client.example", "250").await;
    h.cmd("MAIL FROM:<a@client.example>", "250").await;
    h.cmd("RCPT TO:<x@example.com>", "250").await;
    h.send(b"BDAT 3\r\nabc").await;
    h.expect("250 2.0.0 3 octets").await;
    h.cmd("DATA", "503 5.5.1 DATA not allowed after BDAT").await;
    h.send(b"BDAT 2 LAST\r\nde").await;
    h.expect("250 2.0.0 Ok").await;
    assert!(h.spool.stored.lock().unwrap()[0].1.ends_with(b"abcde"));
    h.cmd("HELP", "214").await;
    h.cmd("EXPN list", "502 5.5.1").await;
    h.cmd("QUIT", "221 2.0.0").await;
}
