//! `sluice queue ...`: the running daemon's queue, as Postfix's
//! `postqueue -p`/`-f` and `postsuper -h`/`-H`/`-d`/`-f`, over its queue socket
//! (`<spool.dir>/queue.sock`).

use std::io::Write as _;

use clap::Subcommand;
use sluice::config::Config;
use sluice::delivery::queue::control::{Bounced, Entry, Request, Response, State, request};

#[derive(Subcommand)]
pub(crate) enum QueueCmd {
    /// One line per message: id, age, size, state, sender, recipients
    /// still to deliver, attempts, next attempt and the last reply
    /// (`postqueue -p`).
    #[command(after_help = "Examples:\n  sluice queue list\n  sluice queue list --json")]
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// The envelope, state, attempts and the message as spooled
    /// (`postcat -q`).
    #[command(after_help = "Example:\n  sluice queue show 6620246496C3E3EB")]
    Show {
        /// The message's id (from `sluice queue list`).
        id: String,
    },
    /// Retries deferred mail now: one message, or all (`postqueue -f`).
    #[command(after_help = "Examples:\n  sluice queue flush\n  sluice queue flush 6620246496C3E3EB")]
    Flush {
        /// The message's id (from `sluice queue list`); all when left out.
        id: Option<String>,
    },
    /// Keeps a message from being tried until released (`postsuper -h`).
    #[command(after_help = "Example:\n  sluice queue hold 6620246496C3E3EB")]
    Hold {
        /// The message's id (from `sluice queue list`).
        id: String,
    },
    /// Releases a held message: it is tried now (`postsuper -H`).
    #[command(after_help = "Example:\n  sluice queue release 6620246496C3E3EB")]
    Release {
        /// The message's id (from `sluice queue list`).
        id: String,
    },
    /// Removes a message from the queue and the spool, without a DSN
    /// (`postsuper -d`).
    #[command(after_help = "Example:\n  sluice queue delete 6620246496C3E3EB")]
    Delete {
        /// The message's id (from `sluice queue list`).
        id: String,
    },
    /// Returns a message to its sender (`postsuper -f`, Postfix 3.5+).
    ///
    /// A failure DSN ("5.0.0 returned by the administrator") for every
    /// recipient still to deliver, then the message is removed. Mail from
    /// the null sender is only deleted (no DSN goes to <>).
    #[command(after_help = "Example:\n  sluice queue bounce 6620246496C3E3EB")]
    Bounce {
        /// The message's id (from `sluice queue list`).
        id: String,
    },
}

pub(crate) async fn queue(config: &Config, action: QueueCmd) -> anyhow::Result<()> {
    let socket = config.spool.dir.join("queue.sock");
    let (req, json) = match action {
        QueueCmd::List { json } => (Request::List, json),
        QueueCmd::Flush { id } => (Request::Flush { id }, false),
        QueueCmd::Hold { id } => (Request::Hold { id }, false),
        QueueCmd::Release { id } => (Request::Release { id }, false),
        QueueCmd::Delete { id } => (Request::Delete { id }, false),
        QueueCmd::Show { id } => (Request::Show { id }, false),
        QueueCmd::Bounce { id } => (Request::Bounce { id }, false),
    };
    let resp = request(&socket, &req).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot ask the daemon at {}: {e} (is sluice running?)",
            socket.display()
        )
    })?;
    match resp {
        Response::Entries(entries) if json => {
            let entries = entries.into_entries();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            for e in entries {
                serde_json::to_writer(&mut out, &e)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        Response::Entries(entries) => print_table(&entries.into_entries())?,
        Response::Done(n) => println!("{n} message(s)"),
        Response::Message { entry, message } => {
            print_table(std::slice::from_ref(&entry))?;
            println!();
            print!("{message}");
        }
        Response::Bounced(Bounced::Returned { to, dsn }) => {
            println!("returned to <{to}>: DSN queued as {dsn}; message removed")
        }
        Response::Bounced(Bounced::NullSender) => {
            println!("null sender: message deleted, no DSN (none goes to <>)")
        }
        Response::Bounced(Bounced::NotRequested) => {
            println!("no recipient asked for a failure notice (NOTIFY): message deleted, no DSN")
        }
        Response::Error(e) => anyhow::bail!("{e}"),
    }
    Ok(())
}

/// One line per message (`postqueue -p`), written through one buffer: a
/// queue of 100,000 messages is not 100,000 writes.
fn print_table(entries: &[Entry]) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let now = sluice::mail::date::now_secs();
    for e in entries {
        let state = match e.state {
            State::Ready => "ready",
            State::Active => "active",
            State::Deferred => "deferred",
            State::Held => "held",
        };
        write!(
            out,
            "{}\t{}s\t{}\t{}\t<{}>\t{}\tattempts {}",
            e.id,
            now.saturating_sub(e.received_at),
            e.size,
            state,
            e.from,
            e.rcpts.join(","),
            e.attempts,
        )?;
        if let Some(t) = e.next_attempt {
            write!(out, " next in {}s", t.saturating_sub(now))?;
        }
        writeln!(out, "\t{}", e.last_reply.as_deref().unwrap_or(""))?;
    }
    if entries.is_empty() {
        writeln!(out, "Mail queue is empty")?;
    }
    out.flush()
}
