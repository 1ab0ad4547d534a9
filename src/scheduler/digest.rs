//! The daily digest: tasks and failures, the busiest senders, quarantined and held mail, LLM
//! tokens and cost over the last 24 hours, with links to the pages; mailed to `SWARM_DIGEST_TO`
//! through the outbox.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use chrono::SecondsFormat;

use super::JobContext;
use crate::domain::one_line;
use crate::mail::compose::compose_notice;
use crate::store::{Digest, OwnedDelivery};

/// Queues the digest; returns what it did.
pub async fn run(ctx: &JobContext) -> Result<String> {
    let to = ctx.settings.digest_to.as_ref().context("SWARM_DIGEST_TO is unset")?;
    let now = ctx.store.clock().now();
    let since = (now - chrono::Duration::hours(24)).to_rfc3339_opts(SecondsFormat::Micros, true);
    let digest = ctx.store.digest(&since).await?;
    let text = render(&digest, &ctx.settings.public_url, &since);
    let total: i64 = digest.tasks.iter().map(|t| t.1).sum();
    let subject = format!("SwarmDirector digest: {total} tasks, {} failed", digest.failed.len());
    let mail = compose_notice(&ctx.settings.from, to, &subject, &text, now)?;
    let id = ctx
        .store
        .queue_notice(
            "digest",
            &OwnedDelivery {
                message_id: mail.message_id.as_str().to_owned(),
                envelope_from: mail.from.as_str().to_owned(),
                envelope_to: mail.to.as_str().to_owned(),
                thread_key: mail.message_id.as_str().to_owned(),
                payload: mail.bytes,
            },
        )
        .await?;
    ctx.outbox_wake.notify_one();
    Ok(format!("digest of {total} tasks queued as delivery {id} to {to}"))
}

/// The digest's text.
pub fn render(d: &Digest, url: &str, since: &str) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "SwarmDirector: the last 24 hours (since {since})\n");
    let counts: Vec<String> = d.tasks.iter().map(|(status, n)| format!("{n} {status}")).collect();
    let counts = if counts.is_empty() { "none".to_owned() } else { counts.join(", ") };
    let _ = writeln!(t, "Tasks: {counts}");
    if !d.failed.is_empty() {
        let _ = writeln!(t, "\nFailed tasks:");
        for (id, subject, error) in &d.failed {
            let error = one_line(error.as_deref().unwrap_or("no error recorded"));
            let _ = writeln!(t, "  #{id} {:?}: {error}\n    {url}/tasks/{id}", one_line(subject));
        }
    }
    if !d.top_senders.is_empty() {
        let _ = writeln!(t, "\nTop senders:");
        for (sender, n) in &d.top_senders {
            let _ = writeln!(t, "  {n:>5}  {sender}");
        }
    }
    let _ = writeln!(t, "\nQuarantined: {}", d.quarantined_total);
    for (id, reason) in &d.quarantined {
        let _ = writeln!(t, "  message {id}: {}", one_line(reason.as_deref().unwrap_or("")));
    }
    let _ = writeln!(t, "\nHeld replies (waiting for a person): {}", d.held.len());
    for (id, to) in &d.held {
        let _ = writeln!(t, "  delivery {id} to {to}: swarm-director outbox release {id}");
    }
    let _ = writeln!(t, "\nLLM: {} tokens in, {} tokens out, ${:.4}", d.tokens_in, d.tokens_out, d.cost_usd);
    let _ = writeln!(t, "\nStatus page: {url}/");
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_names_failures_senders_and_links() {
        let d = Digest {
            tasks: vec![("done".into(), 3), ("failed".into(), 1)],
            failed: vec![(7, "Invoice".into(), Some("agent timed out".into()))],
            top_senders: vec![("ann@x.org".into(), 3)],
            quarantined: vec![(9, Some("message is empty".into()))],
            quarantined_total: 1,
            held: vec![(4, "bob@y.org".into())],
            tokens_in: 1200,
            tokens_out: 300,
            cost_usd: 0.0125,
        };
        let text = render(&d, "https://bot.example", "2026-12-03T07:00:00Z");
        for want in [
            "Tasks: 3 done, 1 failed",
            "#7 \"Invoice\": agent timed out",
            "https://bot.example/tasks/7",
            "ann@x.org",
            "message 9: message is empty",
            "outbox release 4",
            "1200 tokens in, 300 tokens out, $0.0125",
        ] {
            assert!(text.contains(want), "{want:?} in:\n{text}");
        }
    }
}
