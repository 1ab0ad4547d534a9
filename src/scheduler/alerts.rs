//! Liveness alerts, mailed to `SWARM_ALERT_TO`. Each check looks at three kinds of condition:
//!
//! - `mailbox:<host:port/folder>`: no good poll for longer than `IMAP_HEALTH_MAX_AGE` (silent,
//!   or failing: the last error is in the mail);
//! - `outbox-backlog`: the backlog grew at three checks in a row; it recovers once it shrinks
//!   or is empty;
//! - `llm-breaker`: this process's LLM breaker was open at two checks in a row.
//!
//! A condition that starts firing is mailed once, again after `SWARM_ALERT_REPEAT_SECS` while
//! it still fires, and a "recovered" mail follows when it stops. State and samples live in the
//! `alerts` table, so a restart or another instance continues the same streaks.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};

use super::JobContext;
use crate::mail::compose::compose_notice;
use crate::store::{AlertRow, OwnedDelivery};

/// What one check found about one condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub condition: String,
    /// The bad sign was seen at this check (a silent mailbox, a grown backlog, an open breaker).
    pub sign: bool,
    /// Consecutive signs needed before it fires.
    pub need: i64,
    /// The figure the next check compares with (the backlog).
    pub sample: i64,
    /// For a firing condition: whether this check says it is over.
    pub recovered: bool,
    pub detail: String,
}

/// What to do about one condition after a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub row: AlertRow,
    /// `alert.raised` or `alert.recovered`, when the operator is to be mailed.
    pub notify: Option<&'static str>,
}

/// The new state of a condition from its stored one and this check's finding.
pub fn step(previous: Option<&AlertRow>, f: &Finding, now: DateTime<Utc>, repeat: chrono::Duration) -> Step {
    let now_text = now.to_rfc3339_opts(SecondsFormat::Micros, true);
    let was_firing = previous.is_some_and(|p| p.firing);
    let streak = if f.sign { previous.map_or(0, |p| p.streak) + 1 } else { 0 };
    let firing = if was_firing { !f.recovered } else { f.sign && streak >= f.need };
    let last_told = previous
        .and_then(|p| p.notified_at.as_deref())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc());
    let notify = match (was_firing, firing) {
        (false, true) => Some("alert.raised"),
        (true, true) if last_told.is_none_or(|t| now - t >= repeat) => Some("alert.raised"),
        (true, false) => Some("alert.recovered"),
        _ => None,
    };
    let since = match previous {
        Some(p) if p.firing == firing => p.since.clone(),
        _ => now_text.clone(),
    };
    let notified_at =
        if notify.is_some() { Some(now_text) } else { previous.and_then(|p| p.notified_at.clone()) };
    Step {
        row: AlertRow {
            condition: f.condition.clone(),
            firing,
            since,
            notified_at,
            streak,
            sample: f.sample,
            detail: Some(f.detail.clone()),
        },
        notify,
    }
}

/// This check's findings, from the database (mailboxes, backlog) and the process (breaker).
async fn findings(ctx: &JobContext, stored: &BTreeMap<String, AlertRow>) -> Result<Vec<Finding>> {
    let now = ctx.store.clock().now();
    let silence = chrono::Duration::from_std(ctx.settings.mailbox_silence).unwrap_or(chrono::Duration::MAX);
    let mut out = Vec::new();
    for m in ctx.store.mailbox_states().await? {
        let last_ok = m.last_ok_at.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
        // Not yet polled (no success, no failure): nothing to say yet.
        if last_ok.is_none() && m.consecutive_errors == 0 {
            continue;
        }
        let silent = last_ok.is_none_or(|t| now - t.to_utc() > silence);
        let error = m.last_error.as_deref().unwrap_or("no error: the mailbox is just not being read");
        out.push(Finding {
            condition: format!("mailbox:{}", crate::domain::redacted_url(&m.mailbox)),
            sign: silent,
            need: 1,
            sample: m.consecutive_errors,
            recovered: !silent,
            detail: format!(
                "last good poll {}, {} failed polls since; last error: {error}",
                m.last_ok_at.as_deref().unwrap_or("never"),
                m.consecutive_errors
            ),
        });
    }
    let (_, backlog) = ctx.store.pending_work().await?;
    let before = stored.get("outbox-backlog").map_or(0, |r| r.sample);
    out.push(Finding {
        condition: "outbox-backlog".into(),
        sign: backlog > before,
        need: 3,
        sample: backlog,
        recovered: backlog == 0 || backlog < before,
        detail: format!("{backlog} deliveries waiting (was {before} at the last check)"),
    });
    if let Some(open) = &ctx.llm_open {
        let why = open();
        out.push(Finding {
            condition: "llm-breaker".into(),
            sign: why.is_some(),
            need: 2,
            sample: 0,
            recovered: why.is_none(),
            detail: why.unwrap_or_else(|| "the LLM circuit breaker is closed".into()),
        });
    }
    Ok(out)
}

