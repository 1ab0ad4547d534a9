//! Scheduled jobs: one table ([`JOBS`]) of name, default schedule and job. Schedules use the
//! `cron` crate's syntax with a seconds field (`sec min hour day-of-month month day-of-week`,
//! UTC) and can be replaced per job by `SWARM_SCHEDULE_<NAME>` (`SWARM_SCHEDULE_RETENTION`).
//!
//! Each scheduled time of a job runs once across restarts and instances: the instance that
//! inserts the `(job, scheduled_at)` row runs it, the others skip it. A time missed while no
//! instance ran is not caught up; the next one runs. `swarm-director job run NAME` runs a job
//! at once under its own row (trigger `manual`).

mod alerts;
mod digest;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use cron::Schedule;
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::domain::EmailAddress;
use crate::store::Store;

/// What the jobs are configured with (see `config::ops`).
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// Replaced schedules, by job name.
    pub schedules: BTreeMap<String, String>,
    /// `SWARM_RETENTION_DAYS` (default 90): content of finished work older than this is
    /// removed; 0 keeps everything.
    pub retention_days: u32,
    /// `SWARM_DIGEST_TO`: the daily digest's recipient; unset, no digest.
    pub digest_to: Option<EmailAddress>,
    /// `SWARM_ALERT_TO`: the liveness alerts' recipient; unset, no alerts.
    pub alert_to: Option<EmailAddress>,
    /// `SWARM_ALERT_REPEAT_SECS` (default 86400): a condition still firing is mailed again
    /// after this long.
    pub alert_repeat: Duration,
    /// A mailbox without a good poll for this long is silent (`IMAP_HEALTH_MAX_AGE`).
    pub mailbox_silence: Duration,
    /// The From of notices.
    pub from: EmailAddress,
    /// `SWARM_PUBLIC_URL`: where the pages are reached, for links in mail.
    pub public_url: String,
}

/// What a job runs with.
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    pub settings: JobSettings,
    /// This instance's name on job-run claims.
    pub owner: String,
    /// Whether this process's LLM circuit breaker is open, and why (none without an LLM).
    pub llm_open: Option<Arc<dyn Fn() -> Option<String> + Send + Sync>>,
    /// Woken after a notice is queued, so the outbox sends it now.
    pub outbox_wake: Arc<Notify>,
}

/// One scheduled job.
pub struct Job {
    pub name: &'static str,
    /// The default schedule.
    pub schedule: &'static str,
    pub about: &'static str,
    /// `None` when the job is on; else why it is off.
    pub disabled: fn(&JobSettings) -> Option<&'static str>,
    run: fn(&JobContext) -> BoxFuture<'_, Result<String>>,
}

/// Every job the scheduler runs.
pub const JOBS: &[Job] = &[
    Job {
        name: "retention",
        schedule: "0 30 3 * * *",
        about: "removes content of finished work older than SWARM_RETENTION_DAYS",
        disabled: |s| (s.retention_days == 0).then_some("SWARM_RETENTION_DAYS=0 keeps everything"),
        run: |ctx| Box::pin(retention(ctx)),
    },
    Job {
        name: "webhook-nonces",
        schedule: "0 */10 * * * *",
        about: "forgets webhook ids past their replay window",
        disabled: |_| None,
        run: |ctx| {
            Box::pin(async move {
                Ok(format!("{} expired nonces purged", ctx.store.purge_expired_nonces().await?))
            })
        },
    },
    Job {
        name: "digest",
        schedule: "0 0 7 * * *",
        about: "mails the last 24 hours to SWARM_DIGEST_TO",
        disabled: |s| s.digest_to.is_none().then_some("SWARM_DIGEST_TO is unset"),
        run: |ctx| Box::pin(digest::run(ctx)),
    },
    Job {
        name: "alerts",
        schedule: "0 */5 * * * *",
        about: "mails SWARM_ALERT_TO when a mailbox is silent, the backlog grows or the LLM breaker stays open",
        disabled: |s| s.alert_to.is_none().then_some("SWARM_ALERT_TO is unset"),
        run: |ctx| Box::pin(alerts::run(ctx)),
    },
];

impl JobSettings {
    /// Defaults for tests: 90 days, no digest or alerts, `swarm@localhost`.
    pub fn for_tests() -> Self {
        Self {
            schedules: BTreeMap::new(),
            retention_days: 90,
            digest_to: None,
            alert_to: None,
            alert_repeat: Duration::from_secs(24 * 3600),
            mailbox_silence: Duration::from_secs(600),
            from: EmailAddress::parse("swarm@localhost").unwrap_or_else(|_| unreachable!()),
            public_url: "http://127.0.0.1:8080".into(),
        }
    }
}

