//! Intake: every way mail gets in (CLI files, IMAP, the signed `/inbound/raw` webhook, provider
//! webhooks and the task hook) ends in one [`Intake::accept`]. It stores the raw bytes, dedupes,
//! and decides the message's fate (task, ignored, quarantined) in one transaction, before the
//! caller acknowledges anything (invariant 1).

pub mod imap;
pub mod providers;
pub mod webhook;

use std::time::Duration;

use anyhow::Result;
use sha2::{Digest, Sha256};
use tracing::{info, instrument};

pub use crate::domain::Outcome;
use crate::domain::{EmailAddress, FollowUp, FollowUpHints, MessageId, Routing};
use crate::mail::parse::Limits as MimeLimits;
use crate::mail::{guard, parse, thread};
use crate::store::{Disposition, NewMessage, NewTask, Nonce, Store};

/// Where a message came from.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// `cli`, `webhook:raw`, ...
    pub name: &'a str,
    /// The source's own key: file path, webhook-id.
    pub key: Option<&'a str>,
    /// A replay key that must not have been seen before (signed webhooks).
    pub nonce: Option<(&'a str, Duration)>,
    /// True when our own code wrote the message's Message-ID header (a message rebuilt from
    /// provider fields, a task hook): an id under `inbound.invalid` is then ours
    /// ([`crate::domain::SYNTHETIC_DOMAIN`]). From any other source such an id is forged or
    /// foreign and is renamed ([`MessageId::untrusted`]).
    pub minted_id: bool,
    pub hints: Hints<'a>,
}

impl<'a> Source<'a> {
    /// A source with a key and nothing else.
    pub fn new(name: &'a str, key: Option<&'a str>) -> Self {
        Self { name, key, nonce: None, minted_id: false, hints: Hints::default() }
    }
}

/// Message-ID, sender address and subject of a parsed message, as stored with its row.
type Headline = (Option<String>, Option<String>, Option<String>);

fn headline(parsed: &Result<parse::ParsedMail, parse::ParseError>) -> Headline {
    match parsed {
        Ok(p) => (
            p.email.message_id.as_ref().map(|id| id.as_str().to_owned()),
            p.email.sender().map(|a| a.to_string()),
            Some(p.email.subject.clone()),
        ),
        Err(_) => (None, None, None),
    }
}

/// Gives a message whose Message-ID is under `inbound.invalid`, from a source that did not mint
/// it, the id [`MessageId::untrusted`] of its raw bytes: a mail cannot take a hook's identity
/// (and so pre-empt it as a "duplicate") by writing that hook's Message-ID.
fn rename_synthetic_id(parsed: &mut Result<parse::ParsedMail, parse::ParseError>, raw_sha256: &str) {
    if let Ok(p) = parsed
        && p.email.message_id.as_ref().is_some_and(MessageId::is_synthetic)
    {
        p.email.message_id = Some(MessageId::untrusted(raw_sha256));
    }
}

/// What a source knows about a message beyond its bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints<'a> {
    /// The provider's own text of the reply without quotes or signature (Mailgun `stripped-text`,
    /// Postmark `StrippedTextReply`); replaces our quote stripping when not blank.
    pub new_text: Option<&'a str>,
    /// The workflow the sender asked for (task hook); the default one otherwise.
    pub workflow: Option<&'a str>,
    /// Kept with the task input (task hook `metadata`).
    pub metadata: Option<&'a serde_json::Value>,
    /// A signed request that explicitly asks for a reply (task hook): the automated-mail rules of
    /// the guard do not apply; the loop rules still do.
    pub requested: bool,
    /// The SMTP session that delivered the message to the provider (for SPF).
    pub peer: Option<&'a crate::mail::auth::SmtpPeer>,
}

pub struct Intake {
    store: Store,
    limits: MimeLimits,
    own_address: EmailAddress,
    /// Picks the workflow of a new task (rules, director, default).
    router: crate::orchestrator::routing::Router,
    /// The workflow list and bulk mail goes to; `None` (the default) ignores such mail.
    list_workflow: Option<String>,
    /// Which senders are obeyed (invariant 7).
    policy: crate::mail::policy::SenderPolicy,
    /// For the polite refusal (`refusal.txt`), when the policy sends one.
    templates: Option<std::sync::Arc<crate::mail::compose::Templates>>,
}

