//! The mailbox protocol, on any [`MailboxSession`]: select, find where to start, and for each new
//! UID fetch → commit → acknowledge → move the position. Nothing is acknowledged before its raw
//! bytes are committed (invariant 1); a crash between commit and position re-fetches the message,
//! which dedupe turns into a no-op before the acknowledgement is applied.

use std::future::Future;

use anyhow::Result;
use tracing::{info, instrument};

use super::{ImapIntake, PollReport, Start};
use crate::domain::Outcome;
use crate::intake::Source;

/// What the protocol needs of an IMAP session (RFC 3501 commands), so it can be tested without
/// a server. Every method runs one command; errors name it.
pub trait MailboxSession: Send {
    /// `SELECT mailbox`: its UIDVALIDITY and UIDNEXT.
    fn select(&mut self, mailbox: &str) -> impl Future<Output = Result<(u32, Option<u32>)>> + Send;
    /// `UID SEARCH query`.
    fn uid_search(&mut self, query: &str) -> impl Future<Output = Result<Vec<u32>>> + Send;
    /// `UID FETCH first:* (UID RFC822.SIZE)`: (UID, size in bytes) as the server lists them (it
    /// may include the newest message even when its UID is below `first`).
    fn sizes(&mut self, first: i64) -> impl Future<Output = Result<Vec<(u32, usize)>>> + Send;
    /// `UID FETCH uid BODY.PEEK[]`: the raw message, without setting \Seen.
    fn body(&mut self, uid: u32) -> impl Future<Output = Result<Vec<u8>>> + Send;
    /// `UID MOVE uid mailbox` (RFC 6851).
    fn uid_move(&mut self, uid: u32, mailbox: &str) -> impl Future<Output = Result<()>> + Send;
    /// `UID STORE uid +FLAGS (flag)`.
    fn uid_add_flag(&mut self, uid: u32, flag: &str) -> impl Future<Output = Result<()>> + Send;
}

impl ImapIntake {
    /// On a logged-in session: (re)selects the mailbox and takes every message above the stored
    /// position, committing each before acknowledging it.
    #[instrument(skip_all, fields(mailbox = %self.settings.key()))]
    pub(super) async fn take<S: MailboxSession>(&self, session: &mut S) -> Result<PollReport> {
        let s = &self.settings;
        let key = s.key();
        let (uidvalidity, uid_next) = session.select(&s.mailbox).await?;
        let uidvalidity = i64::from(uidvalidity);
        let stored = self.store.mailbox_state(&key).await?.filter(|st| st.uidvalidity != 0);
        let mut last_uid = match &stored {
            Some(st) if st.uidvalidity == uidvalidity => st.last_uid,
            // Renumbered: take everything again; dedupe keeps each message once.
            Some(_) => 0,
            None => self.starting_uid(session, uid_next).await?,
        };
        if stored.as_ref().is_none_or(|st| st.uidvalidity != uidvalidity) {
            self.store.save_mailbox_position(&key, uidvalidity, last_uid).await?;
        }

        let mut report = PollReport::default();
        for (uid, size) in new_uids(session, last_uid).await? {
            let source_key = format!("{key};UIDVALIDITY={uidvalidity};UID={uid}");
            let source = Source::new(&key, Some(&source_key));
            let outcome = if size > self.max_bytes {
                report.oversize += 1;
                self.intake.quarantine_unread(&source, size, self.max_bytes).await?
            } else {
                let raw = session.body(uid).await?;
                self.intake.accept(&source, &raw).await?
            };
            report.taken += 1;
            match &outcome {
                Outcome::Task { .. } => report.tasks += 1,
                Outcome::Duplicate { .. } => report.duplicates += 1,
                _ => {}
            }
            self.acknowledge(session, uid, matches!(outcome, Outcome::Quarantined { .. })).await?;
            last_uid = i64::from(uid);
            self.store.save_mailbox_position(&key, uidvalidity, last_uid).await?;
        }
        if report.taken == 0 {
            // Nothing new: still a successful look at the mailbox.
            self.store.save_mailbox_position(&key, uidvalidity, last_uid).await?;
        } else {
            info!(
                taken = report.taken,
                tasks = report.tasks,
                duplicates = report.duplicates,
                "took new mail"
            );
        }
        Ok(report)
    }

    /// Where a never-polled mailbox starts (`IMAP_START`): the UID after which mail is taken.
    async fn starting_uid<S: MailboxSession>(&self, session: &mut S, uid_next: Option<u32>) -> Result<i64> {
        match self.settings.start {
            Start::All => Ok(0),
            Start::New => match uid_next {
                Some(next) => Ok(i64::from(next) - 1),
                None => Ok(session.uid_search("ALL").await?.into_iter().max().map_or(0, i64::from)),
            },
            Start::Since(day) => {
                let found = session.uid_search(&format!("SINCE {}", day.format("%d-%b-%Y"))).await?;
                Ok(found
                    .into_iter()
                    .min()
                    .map_or_else(|| i64::from(uid_next.unwrap_or(1)) - 1, |u| i64::from(u) - 1))
            }
        }
    }

