//! STARTTLS with rustls: the session moves into TLS, plaintext pipelined
//! after STARTTLS is discarded, and a new certificate on disk is used
//! without a restart.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::util::*;

struct Cert {
    der: CertificateDer<'static>,
}

fn write_cert(dir: &std::path::Path) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["mx.test.example".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    Cert {
        der: ck.cert.der().clone(),
    }
}

async fn tls_relay(sink: &Sink) -> (TestRelay, Cert) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let cert = write_cert(dir.path());
    let toml = format!(
        "{}\n[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n",
        base_toml(&sink.next_hop())
    );
    (TestRelay::start_in(dir, &toml, |_| {}).await, cert)
}

fn connector(trust: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(cfg))
}

async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        tokio::time::timeout(TIMEOUT, r.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

/// Plain connect, EHLO, STARTTLS with `extra` pipelined after it in
/// plaintext; returns the TLS stream after the handshake.
async fn starttls(
    relay: &TestRelay,
    trust: &CertificateDer<'static>,
    extra: &[u8],
) -> BufReader<tokio_rustls::client::TlsStream<TcpStream>> {
    let s = TcpStream::connect(relay.addr).await.unwrap();
    let mut r = BufReader::new(s);
    assert!(read_reply(&mut r).await.starts_with("220"));
    r.get_mut().write_all(b"EHLO client.example\r\n").await.unwrap();
    let ehlo = read_reply(&mut r).await;
    assert!(ehlo.contains("250-STARTTLS") || ehlo.contains("250 STARTTLS"), "{ehlo}");
    let mut pkt = b"STARTTLS\r\n".to_vec();
    pkt.extend_from_slice(extra);
    r.get_mut().write_all(&pkt).await.unwrap();
    assert!(read_reply(&mut r).await.starts_with("220 2.0.0"));
    assert!(r.buffer().is_empty());
    let s = r.into_inner();
    let tls = connector(trust)
        .connect(ServerName::try_from("mx.test.example").unwrap(), s)
        .await
        .expect("TLS handshake");
    BufReader::new(tls)
}

#[tokio::test]
async fn starttls_then_mail_inside_tls() {
    let sink = Sink::start().await;
    let (relay, cert) = tls_relay(&sink).await;
    let mut t = starttls(&relay, &cert.der, b"").await;
    // State was reset: EHLO again, no STARTTLS offered inside TLS.
    t.get_mut()
        .write_all(b"MAIL FROM:<a@client.example>\r\n")
        .await
        .unwrap();
    assert!(read_reply(&mut t).await.starts_with("503 5.5.1"));
    t.get_mut().write_all(b"EHLO client.example\r\n").await.unwrap();
    let ehlo = read_reply(&mut t).await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    t.get_mut().write_all(b"STARTTLS\r\n").await.unwrap();
    assert!(read_reply(&mut t).await.starts_with("503 5.5.1 TLS already active"));
    t.get_mut()
        .write_all(b"MAIL FROM:<a@client.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n")
        .await
        .unwrap();
    assert!(read_reply(&mut t).await.starts_with("250"));
    assert!(read_reply(&mut t).await.starts_with("250"));
    assert!(read_reply(&mut t).await.starts_with("354"));
    t.get_mut().write_all(&dot_stuff(&test_message("tls"))).await.unwrap();
    assert!(read_reply(&mut t).await.starts_with("250 2.0.0"));
    let got = sink.wait_for(1).await;
    assert!(String::from_utf8_lossy(&got[0].data).contains("with ESMTPS id"));
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_discarded() {
    let sink = Sink::start().await;
    let (relay, cert) = tls_relay(&sink).await;
    // A command injection attempt: these must never run inside TLS.
    let mut t = starttls(
        &relay,
        &cert.der,
        b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<user@example.com>\r\n",
    )
    .await;
    t.get_mut().write_all(b"EHLO client.example\r\n").await.unwrap();
    assert!(read_reply(&mut t).await.starts_with("250"));
    t.get_mut().write_all(b"RCPT TO:<user@example.com>\r\n").await.unwrap();
    // No transaction exists: the injected MAIL was not executed.
    assert!(read_reply(&mut t).await.starts_with("503 5.5.1"));
}

#[tokio::test]
async fn certificate_change_on_disk_is_picked_up() {
    let sink = Sink::start().await;
    let (relay, cert1) = tls_relay(&sink).await;
    let t = starttls(&relay, &cert1.der, b"").await;
    assert_eq!(t.get_ref().get_ref().1.peer_certificates().unwrap()[0], cert1.der);
    drop(t);
    // Renewal: new files on disk, no restart.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cert2 = write_cert(relay.dir.path());
    let mut t = starttls(&relay, &cert2.der, b"").await;
    assert_eq!(t.get_ref().get_ref().1.peer_certificates().unwrap()[0], cert2.der);
    t.get_mut().write_all(b"QUIT\r\n").await.unwrap();
    assert!(read_reply(&mut t).await.starts_with("221"));
    // A clean TLS close (close_notify), then EOF.
    let mut rest = Vec::new();
    assert_eq!(t.read_to_end(&mut rest).await.unwrap(), 0);
}