/// Why a parsed message makes no task.
enum NoTask {
    /// Automated, list or loop mail, or nowhere to reply: never answered.
    Guard(String),
    /// The sender policy refused the sender: answered only by a polite refusal, when allowed.
    Policy(String),
}

impl Intake {
    pub fn new(
        store: Store,
        limits: MimeLimits,
        own_address: EmailAddress,
        router: crate::orchestrator::routing::Router,
    ) -> Self {
        Self {
            store,
            limits,
            own_address,
            router,
            list_workflow: None,
            policy: Default::default(),
            templates: None,
        }
    }

    /// Obeys only senders `policy` accepts; others' mail is stored as ignored with the reason,
    /// and answered with `templates`' `refusal.txt` when the policy asks for a polite refusal.
    pub fn with_sender_policy(
        mut self,
        policy: crate::mail::policy::SenderPolicy,
        templates: std::sync::Arc<crate::mail::compose::Templates>,
    ) -> Self {
        self.policy = policy;
        self.templates = Some(templates);
        self
    }

    /// Lets list and bulk mail (List-Id, List-Unsubscribe, Precedence: list|bulk|junk) become
    /// tasks of `workflow` instead of being ignored (e.g. a digest workflow).
    pub fn with_list_workflow(mut self, workflow: Option<String>) -> Self {
        self.list_workflow = workflow;
        self
    }

    /// Stores `raw` and makes it a task, or records why not. Returns only after the commit.
    ///
    /// Errors are storage failures only; bad mail is an outcome (quarantined), not an error.
    #[instrument(skip_all, fields(source = source.name, size = raw.len()))]
    pub async fn accept(&self, source: &Source<'_>, raw: &[u8]) -> Result<Outcome> {
        let sha256 = hex::encode(Sha256::digest(raw));
        // Parsing is CPU work bounded only by the size limit (up to 25 MB of MIME and HTML);
        // keep it off the async workers so one large message does not stall every request.
        let (owned, limits) = (raw.to_vec(), self.limits);
        let mut parsed = tokio::task::spawn_blocking(move || parse(&owned, &limits)).await?;
        if !source.minted_id {
            rename_synthetic_id(&mut parsed, &sha256);
        }
        let (message_id, sender, subject) = headline(&parsed);
        let dedupe_key = match &message_id {
            Some(id) => format!("mid:{id}"),
            None => format!("sha256:{sha256}"),
        };
        let verified = self.verify_sender(raw, &parsed, &source.hints).await;
        let disposition = self.decide(parsed, &source.hints, sender.clone(), verified.as_ref()).await?;
        let nonce = source.nonce.map(|(nonce, keep_for)| Nonce { source: source.name, nonce, keep_for });
        let outcome = self
            .store
            .accept_message(
                &format!("intake:{}", source.name),
                NewMessage {
                    source: source.name,
                    source_key: source.key,
                    dedupe_key: &dedupe_key,
                    message_id: message_id.as_deref(),
                    sha256: &sha256,
                    raw,
                    sender: sender.as_deref(),
                    subject: subject.as_deref(),
                },
                disposition,
                nonce,
            )
            .await?;
        info!(outcome = outcome.word(), "message accepted");
        count_outcome(source.name, &outcome);
        Ok(outcome)
    }

    /// The in-process DMARC verdict when the sender policy needs one (DNS queries, so outside
    /// any transaction). Bounces and signed task hooks are not senders to obey.
    async fn verify_sender(
        &self,
        raw: &[u8],
        parsed: &Result<parse::ParsedMail, parse::ParseError>,
        hints: &Hints<'_>,
    ) -> Option<crate::mail::auth::DmarcVerdict> {
        match parsed {
            Ok(p) if !hints.requested && p.signals.bounce.is_none() => {
                self.policy.verify(raw, p, hints.peer).await
            }
            _ => None,
        }
    }

