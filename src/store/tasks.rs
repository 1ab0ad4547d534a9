//! Tasks and their steps: creating them (with the follow-up link), claiming under a lease,
//! recording steps, completing with the reply in the same transaction, conversations.

use std::time::Duration;

use super::error::Result;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::FromRow;

use super::{NewDelivery, Store, as_json, as_json_opt};
use crate::audit::AuditEvent;
use crate::domain::{
    EarlierTask, FollowUp, FollowUpHints, MessageRowId, Routing, StepStatus, TaskId, TaskStatus,
};

#[derive(Debug)]
pub struct NewTask {
    pub sender: String,
    pub reply_to: String,
    pub subject: String,
    pub workflow: String,
    /// Why this workflow: the routing rule that matched, or how it was chosen (audited).
    pub routed_by: String,
    /// How the workflow was chosen; [`Routing::AskDirector`] lets the director choose when the
    /// task runs (`workflow` is then the one it runs if the director cannot).
    pub routing: Routing,
    /// JSON of the parsed email the agents work on.
    pub input: String,
    /// Whether it continues an earlier task's conversation (decided by `mail::thread`).
    pub follow_up: FollowUp,
}

/// A task claimed by a worker, with its lease.
#[derive(Debug, Clone, FromRow)]
pub struct ClaimedTask {
    #[sqlx(try_from = "i64")]
    pub id: TaskId,
    pub attempts: i64,
    /// When the task was created (the message was accepted), RFC 3339.
    pub created_at: String,
    pub workflow: String,
    #[sqlx(try_from = "String")]
    pub routing: Routing,
    pub sender: String,
    pub reply_to: String,
    pub subject: String,
    pub input: String,
    /// The first task of the conversation this one continues (a follow-up); `None` otherwise.
    pub conversation_id: Option<i64>,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct TaskRow {
    #[sqlx(try_from = "i64")]
    pub id: TaskId,
    pub message_id: i64,
    pub created_at: String,
    pub updated_at: String,
    pub sender: String,
    pub reply_to: String,
    pub subject: String,
    pub workflow: String,
    #[sqlx(try_from = "String")]
    pub status: TaskStatus,
    pub attempts: i64,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub conversation_id: Option<i64>,
    pub follows: Option<i64>,
}

#[derive(Debug, Clone, Serialize, FromRow)]
pub struct StepRow {
    pub id: i64,
    pub attempt: i64,
    pub position: i64,
    pub agent: String,
    pub model: Option<String>,
    #[sqlx(try_from = "String")]
    pub status: StepStatus,
    #[serde(serialize_with = "as_json")]
    pub input: String,
    #[serde(serialize_with = "as_json_opt")]
    pub output: Option<String>,
    pub error: Option<String>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub cost_usd: Option<f64>,
}

/// A step about to start, for [`Store::start_steps`].
#[derive(Debug)]
pub struct NewStep<'a> {
    pub position: usize,
    pub agent: &'a str,
    /// The model an LLM step calls.
    pub model: Option<&'a str>,
    pub input: &'a Value,
}

/// A finished step, for [`Store::finish_steps`].
#[derive(Debug)]
pub struct StepOutcome<'a> {
    pub step: i64,
    pub agent: &'a str,
    /// The JSON output, or the error.
    pub outcome: Result<&'a Value, &'a str>,
    pub duration_ms: u64,
    /// Tokens and cost of an LLM step (spent even when it failed).
    pub usage: Option<&'a crate::domain::Usage>,
}

