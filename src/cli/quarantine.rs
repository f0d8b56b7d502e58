//! `sluice quarantine ...`: list, show, release and delete quarantined mail.

use clap::Subcommand;
use sluice::config::Config;
use sluice::events::{AdminRecord, QuarantineAction};
use sluice::quarantine::{Quarantine, QuarantineError};

#[derive(Subcommand)]
pub(crate) enum QuarantineCmd {
    /// One line per message: id, time, reason, sender, recipients.
    #[command(after_help = "Example:\n  sluice quarantine list")]
    List,
    /// The envelope, the reason and the message.
    #[command(after_help = "Example:\n  sluice quarantine show 6620246496C3E3EB")]
    Show {
        /// The message's id (from `sluice quarantine list`).
        id: String,
    },
    /// Delivers the message to the next hop, then removes it (spam
    /// quarantined before its virus scan is scanned first).
    #[command(after_help = "Example:\n  sluice quarantine release 6620246496C3E3EB")]
    Release {
        /// The message's id (from `sluice quarantine list`).
        id: String,
    },
    /// Removes the message.
    #[command(after_help = "Example:\n  sluice quarantine delete 6620246496C3E3EB")]
    Delete {
        /// The message's id (from `sluice quarantine list`).
        id: String,
    },
}

/// The admin's action as an event (through the daemon, or into the event
/// log file); a failure to record it is said, not fatal.
async fn note(config: &Config, action: QuarantineAction, e: &sluice::quarantine::Entry) {
    let what = AdminRecord::Quarantine {
        action,
        id: e.id.clone(),
        ip: e.envelope.client_ip,
        helo: e.envelope.helo.clone(),
        from: e.envelope.mail_from.as_ref().map(|m| m.to_string()).unwrap_or_default(),
        reason: e.reason.to_string(),
    };
    if let Err(err) = sluice::app::record(config, what).await {
        eprintln!("sluice: {}: not recorded in the event log: {err}", e.id);
    }
}

pub(crate) async fn quarantine(config: &Config, action: QuarantineCmd) -> Result<(), QuarantineError> {
    let q = Quarantine::new(&config.scan.quarantine_dir);
    match action {
        QuarantineCmd::List => {
            for e in q.list()? {
                let rcpts: Vec<String> = e.envelope.rcpts.iter().map(|r| r.addr.to_string()).collect();
                println!(
                    "{}\t{}\t{}\t<{}>\t{}",
                    e.id,
                    sluice::mail::date::rfc5322_date(e.quarantined_at),
                    e.reason,
                    e.envelope.sender_display(),
                    rcpts.join(",")
                );
            }
        }
        QuarantineCmd::Show { id } => {
            let e = q.entry(&id)?;
            println!(
                "Id: {}\nReason: {}\nClient: {} ({})",
                e.id, e.reason, e.envelope.client_ip, e.envelope.helo
            );
            println!("Sender: <{}>", e.envelope.sender_display());
            for r in &e.envelope.rcpts {
                println!("Recipient: <{}>", r.addr);
            }
            println!();
            use std::io::Write as _;
            let _ = std::io::stdout().write_all(&q.body(&id)?);
        }
        QuarantineCmd::Release { id } => {
            // Spam quarantined while its virus scan was still pending
            // (admission control, or held during a clamd outage) is
            // scanned now: release never delivers unscanned mail. Mail the
            // scan itself put here is the operator's call.
            let entry = q.entry(&id)?;
            if entry.envelope.scan_pending && entry.reason == sluice::events::Cause::Spam {
                let (filter, _) = sluice::scan::ContentFilter::from_config(
                    config,
                    std::sync::Arc::new(sluice::metrics::Metrics::disabled()),
                );
                let refused = |why: String| QuarantineError::Release(id.clone(), format!("not released: {why}"));
                match filter.check(&q.body(&id)?, Some(entry.envelope.client_ip)).await {
                    Ok(sluice::scan::Verdict::Clean) => {}
                    Ok(sluice::scan::Verdict::Virus(name)) => return Err(refused(format!("virus found: {name}"))),
                    Ok(sluice::scan::Verdict::Banned(what) | sluice::scan::Verdict::Malformed(what)) => {
                        return Err(refused(what));
                    }
                    Ok(sluice::scan::Verdict::Unscannable(u)) => {
                        let action = filter.cfg.unscannable_for(Some(entry.envelope.client_ip));
                        if action != sluice::scan::UnscannableAction::Accept {
                            return Err(refused(u.to_string()));
                        }
                    }
                    Err(e) => return Err(refused(format!("its virus scan is pending and failed now: {e}"))),
                }
            }
            let metrics = sluice::metrics::Metrics::disabled();
            let transport = sluice::delivery::route::Router::from_config(config, None, &metrics)
                .map_err(|e| QuarantineError::Release(id.clone(), format!("dns.resolver: {e}")))?;
            let e = q.release(&id, &transport).await?;
            println!("{}: released to {}", e.id, config.relay.next_hop);
            note(config, QuarantineAction::Release, &e).await;
        }
        QuarantineCmd::Delete { id } => {
            let e = q.entry(&id)?;
            q.delete(&id)?;
            println!("{id}: deleted");
            note(config, QuarantineAction::Delete, &e).await;
        }
    }
    Ok(())
}
