//! Cron jobs: a table of (name, schedule, job). Schedules use the `cron` crate's syntax with a
//! seconds field: `sec min hour day-of-month month day-of-week`.

use std::str::FromStr;

use anyhow::Result;
use cron::Schedule;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::store::Store;
use futures_util::future::BoxFuture;

pub struct Job {
    pub name: &'static str,
    pub schedule: &'static str,
    pub run: fn(&Store) -> BoxFuture<'_, Result<String>>,
}

/// Every job the scheduler runs. (Expired task and delivery leases need no job: claims take
/// them over directly.)
pub const JOBS: &[Job] = &[Job {
    name: "purge-webhook-nonces",
    schedule: "0 */10 * * * *",
    run: |store| {
        Box::pin(async move { Ok(format!("{} expired nonces purged", store.purge_expired_nonces().await?)) })
    },
}];

/// Runs the jobs on their schedules until `stop` changes.
pub async fn run(store: Store, mut stop: watch::Receiver<bool>) {
    let schedules: Vec<(&Job, Schedule)> = JOBS
        .iter()
        .filter_map(|job| match Schedule::from_str(job.schedule) {
            Ok(s) => Some((job, s)),
            Err(e) => {
                warn!(job = job.name, error = %e, "bad schedule; job disabled");
                None
            }
        })
        .collect();
    loop {
        let now = store.clock().now();
        let Some((job, at)) = schedules
            .iter()
            .filter_map(|(job, s)| s.after(&now).next().map(|at| (*job, at)))
            .min_by_key(|(_, at)| *at)
        else {
            return;
        };
        let wait = (at - now).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        match (job.run)(&store).await {
            Ok(note) => info!(job = job.name, %note, "job done"),
            Err(e) => warn!(job = job.name, error = %format!("{e:#}"), "job failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schedule_parses() {
        for job in JOBS {
            assert!(Schedule::from_str(job.schedule).is_ok(), "{}: {}", job.name, job.schedule);
        }
    }
}