    /// The fate of a parsed message: quarantined (it did not parse), a bounce, ignored by the
    /// guard, or a task of the right workflow, joined to the conversation it continues when
    /// `mail::thread` says so. `verified` is the sender's DMARC verdict.
    async fn decide(
        &self,
        parsed: Result<parse::ParsedMail, parse::ParseError>,
        hints: &Hints<'_>,
        sender: Option<String>,
        verified: Option<&crate::mail::auth::DmarcVerdict>,
    ) -> Result<Disposition> {
        let (mut disposition, follow) = self.fate(parsed, hints, sender, verified)?;
        if let Disposition::Task(task) = &mut disposition {
            let earlier = self.store.earlier_task(&follow).await?;
            task.follow_up = thread::follow_up(earlier.as_ref(), &task.sender);
        }
        Ok(disposition)
    }

    /// [`Self::decide`] before threading; with what may make the message a follow-up.
    fn fate(
        &self,
        parsed: Result<parse::ParsedMail, parse::ParseError>,
        hints: &Hints<'_>,
        sender: Option<String>,
        verified: Option<&crate::mail::auth::DmarcVerdict>,
    ) -> Result<(Disposition, FollowUpHints)> {
        // The guard's and the sender policy's verdict, and the workflow: list mail goes to the
        // list workflow when one opts in.
        // (workflow, why, how): the caller's choice, the list workflow, or the router's rules.
        let routed = |p: &parse::ParsedMail| {
            let decision = self.router.route(&p.email, &self.own_address);
            (decision.workflow().to_owned(), decision.why(), decision.routing())
        };
        let verdict = |p: &parse::ParsedMail| -> Result<(EmailAddress, (String, String, Routing)), NoTask> {
            if hints.requested {
                return Ok((
                    guard::addressing(p, &self.own_address).map_err(NoTask::Guard)?,
                    hints.workflow.map_or_else(
                        || routed(p),
                        |w| (w.to_owned(), "requested by the caller".to_owned(), Routing::Requested),
                    ),
                ));
            }
            guard::automated(p).map_err(NoTask::Guard)?;
            let workflow = match (guard::list_mail(p), &self.list_workflow) {
                (Ok(()), _) => routed(p),
                (Err(_), Some(list_workflow)) => (
                    list_workflow.clone(),
                    "list mail: SWARM_LIST_MAIL_WORKFLOW".to_owned(),
                    Routing::ListMail,
                ),
                (Err(reason), None) => return Err(NoTask::Guard(reason)),
            };
            let reply_to = guard::addressing(p, &self.own_address).map_err(NoTask::Guard)?;
            self.policy.check(p, verified).map_err(NoTask::Policy)?;
            Ok((reply_to, workflow))
        };
        let none = FollowUpHints::default();
        Ok(match parsed {
            Err(e) => (Disposition::Quarantined(e.to_string()), none),
            Ok(p) if p.signals.bounce.is_some() && !hints.requested => {
                (Disposition::Bounce(p.signals.bounce.unwrap_or_default().notice()), none)
            }
            Ok(p) => match verdict(&p) {
                Err(NoTask::Guard(reason)) => (Disposition::Ignored(reason), none),
                Err(NoTask::Policy(reason)) => (self.refusal(&p, verified, reason), none),
                Ok((reply_to, (workflow, routed_by, routing))) => {
                    let mut email = p.email;
                    if let Some(text) = hints.new_text.map(str::trim).filter(|t| !t.is_empty()) {
                        email.new_text = text.replace("\r\n", "\n");
                    }
                    email.metadata = hints.metadata.cloned();
                    let task = NewTask {
                        sender: sender.unwrap_or_default(),
                        reply_to: reply_to.into(),
                        subject: email.subject.clone(),
                        workflow,
                        routed_by,
                        routing,
                        input: serde_json::to_string(&email)?,
                        follow_up: FollowUp::New,
                    };
                    (Disposition::Task(task), thread::hints(&email))
                }
            },
        })
    }