/// The alert job: check, store each condition's state, mail the changes.
pub async fn run(ctx: &JobContext) -> Result<String> {
    let to = ctx.settings.alert_to.as_ref().context("SWARM_ALERT_TO is unset")?;
    let stored: BTreeMap<String, AlertRow> =
        ctx.store.alerts().await?.into_iter().map(|a| (a.condition.clone(), a)).collect();
    let now = ctx.store.clock().now();
    let repeat = chrono::Duration::from_std(ctx.settings.alert_repeat).unwrap_or(chrono::Duration::MAX);
    let (mut raised, mut recovered, mut firing) = (0, 0, 0);
    for finding in findings(ctx, &stored).await? {
        let step = step(stored.get(&finding.condition), &finding, now, repeat);
        firing += usize::from(step.row.firing);
        let mail = match step.notify {
            None => None,
            Some(action) => {
                let (subject, lead) = if action == "alert.recovered" {
                    recovered += 1;
                    (format!("[SwarmDirector] recovered: {}", step.row.condition), "Recovered")
                } else {
                    raised += 1;
                    (format!("[SwarmDirector] ALERT: {}", step.row.condition), "Firing")
                };
                let text = format!(
                    "{lead}: {}\nSince: {}\n\n{}\n\nStatus page: {}/\nHealth: {}/health\n",
                    step.row.condition,
                    step.row.since,
                    finding.detail,
                    ctx.settings.public_url,
                    ctx.settings.public_url
                );
                let m = compose_notice(&ctx.settings.from, to, &subject, &text, now)?;
                Some((
                    action,
                    OwnedDelivery {
                        message_id: m.message_id.as_str().to_owned(),
                        envelope_from: m.from.as_str().to_owned(),
                        envelope_to: m.to.as_str().to_owned(),
                        thread_key: format!("alert:{}", step.row.condition),
                        payload: m.bytes,
                    },
                ))
            }
        };
        if stored.get(&finding.condition) != Some(&step.row) {
            ctx.store.save_alert(&step.row, mail.as_ref().map(|(a, m)| (*a, m))).await?;
        }
    }
    if raised + recovered > 0 {
        ctx.outbox_wake.notify_one();
    }
    Ok(format!("{firing} firing; {raised} alerts and {recovered} recoveries mailed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T00:00:00Z").expect("time").to_utc()
            + chrono::Duration::minutes(minutes)
    }

    fn backlog(sample: i64, before: i64) -> Finding {
        Finding {
            condition: "outbox-backlog".into(),
            sign: sample > before,
            need: 3,
            sample,
            recovered: sample == 0 || sample < before,
            detail: format!("{sample}"),
        }
    }

    #[test]
    fn a_growing_backlog_alerts_once_then_recovers_once() {
        let repeat = chrono::Duration::hours(24);
        let mut row: Option<AlertRow> = None;
        let mut mails = Vec::new();
        for (minute, sample) in [(0, 1), (5, 2), (10, 3), (15, 4), (20, 5), (25, 5), (30, 2), (35, 3)] {
            let before = row.as_ref().map_or(0, |r| r.sample);
            let s = step(row.as_ref(), &backlog(sample, before), at(minute), repeat);
            if let Some(action) = s.notify {
                mails.push((minute, action));
            }
            row = Some(s.row);
        }
        assert_eq!(mails, vec![(10, "alert.raised"), (30, "alert.recovered")]);
    }

    #[test]
    fn a_condition_still_firing_is_mailed_again_after_the_repeat_period() {
        let silent = Finding {
            condition: "mailbox:imap://h/INBOX".into(),
            sign: true,
            need: 1,
            sample: 4,
            recovered: false,
            detail: "silent".into(),
        };
        let repeat = chrono::Duration::hours(1);
        let first = step(None, &silent, at(0), repeat);
        assert_eq!(first.notify, Some("alert.raised"));
        let later = step(Some(&first.row), &silent, at(30), repeat);
        assert_eq!(later.notify, None, "one alert per condition per period");
        let again = step(Some(&later.row), &silent, at(61), repeat);
        assert_eq!(again.notify, Some("alert.raised"));
        assert_eq!(again.row.since, first.row.since, "still the same episode");
    }
}