    /// After the commit: move the message away, or mark it, so the mailbox shows it was handled.
    async fn acknowledge<S: MailboxSession>(
        &self,
        session: &mut S,
        uid: u32,
        quarantined: bool,
    ) -> Result<()> {
        let s = &self.settings;
        let (target, flag) = if quarantined {
            (s.quarantine_mailbox.as_deref(), "\\Flagged")
        } else {
            (s.processed_mailbox.as_deref(), "\\Seen")
        };
        match target {
            Some(mailbox) => session.uid_move(uid, mailbox).await,
            None => session.uid_add_flag(uid, flag).await,
        }
    }
}

/// UIDs above `last_uid` with their RFC822.SIZE, ascending. (`n:*` also returns the newest
/// message when no UID is above n; such UIDs are filtered out.)
async fn new_uids<S: MailboxSession>(session: &mut S, last_uid: i64) -> Result<Vec<(u32, usize)>> {
    let mut uids: Vec<(u32, usize)> = session
        .sizes(last_uid + 1)
        .await?
        .into_iter()
        .filter(|(uid, _)| i64::from(*uid) > last_uid)
        .collect();
    uids.sort_unstable();
    uids.dedup();
    Ok(uids)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use secrecy::SecretString;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    use super::*;
    use crate::domain::EmailAddress;
    use crate::intake::Intake;
    use crate::intake::imap::{Auth, Mode, Settings, Tls};
    use crate::orchestrator::routing::Router;
    use crate::store::Store;

    /// An in-memory mailbox that records what the protocol did to it.
    struct Fake {
        store: Store,
        uidvalidity: u32,
        messages: BTreeMap<u32, Vec<u8>>,
        /// UIDs whose body was downloaded.
        downloaded: Vec<u32>,
        /// (UID, flag) stored, with the number of queued tasks at that moment.
        flagged: Vec<(u32, String, i64)>,
        /// Fail the acknowledgement of this UID once.
        fail_ack: Option<u32>,
    }

    impl MailboxSession for Fake {
        async fn select(&mut self, _mailbox: &str) -> Result<(u32, Option<u32>)> {
            Ok((self.uidvalidity, Some(self.messages.keys().max().map_or(1, |m| m + 1))))
        }

        async fn uid_search(&mut self, _query: &str) -> Result<Vec<u32>> {
            Ok(self.messages.keys().copied().collect())
        }

        async fn sizes(&mut self, first: i64) -> Result<Vec<(u32, usize)>> {
            let mut found: Vec<(u32, usize)> = self
                .messages
                .iter()
                .filter(|(u, _)| i64::from(**u) >= first)
                .map(|(u, m)| (*u, m.len()))
                .collect();
            // Like a real server, `n:*` names the newest message even when it is below n.
            if let Some((u, m)) = self.messages.iter().next_back() {
                found.push((*u, m.len()));
            }
            Ok(found)
        }

        async fn body(&mut self, uid: u32) -> Result<Vec<u8>> {
            self.downloaded.push(uid);
            self.messages.get(&uid).cloned().ok_or_else(|| anyhow::anyhow!("no UID {uid}"))
        }

        async fn uid_move(&mut self, uid: u32, mailbox: &str) -> Result<()> {
            anyhow::bail!("unexpected UID MOVE {uid} {mailbox}")
        }

        async fn uid_add_flag(&mut self, uid: u32, flag: &str) -> Result<()> {
            if self.fail_ack.take_if(|u| *u == uid).is_some() {
                anyhow::bail!("connection lost during UID STORE");
            }
            let (queued, _) = self.store.pending_work().await?;
            self.flagged.push((uid, flag.to_owned(), queued));
            Ok(())
        }
    }

    fn message(n: u32) -> Vec<u8> {
        format!("From: ann@example.org\r\nTo: swarm@localhost\r\nSubject: n{n}\r\nMessage-ID: <n{n}@example.org>\r\n\r\nPlease look at {n}.\r\n")
            .into_bytes()
    }

    async fn setup(start: Start, max_bytes: usize) -> (tempfile::TempDir, ImapIntake, Fake) {
        let dir = tempfile::tempdir().expect("tmp");
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url, &Default::default()).await.expect("store");
        store.migrate().await.expect("migrate");
        let own = EmailAddress::parse("swarm@localhost").expect("address");
        let router = Router { routes: vec![], default: "default".into(), director: false };
        let intake = Arc::new(Intake::new(store.clone(), Default::default(), own, router));
        let settings = Settings {
            host: "127.0.0.1".into(),
            port: 143,
            tls: Tls::StartTls,
            allow_plaintext: true,
            ca_file: None,
            username: "bot".into(),
            auth: Auth::Password(SecretString::from("pw")),
            mailbox: "INBOX".into(),
            processed_mailbox: None,
            quarantine_mailbox: None,
            start,
            mode: Mode::Poll,
            poll_interval: Duration::from_secs(60),
            lease: Duration::from_secs(60),
            health_max_age: Duration::from_secs(600),
            command_timeout: Duration::from_secs(5),
        };
        let config = ClientConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
        let imap = ImapIntake {
            settings,
            intake,
            store: store.clone(),
            max_bytes,
            owner: "test".into(),
            tls: TlsConnector::from(Arc::new(config)),
        };
        let fake = Fake {
            store,
            uidvalidity: 7,
            messages: (1..=3).map(|n| (n, message(n))).collect(),
            downloaded: vec![],
            flagged: vec![],
            fail_ack: None,
        };
        (dir, imap, fake)
    }

    async fn position(imap: &ImapIntake) -> (i64, i64) {
        let state = imap.store.mailbox_state(&imap.settings.key()).await.expect("state").expect("a row");
        (state.uidvalidity, state.last_uid)
    }

    #[tokio::test]
    async fn each_message_is_committed_before_it_is_acknowledged_and_the_position_follows() {
        let (_dir, imap, mut fake) = setup(Start::All, 1 << 20).await;
        let report = imap.take(&mut fake).await.expect("take");
        assert_eq!((report.taken, report.tasks, report.duplicates), (3, 3, 0));
        let acks: Vec<(u32, &str, i64)> = fake.flagged.iter().map(|(u, f, q)| (*u, f.as_str(), *q)).collect();
        assert_eq!(
            acks,
            [(1, "\\Seen", 1), (2, "\\Seen", 2), (3, "\\Seen", 3)],
            "each task committed before its \\Seen"
        );
        assert_eq!(position(&imap).await, (7, 3));
        let again = imap.take(&mut fake).await.expect("take");
        assert_eq!(again, PollReport::default(), "the newest message listed by n:* is not taken again");
    }

    #[tokio::test]
    async fn a_lost_acknowledgement_is_applied_on_the_next_take_without_a_second_task() {
        let (_dir, imap, mut fake) = setup(Start::All, 1 << 20).await;
        fake.fail_ack = Some(2);
        assert!(imap.take(&mut fake).await.is_err(), "the failed UID STORE is reported");
        assert_eq!(position(&imap).await, (7, 1), "the position stays before the unacknowledged message");
        let report = imap.take(&mut fake).await.expect("take");
        assert_eq!((report.taken, report.tasks, report.duplicates), (2, 1, 1));
        assert_eq!(fake.flagged.iter().map(|(u, ..)| *u).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(imap.store.pending_work().await.expect("pending").0, 3, "one task per message");
    }

    #[tokio::test]
    async fn a_new_uidvalidity_takes_everything_again_and_dedupe_keeps_each_once() {
        let (_dir, imap, mut fake) = setup(Start::All, 1 << 20).await;
        imap.take(&mut fake).await.expect("take");
        fake.uidvalidity = 8;
        let report = imap.take(&mut fake).await.expect("take");
        assert_eq!((report.taken, report.tasks, report.duplicates), (3, 0, 3));
        assert_eq!(position(&imap).await, (8, 3));
    }

    #[tokio::test]
    async fn oversize_mail_is_quarantined_and_flagged_without_being_downloaded() {
        let (_dir, imap, mut fake) = setup(Start::All, 10).await;
        let report = imap.take(&mut fake).await.expect("take");
        assert_eq!((report.taken, report.oversize, report.tasks), (3, 3, 0));
        assert!(fake.downloaded.is_empty(), "{:?}", fake.downloaded);
        assert!(fake.flagged.iter().all(|(_, f, _)| f == "\\Flagged"));
        assert_eq!(imap.store.quarantined(10).await.expect("quarantined").len(), 3);
    }

    #[tokio::test]
    async fn a_new_mailbox_starts_after_the_mail_already_there() {
        let (_dir, imap, mut fake) = setup(Start::New, 1 << 20).await;
        assert_eq!(imap.take(&mut fake).await.expect("take").taken, 0);
        fake.messages.insert(4, message(4));
        let report = imap.take(&mut fake).await.expect("take");
        assert_eq!((report.taken, report.tasks), (1, 1));
        assert_eq!(fake.downloaded, [4]);
    }
}