    /// The fate of a message from a sender the policy refused: ignored, with a polite refusal
    /// to its authenticated From address when the policy sends those.
    fn refusal(
        &self,
        p: &parse::ParsedMail,
        verified: Option<&crate::mail::auth::DmarcVerdict>,
        reason: String,
    ) -> Disposition {
        let to = p.email.sender().cloned();
        let (Some(templates), Some(to)) = (&self.templates, to) else {
            return Disposition::Ignored(reason);
        };
        if !self.policy.refuses_politely(p, verified) {
            return Disposition::Ignored(reason);
        }
        match crate::mail::compose::compose_refusal(
            templates,
            &self.own_address,
            &to,
            &p.email,
            self.store.clock().now(),
        ) {
            Ok(reply) => {
                let thread_key = crate::mail::compose::references(&p.email)
                    .first()
                    .map_or_else(|| reply.message_id.as_str().to_owned(), |id| id.as_str().to_owned());
                Disposition::Refused {
                    reason: format!("{reason}; polite refusal queued"),
                    refusal: crate::store::OwnedDelivery {
                        message_id: reply.message_id.as_str().to_owned(),
                        envelope_from: reply.from.as_str().to_owned(),
                        envelope_to: reply.to.as_str().to_owned(),
                        payload: reply.bytes,
                        thread_key,
                    },
                }
            }
            Err(e) => Disposition::Ignored(format!("{reason}; no refusal sent: {e:#}")),
        }
    }

    /// Parses a quarantined message again (with today's limits and code) and gives it its new
    /// fate; see [`Store::reprocess_message`].
    pub async fn reprocess(&self, id: i64) -> Result<Outcome> {
        let raw = self
            .store
            .message_raw(id)
            .await?
            .ok_or_else(|| crate::store::StoreError::NotFound(format!("no message {id}")))?;
        anyhow::ensure!(!raw.is_empty(), "message {id} was never downloaded (left at its source)");
        let (bytes, limits) = (raw.clone(), self.limits);
        let mut parsed = tokio::task::spawn_blocking(move || parse(&bytes, &limits)).await?;
        rename_synthetic_id(&mut parsed, &hex::encode(Sha256::digest(&raw)));
        let (message_id, sender, subject) = headline(&parsed);
        let verified = self.verify_sender(&raw, &parsed, &Hints::default()).await;
        let disposition = self.decide(parsed, &Hints::default(), sender.clone(), verified.as_ref()).await?;
        let outcome = self
            .store
            .reprocess_message(
                "cli",
                id,
                message_id.as_deref(),
                sender.as_deref(),
                subject.as_deref(),
                disposition,
            )
            .await?;
        info!(message = id, outcome = outcome.word(), "quarantined message reprocessed");
        Ok(outcome)
    }

    /// Records a message that was never downloaded because the source declared it `size` bytes,
    /// over the limit: quarantined with the reason, no raw bytes (they stay on the server).
    /// Deduped by the source key, so seeing it again is a duplicate.
    pub async fn quarantine_unread(&self, source: &Source<'_>, size: usize, limit: usize) -> Result<Outcome> {
        let key = source.key.unwrap_or(source.name);
        let reason =
            format!("message is {size} bytes, over the limit of {limit} bytes; left unread at the source");
        let outcome = self
            .store
            .accept_message(
                &format!("intake:{}", source.name),
                NewMessage {
                    source: source.name,
                    source_key: source.key,
                    dedupe_key: &format!("unread:{key}"),
                    message_id: None,
                    sha256: "",
                    raw: b"",
                    sender: None,
                    subject: None,
                },
                Disposition::Quarantined(reason),
                None,
            )
            .await?;
        info!(outcome = outcome.word(), size, "oversize message left unread");
        count_outcome(source.name, &outcome);
        Ok(outcome)
    }
}

/// Counts a committed message in the metrics: `swarm_messages_received_total{source, outcome}`
/// and, for one that made no task, `swarm_messages_ignored_total{rule}` or
/// `swarm_messages_quarantined_total{rule}`. Labels are bounded words (see
/// [`crate::domain::reason_rule`]), never a sender or a subject.
fn count_outcome(source: &str, outcome: &Outcome) {
    let kind = crate::domain::source_kind(source);
    metrics::counter!("swarm_messages_received_total", "source" => kind, "outcome" => outcome.word())
        .increment(1);
    match outcome {
        Outcome::Ignored { reason, .. } => {
            let rule = crate::domain::reason_rule(reason);
            metrics::counter!("swarm_messages_ignored_total", "rule" => rule).increment(1);
        }
        Outcome::Quarantined { reason, .. } => {
            let rule = crate::domain::reason_rule(reason);
            metrics::counter!("swarm_messages_quarantined_total", "rule" => rule).increment(1);
        }
        _ => {}
    }
}
