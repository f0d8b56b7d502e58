//! sluice as the package installs it: `serve` under systemd's notify
//! protocol (Type=notify, WatchdogSec), and the man pages `sluice man`
//! writes for the package.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::util::{TABLE, base_toml, free_port};

/// Waits for the next notification; its lines.
fn next(sock: &UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification from sluice");
    String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string).collect()
}

#[test]
fn serve_notifies_ready_once_the_port_answers_then_feeds_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = base_toml("smtp://127.0.0.1:9").replace(
        "listen = [\"127.0.0.1:0\"]",
        &format!("listen = [\"127.0.0.1:{port}\"]"),
    );
    std::fs::write(dir.path().join("sluice.toml"), toml).unwrap();
    std::fs::write(dir.path().join("recipients"), TABLE).unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["serve", "--config"])
        .arg(dir.path().join("sluice.toml"))
        .env("NOTIFY_SOCKET", &notify)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let ready = next(&sock);
    assert!(ready.contains(&"READY=1".to_string()), "{ready:?}");
    assert!(
        ready.contains(&format!("STATUS=listening on 127.0.0.1:{port}")),
        "{ready:?}"
    );
    // READY=1 means the port answers now: no retry.
    let mut smtp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("port open at READY=1");
    smtp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut greeting = [0u8; 3];
    std::io::Read::read_exact(&mut smtp, &mut greeting).unwrap();
    assert_eq!(&greeting, b"220");

    // WATCHDOG_USEC=200ms: fed every 100 ms.
    let start = Instant::now();
    let mut pings = 0;
    while pings < 4 {
        let msg = next(&sock);
        pings += usize::from(msg.contains(&"WATCHDOG=1".to_string()));
        assert!(start.elapsed() < Duration::from_secs(3), "{pings} pings in 3 s");
    }

    let ok = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    loop {
        let msg = next(&sock);
        if msg.contains(&"STOPPING=1".to_string()) {
            break;
        }
        assert!(msg.contains(&"WATCHDOG=1".to_string()), "{msg:?}");
    }
    drop(smtp);
    assert!(child.wait().unwrap().success());
}

#[test]
fn man_writes_a_page_per_command_and_the_configuration_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    // One page per visible command, at every level.
    let help = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .map_while(|l| l.strip_prefix("  ").and_then(|l| l.split_whitespace().next()))
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 10, "{commands:?}");
    for c in &commands {
        let page = read(&format!("sluice-{c}.8"));
        assert!(page.contains(&format!(".TH SLUICE-{} 8", c.to_uppercase())), "{c}");
        assert!(page.contains("sluice(8)"), "{c}: no SEE ALSO");
    }
    assert!(!commands.contains(&"man"), "the packaging command is hidden");
    assert!(read("sluice-bans-list.8").contains(".SH EXAMPLES"));
    let top = read("sluice.8");
    for s in [".SH FILES", ".SH SIGNALS", ".SH EXIT STATUS", "sluice\\-serve(8)"] {
        assert!(top.contains(s), "sluice.8 lacks {s}");
    }
    // sluice.toml(5): every table of the example, in order.
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/sluice.example.toml")).unwrap();
    let page = read("sluice.toml.5");
    let mut at = 0;
    for table in example.lines().filter(|l| l.starts_with('[')) {
        let found = page[at..].find(&format!("\n.SH {table}\n"));
        at += found.unwrap_or_else(|| panic!("{table} missing or out of order"));
    }
    assert!(page.contains("\n.B listen\n") && page.contains("\n.B next_hop\n"));
    // As lintian checks them: no warning from man/groff.
    if Command::new("man").arg("--version").output().is_ok() {
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            let out = Command::new("man")
                .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
                .arg(&path)
                .env("LC_ALL", "C.UTF-8")
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && err.is_empty(), "{}: {err}", path.display());
        }
    }
}