/// A cron expression of this module's syntax, or why it is not one.
pub fn parse_schedule(text: &str) -> Result<Schedule> {
    Schedule::from_str(text)
        .map_err(|e| anyhow::anyhow!("not a schedule (sec min hour day month weekday): {e}"))
}

impl Job {
    /// The schedule in force: the setting's, else the default.
    pub fn schedule_in<'a>(&'a self, settings: &'a JobSettings) -> &'a str {
        settings.schedules.get(self.name).map_or(self.schedule, String::as_str)
    }
}

/// The job named `name`.
pub fn job(name: &str) -> Result<&'static Job> {
    JOBS.iter().find(|j| j.name == name).with_context(|| {
        let names: Vec<&str> = JOBS.iter().map(|j| j.name).collect();
        format!("no job {name:?}; jobs: {}", names.join(", "))
    })
}

/// Runs `job` under a claim of `(job, at)`: `Ok(None)` when someone else holds that claim.
async fn run_claimed(ctx: &JobContext, job: &Job, at: &str, trigger: &str) -> Result<Option<String>> {
    if !ctx.store.claim_job_run(job.name, at, trigger, &ctx.owner).await? {
        return Ok(None);
    }
    let outcome = (job.run)(ctx).await;
    let (ok, note) = match &outcome {
        Ok(note) => (true, note.clone()),
        Err(e) => (false, format!("{e:#}")),
    };
    ctx.store.finish_job_run(job.name, at, ok, &note).await?;
    outcome.map(Some)
}

/// Runs the job named `name` now (a manual run), whatever its schedule or setting says;
/// returns what it reported.
pub async fn run_now(ctx: &JobContext, name: &str) -> Result<String> {
    let job = job(name)?;
    let at = ctx.store.clock().now().to_rfc3339_opts(SecondsFormat::Micros, true);
    run_claimed(ctx, job, &at, "manual").await?.with_context(|| format!("{name} already ran at {at}"))
}

/// Runs the enabled jobs on their schedules until `stop` changes.
pub async fn run(ctx: JobContext, mut stop: watch::Receiver<bool>) {
    let schedules: Vec<(&Job, Schedule)> = JOBS
        .iter()
        .filter(|job| (job.disabled)(&ctx.settings).is_none())
        .filter_map(|job| match parse_schedule(job.schedule_in(&ctx.settings)) {
            Ok(s) => Some((job, s)),
            Err(e) => {
                warn!(job = job.name, error = %e, "bad schedule; job disabled");
                None
            }
        })
        .collect();
    let start = ctx.store.clock().now();
    let mut next: Vec<Option<DateTime<Utc>>> =
        schedules.iter().map(|(_, s)| s.after(&start).next()).collect();
    loop {
        let Some(at) = next.iter().flatten().min().copied() else { return };
        let wait = (at - ctx.store.clock().now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        // Every job due at this time runs, in table order; each then moves to its next time
        // after this one (not after now, which a long job may have carried past another's).
        for ((job, schedule), due) in schedules.iter().zip(next.iter_mut()) {
            if *due != Some(at) {
                continue;
            }
            *due = schedule.after(&at).next();
            let stamp = at.to_rfc3339_opts(SecondsFormat::Secs, true);
            match run_claimed(&ctx, job, &stamp, "schedule").await {
                Ok(Some(note)) => info!(job = job.name, at = %stamp, %note, "job done"),
                Ok(None) => {}
                Err(e) => warn!(job = job.name, at = %stamp, error = %format!("{e:#}"), "job failed"),
            }
        }
    }
}

/// The retention job: purge content older than the cutoff.
async fn retention(ctx: &JobContext) -> Result<String> {
    let days = ctx.settings.retention_days;
    anyhow::ensure!(days > 0, "SWARM_RETENTION_DAYS=0 keeps everything");
    let cutoff = ctx.store.clock().now() - chrono::Duration::days(i64::from(days));
    let cutoff = cutoff.to_rfc3339_opts(SecondsFormat::Micros, true);
    let p = ctx.store.purge_content(&cutoff).await?;
    Ok(format!(
        "before {cutoff}: {} messages, {} task inputs, {} steps, {} replies purged",
        p.messages, p.tasks, p.steps, p.replies
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_schedule_parses() {
        for job in JOBS {
            assert!(parse_schedule(job.schedule).is_ok(), "{}: {}", job.name, job.schedule);
        }
        assert!(parse_schedule("every day").is_err());
    }

    #[test]
    fn settings_replace_a_default_schedule() {
        let mut settings = JobSettings::for_tests();
        assert_eq!(job("retention").expect("job").schedule_in(&settings), "0 30 3 * * *");
        settings.schedules.insert("retention".into(), "0 0 1 * * *".into());
        assert_eq!(job("retention").expect("job").schedule_in(&settings), "0 0 1 * * *");
        assert!(job("nope").is_err());
    }
}