impl Store {
    /// Creates the task of a newly stored message in the intake transaction, joined to the
    /// conversation it continues (see [`FollowUpHints`]); pushes `task.created`.
    pub(super) async fn create_task(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        actor: &str,
        message: MessageRowId,
        t: NewTask,
        now: &str,
        events: &mut Vec<AuditEvent>,
    ) -> Result<TaskId> {
        let (conversation, follows) = match &t.follow_up {
            FollowUp::Joins { conversation, follows } => (Some(*conversation), Some(*follows)),
            _ => (None, None),
        };
        let task: i64 = sqlx::query_scalar(
            "INSERT INTO tasks (message_id, created_at, updated_at, sender, reply_to, subject,
                                workflow, routing, input, status, conversation_id, follows)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10, $11)
             RETURNING id",
        )
        .bind(message.0)
        .bind(now)
        .bind(now)
        .bind(&t.sender)
        .bind(&t.reply_to)
        .bind(&t.subject)
        .bind(&t.workflow)
        .bind(t.routing.as_str())
        .bind(&t.input)
        .bind(conversation)
        .bind(follows)
        .fetch_one(&mut **tx)
        .await?;
        let mut details = json!({"message": message.0, "workflow": t.workflow, "routing": t.routing, "routed_by": t.routed_by,
                                 "sender": t.sender, "subject": t.subject});
        match t.follow_up {
            FollowUp::Joins { conversation, follows } => {
                details["conversation"] = json!(conversation);
                details["follows"] = json!(follows);
            }
            FollowUp::NotJoined { task, why } => {
                details["not_joined"] = json!({"task": task, "reason": why});
            }
            FollowUp::New => {}
        }
        events
            .push(AuditEvent::new(actor, "task.created", format!("task:{task}")).task(task).details(details));
        Ok(TaskId(task))
    }

    /// The earlier task `hints` point at: the newest of our replies they name, else the task
    /// of the tag. Read outside the intake transaction: what it reads never changes once written.
    pub async fn earlier_task(&self, hints: &FollowUpHints) -> Result<Option<EarlierTask>> {
        let mut candidate: Option<i64> = None;
        for id in hints.references.iter().rev() {
            candidate = sqlx::query_scalar::<_, Option<i64>>(
                "SELECT task_id FROM outbox WHERE message_id = $1 AND task_id IS NOT NULL",
            )
            .bind(id.as_str())
            .fetch_optional(&self.reader)
            .await?
            .flatten();
            if candidate.is_some() {
                break;
            }
        }
        let Some(task) = candidate.or(hints.tag) else { return Ok(None) };
        let row: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT sender, conversation_id FROM tasks WHERE id = $1")
                .bind(task)
                .fetch_optional(&self.reader)
                .await?;
        Ok(row.map(|(sender, conversation)| EarlierTask { task, sender, conversation }))
    }

    /// The last `limit` tasks of conversation `conversation` created before `before`, oldest
    /// first: their input (the parsed email) and the output of each finished step, by agent.
    pub async fn conversation(
        &self,
        conversation: i64,
        before: i64,
        limit: i64,
    ) -> Result<Vec<(TaskRow, String, Vec<StepRow>)>> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM tasks WHERE (id = $1 OR conversation_id = $1) AND id < $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(conversation)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        let mut turns = Vec::with_capacity(ids.len());
        for id in ids.into_iter().rev() {
            let (Some(task), Some(input)) = (self.task(id).await?, self.task_input(id).await?) else {
                continue;
            };
            turns.push((task, input, self.task_steps(id).await?));
        }
        Ok(turns)
    }

    /// Claims the oldest queued task, or one whose lease expired (its worker died), for `lease`.
    /// Counts the attempt. `None` when there is no work.
    pub async fn claim_task(&self, owner: &str, lease: Duration) -> Result<Option<ClaimedTask>> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let claimed: Option<ClaimedTask> = sqlx::query_as(self.dialect.claim_task())
            .bind(owner)
            .bind(self.later(lease))
            .bind(&now)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(t) = claimed else {
            self.commit(tx).await?;
            return Ok(None);
        };
        let event = AuditEvent::new("worker", "task.claimed", format!("task:{}", t.id))
            .task(t.id.0)
            .details(json!({"owner": owner, "attempt": t.attempts}));
        self.commit_audited(tx, vec![event]).await?;
        Ok(Some(t))
    }

    /// Records that the steps of one workflow stage started, in one transaction; returns their
    /// ids in the same order.
    pub async fn start_steps(
        &self,
        task: impl Into<TaskId>,
        owner: &str,
        attempt: i64,
        steps: &[NewStep<'_>],
    ) -> Result<Vec<i64>> {
        let task = task.into().0;
        let now = self.now();
        let mut tx = self.begin().await?;
        self.fence_task(&mut tx, task, owner).await?;
        let mut ids = Vec::with_capacity(steps.len());
        let mut events = Vec::with_capacity(steps.len());
        for s in steps {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO task_steps (task_id, attempt, position, agent, model, input, status, started_at)
                 VALUES ($1, $2, $3, $4, $5, $6, 'running', $7)
                 RETURNING id",
            )
            .bind(task)
            .bind(attempt)
            .bind(s.position as i64)
            .bind(s.agent)
            .bind(s.model)
            .bind(s.input.to_string())
            .bind(&now)
            .fetch_one(&mut *tx)
            .await?;
            events.push(AuditEvent::new("worker", "step.started", format!("step:{id}")).task(task).details(
                json!({"agent": s.agent, "model": s.model, "position": s.position, "attempt": attempt}),
            ));
            ids.push(id);
        }
        self.commit_audited(tx, events).await?;
        Ok(ids)
    }

    /// Records the outcomes of one stage's steps, in one transaction. `LeaseLost`, writing
    /// nothing, when `owner` no longer holds the task.
    pub async fn finish_steps(
        &self,
        task: impl Into<TaskId>,
        owner: &str,
        outcomes: &[StepOutcome<'_>],
    ) -> Result<()> {
        let task = task.into().0;
        let now = self.now();
        let mut tx = self.begin().await?;
        self.fence_task(&mut tx, task, owner).await?;
        let mut events = Vec::with_capacity(outcomes.len());
        for o in outcomes {
            let (status, output, error) = match o.outcome {
                Ok(v) => (StepStatus::Ok, Some(v.to_string()), None),
                Err(e) => (StepStatus::Failed, None, Some(e)),
            };
            let usage = o.usage;
            sqlx::query(
                "UPDATE task_steps SET status = $1, output = $2, error = $3, finished_at = $4, duration_ms = $5,
                                       model = COALESCE($6, model), tokens_in = $7, tokens_out = $8, cost_usd = $9
                 WHERE id = $10",
            )
            .bind(status.as_str())
            .bind(output)
            .bind(error)
            .bind(&now)
            .bind(o.duration_ms as i64)
            .bind(usage.map(|u| u.model.as_str()))
            .bind(usage.map(|u| u.tokens_in as i64))
            .bind(usage.map(|u| u.tokens_out as i64))
            .bind(usage.and_then(|u| u.cost_usd))
            .bind(o.step)
            .execute(&mut *tx)
            .await?;
            let mut details = json!({"agent": o.agent, "status": status.as_str(), "duration_ms": o.duration_ms, "error": error});
            if let Some(u) = usage {
                details["model"] = json!(u.model);
                details["tokens_in"] = json!(u.tokens_in);
                details["tokens_out"] = json!(u.tokens_out);
                details["cost_usd"] = json!(u.cost_usd);
                details["calls"] = json!(u.calls);
            }
            events.push(
                AuditEvent::new("worker", "step.finished", format!("step:{}", o.step))
                    .task(task)
                    .details(details),
            );
        }
        self.commit_audited(tx, events).await
    }

    /// Sets the workflow a director chose for `task`, audited with the reason. `LeaseLost`,
    /// writing nothing, when `owner` no longer holds the task.
    pub async fn route_task(
        &self,
        task: impl Into<TaskId>,
        owner: &str,
        workflow: &str,
        reason: &str,
    ) -> Result<()> {
        let task = task.into().0;
        let mut tx = self.begin().await?;
        self.fence_task(&mut tx, task, owner).await?;
        sqlx::query("UPDATE tasks SET workflow = $1, routing = $2, updated_at = $3 WHERE id = $4")
            .bind(workflow)
            .bind(Routing::Director.as_str())
            .bind(self.now())
            .bind(task)
            .execute(&mut *tx)
            .await?;
        let event = AuditEvent::new("worker", "task.routed", format!("task:{task}"))
            .task(task)
            .details(json!({"workflow": workflow, "reason": reason}));
        self.commit_audited(tx, vec![event]).await
    }

    /// Marks a task done and queues its reply in one transaction (invariant 4).
    ///
    /// Returns `false`, changing nothing, when `owner` no longer holds the task's lease.
    pub async fn complete_task(
        &self,
        task: impl Into<TaskId>,
        owner: &str,
        reply: NewDelivery<'_>,
    ) -> Result<bool> {
        let task = task.into().0;
        self.complete_task_with(task, owner, reply, Value::Null).await
    }

    /// [`Self::complete_task`], with `details` (workflow, LLM totals) in its `task.completed`
    /// audit record.
    pub async fn complete_task_with(
        &self,
        task: impl Into<TaskId>,
        owner: &str,
        reply: NewDelivery<'_>,
        details: Value,
    ) -> Result<bool> {
        let task = task.into().0;
        let now = self.now();
        let mut tx = self.begin().await?;
        if !Self::finish_leased(&mut tx, task, owner, TaskStatus::Done, None, &now).await? {
            return Ok(false);
        }
        let delivery = self.insert_delivery(&mut tx, Some(task), "mail", &reply, &now).await?;
        let events = vec![
            AuditEvent::new("worker", "task.completed", format!("task:{task}")).task(task).details(details),
            AuditEvent::new("worker", "reply.queued", format!("outbox:{delivery}")).task(task).details(
                json!({"message_id": reply.message_id, "to": reply.envelope_to, "size_bytes": reply.payload.len()}),
            ),
        ];
        self.commit_audited(tx, events).await?;
        Ok(true)
    }

    /// Ends a running task that `owner` still leases, as `status` (with `error` when failed);
    /// `false`, writing nothing, when the lease is no longer theirs.
    async fn finish_leased(
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        task: i64,
        owner: &str,
        status: TaskStatus,
        error: Option<&str>,
        now: &str,
    ) -> Result<bool> {
        let updated = sqlx::query(
            "UPDATE tasks SET status = $1, error = COALESCE($2, error), finished_at = $3, updated_at = $3,
                              lease_owner = NULL, lease_until = NULL
             WHERE id = $4 AND status = 'running' AND lease_owner = $5",
        )
        .bind(status.as_str())
        .bind(error)
        .bind(now)
        .bind(task)
        .bind(owner)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(updated > 0)
    }

    /// Marks a task failed for good. Returns `false` when `owner` no longer holds its lease.
    pub async fn fail_task(&self, task: impl Into<TaskId>, owner: &str, error: &str) -> Result<bool> {
        let task = task.into().0;
        let now = self.now();
        let mut tx = self.begin().await?;
        if !Self::finish_leased(&mut tx, task, owner, TaskStatus::Failed, Some(error), &now).await? {
            return Ok(false);
        }
        let event = AuditEvent::new("worker", "task.failed", format!("task:{task}"))
            .task(task)
            .details(json!({"error": error}));
        self.commit_audited(tx, vec![event]).await?;
        Ok(true)
    }

    pub async fn task(&self, id: impl Into<TaskId>) -> Result<Option<TaskRow>> {
        let id = id.into().0;
        Ok(sqlx::query_as(select_task_rows!("WHERE id = $1")).bind(id).fetch_optional(&self.reader).await?)
    }

    /// The task's input as stored: the parsed email JSON ([`crate::mail::InboundEmail`]).
    pub async fn task_input(&self, id: impl Into<TaskId>) -> Result<Option<String>> {
        let id = id.into().0;
        Ok(sqlx::query_scalar("SELECT input FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?)
    }

    pub async fn task_steps(&self, task: impl Into<TaskId>) -> Result<Vec<StepRow>> {
        let task = task.into().0;
        Ok(sqlx::query_as(
            "SELECT id, attempt, position, agent, model, status, input, output, error, started_at,
                    finished_at, duration_ms, tokens_in, tokens_out, cost_usd
             FROM task_steps WHERE task_id = $1 ORDER BY id",
        )
        .bind(task)
        .fetch_all(&self.reader)
        .await?)
    }

    /// Task status as stored, for callers that wait on a task.
    pub async fn task_status(&self, id: TaskId) -> Result<Option<TaskStatus>> {
        let s: Option<String> = sqlx::query_scalar("SELECT status FROM tasks WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.reader)
            .await?;
        Ok(s.and_then(|s| TaskStatus::parse(&s)))
    }
}
