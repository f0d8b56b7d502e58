//! `sluice queue ...`: the running daemon's queue, as Postfix's
//! `postqueue -p`/`-f` and `postsuper -h`/`-H`/`-d`, over its queue socket
//! (`<spool.dir>/queue.sock`).

use clap::Subcommand;
use sluice::config::Config;
use sluice::delivery::queue::control::{Entry, Request, Response, State, request};

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
    };
    let resp = request(&socket, &req).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot ask the daemon at {}: {e} (is sluice running?)",
            socket.display()
        )
    })?;
    match resp {
        Response::Entries(entries) if json => {
            for e in entries {
                println!("{}", serde_json::to_string(&e)?);
            }
        }
        Response::Entries(entries) => print_table(&entries),
        Response::Done(n) => println!("{n} message(s)"),
        Response::Message { entry, message } => {
            print_table(std::slice::from_ref(&entry));
            println!();
            print!("{message}");
        }
        Response::Error(e) => anyhow::bail!("{e}"),
    }
    Ok(())
}

fn print_table(entries: &[Entry]) {
    let now = sluice::mail::date::now_secs();
    for e in entries {
        let state = match e.state {
            State::Ready => "ready",
            State::Active => "active",
            State::Deferred => "deferred",
            State::Held => "held",
        };
        let next = e
            .next_attempt
            .map(|t| format!(" next in {}s", t.saturating_sub(now)))
            .unwrap_or_default();
        println!(
            "{}\t{}s\t{}\t{}\t<{}>\t{}\tattempts {}{}\t{}",
            e.id,
            now.saturating_sub(e.received_at),
            e.size,
            state,
            e.from,
            e.rcpts.join(","),
            e.attempts,
            next,
            e.last_reply.as_deref().unwrap_or("")
        );
    }
    if entries.is_empty() {
        println!("Mail queue is empty");
    }
}
