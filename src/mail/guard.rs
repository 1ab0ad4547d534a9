//! The guard: decides, before any task exists, whether a message may be answered at all.
//! No reply to automated mail (RFC 3834 §2, §5), to bounces and reports (RFC 3464, RFC 6522),
//! to list or bulk mail (RFC 2369, RFC 2919; unless a workflow opts in), or to ourselves (loops:
//! our address, our Message-IDs, `X-Loop`). A refused message is stored as `ignored` with the rule
//! that matched.

use crate::domain::EmailAddress;
use crate::mail::ParsedMail;

/// Local parts that only machines send from.
const AUTOMATED_SENDERS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "no-reply",
    "noreply",
    "do-not-reply",
    "donotreply",
    "bounce",
    "bounces",
];

/// `Ok(reply_to)` when the message may become a task, `Err(reason)` naming the rule otherwise:
/// the automated-mail rules, then [`addressing`].
pub fn check(mail: &ParsedMail, own: &EmailAddress) -> Result<EmailAddress, String> {
    automated(mail)?;
    list_mail(mail)?;
    addressing(mail, own)
}

/// Refuses list and bulk mail: `List-Id` (RFC 2919), `List-Unsubscribe` (RFC 2369),
/// `Precedence: list|bulk|junk`.
pub fn list_mail(mail: &ParsedMail) -> Result<(), String> {
    let s = &mail.signals;
    if let Some(p) = s.precedence.as_deref().filter(|p| ["bulk", "junk", "list"].contains(p)) {
        return Err(format!("bulk mail: Precedence: {p}"));
    }
    if let Some(h) = &s.list_header {
        return Err(format!("mailing-list or bulk mail: {h} header (RFC 2369/2919)"));
    }
    Ok(())
}

/// Refuses automated mail: RFC 3834 auto-replies, bounces and reports, loop markers, and mail
/// from addresses only machines send from. List mail is [`list_mail`].
pub fn automated(mail: &ParsedMail) -> Result<(), String> {
    let s = &mail.signals;
    let e = &mail.email;
    if let Some(v) = s.auto_submitted.as_deref().filter(|v| !v.starts_with("no")) {
        return Err(format!("automated mail: Auto-Submitted: {v} (RFC 3834)"));
    }
    if let Some(kind) = &s.report_type {
        return Err(format!("report or bounce: multipart/report; report-type={kind} (RFC 6522)"));
    }
    if s.null_return_path {
        return Err("bounce or notification: null Return-Path <> (RFC 5321 §4.5.5)".into());
    }
    if let Some(marker) = &s.auto_reply {
        return Err(format!("auto-reply: {marker}"));
    }
    if let Some(v) = &s.x_loop {
        return Err(format!("mail loop: X-Loop: {v}"));
    }
    if let Some(from) = e.sender() {
        let local = from.local_part().to_ascii_lowercase();
        if AUTOMATED_SENDERS.contains(&local.as_str()) {
            return Err(format!("automated sender {from}"));
        }
    }
    Ok(())
}

/// Checks who the reply would go to: a valid sender, not ourselves, not a message of ours
/// (loops). `Ok` is the Reply-To address when present, else From (RFC 5322 §3.6.2).
pub fn addressing(mail: &ParsedMail, own: &EmailAddress) -> Result<EmailAddress, String> {
    let e = &mail.email;
    let Some(from) = e.sender() else {
        return Err("no valid sender address in From".into());
    };
    // Our own address in any letter case (domains are case-insensitive, RFC 5321 §2.4; and our
    // own mailbox's local part is too, at every provider we have seen).
    let ours = |a: &EmailAddress| a.as_str().eq_ignore_ascii_case(own.as_str());
    if ours(from) || e.reply_to.as_ref().is_some_and(ours) {
        return Err(format!("mail loop: sent from our own address {own}"));
    }
    let own_id_suffix = format!("@{}", own.domain());
    if e.message_id.as_ref().map(|id| id.as_str().to_ascii_lowercase()).is_some_and(|id| {
        id.trim_start_matches('<').starts_with("swarm.") && id.trim_end_matches('>').ends_with(&own_id_suffix)
    }) {
        return Err("mail loop: carries a Message-ID we generated".into());
    }
    Ok(e.reply_to.clone().unwrap_or_else(|| from.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::parse;
    use crate::mail::parse::Limits as MimeLimits;

    fn verdict(raw: &str) -> Result<EmailAddress, String> {
        let own = EmailAddress::parse("swarm@bot.example").expect("valid");
        check(&parse(raw.as_bytes(), &MimeLimits::default()).expect("parses"), &own)
    }

    #[test]
    fn ordinary_mail_is_answered_at_its_reply_to() {
        let to =
            verdict("From: Ann <ann@x.org>\r\nReply-To: team@x.org\r\nSubject: hi\r\n\r\nhello").expect("ok");
        assert_eq!(to.as_str(), "team@x.org");
        let to = verdict("From: Ann <ann@x.org>\r\nSubject: hi\r\n\r\nhello").expect("ok");
        assert_eq!(to.as_str(), "ann@x.org");
    }

    #[test]
    fn our_own_address_and_message_ids_are_recognised_in_any_case() {
        for raw in [
            "From: SWARM@BOT.EXAMPLE\r\nSubject: hi\r\n\r\nhello",
            "From: Swarm@bot.example\r\nSubject: hi\r\n\r\nhello",
            "From: ann@x.org\r\nReply-To: swarm@Bot.Example\r\nSubject: hi\r\n\r\nhello",
        ] {
            let refused = verdict(raw).expect_err("a loop");
            assert!(refused.contains("our own address"), "{raw:?}: {refused}");
        }
        let refused = verdict("From: ann@x.org\r\nMessage-ID: <SWARM.42.abc@BOT.EXAMPLE>\r\n\r\nhello")
            .expect_err("loop");
        assert!(refused.contains("Message-ID we generated"), "{refused}");
    }

    #[test]
    fn out_of_office_subjects_in_seven_languages_are_not_answered() {
        for subject in [
            "Out of Office: Re: invoice 42",
            "OOO: back on Monday",
            "[Auto-Reply] Your message",
            "Automatic reply: Quarterly numbers",
            "Abwesend: Re: Angebot",
            "Abwesenheitsnotiz: Rechnung",
            "Automatische Antwort: Termin",
            "Absence du bureau : Re: devis",
            "Message d'absence",
            "Réponse automatique : facture",
            "Fuera de la oficina: Re: pedido",
            "Respuesta automática: consulta",
            "Risposta automatica: ordine",
            "Fuori sede: Re: fattura",
            "Automatisch antwoord: offerte",
            "Afwezig: Re: bestelling",
            "Resposta automática: pedido",
            "Fora do escritório: Re: fatura",
            // As mail clients send them: encoded words (RFC 2047) in UTF-8 and Latin-1.
            "=?utf-8?q?R=C3=A9ponse_automatique_:_facture?=",
            "=?iso-8859-1?q?Fora_do_escrit=F3rio:_Re:_fatura?=",
            "=?utf-8?b?UmVzcHVlc3RhIGF1dG9tw6F0aWNhOiBjb25zdWx0YQ==?=",
        ] {
            let raw = format!("From: ann@x.org\r\nSubject: {subject}\r\n\r\nI am away until Monday.");
            let refused = verdict(&raw).expect_err(subject);
            assert!(refused.contains("auto-reply subject"), "{subject}: {refused}");
        }
        // Ordinary subjects that merely mention absence are answered.
        for subject in ["Office hours next week", "Question about my absence form", "Oookay, one more thing"]
        {
            let raw = format!("From: ann@x.org\r\nSubject: {subject}\r\n\r\nhello");
            assert!(verdict(&raw).is_ok(), "{subject}");
        }
    }

    #[test]
    fn auto_submitted_no_is_ordinary_mail() {
        assert!(verdict("From: ann@x.org\r\nAuto-Submitted: no\r\n\r\nhello").is_ok());
    }

    #[test]
    fn automated_mail_is_refused_with_the_rule() {
        for (raw, rule) in [
            ("From: ann@x.org\r\nAuto-Submitted: auto-replied\r\n\r\nout of office", "Auto-Submitted"),
            ("From: ann@x.org\r\nReturn-Path: <>\r\n\r\nx", "Return-Path"),
            ("From: MAILER-DAEMON@x.org\r\n\r\nx", "automated sender"),
            ("From: ann@x.org\r\nPrecedence: bulk\r\n\r\nx", "Precedence"),
            ("From: ann@x.org\r\nList-Id: <l.x.org>\r\n\r\nx", "List-Id"),
            ("From: ann@x.org\r\nX-Autoreply: yes\r\n\r\nx", "X-Autoreply"),
            ("From: ann@x.org\r\nX-Autorespond: yes\r\n\r\nx", "X-Autorespond"),
            ("From: ann@x.org\r\nSubject: Automatic reply: hi\r\n\r\nx", "auto-reply subject"),
            ("From: ann@x.org\r\nMailing-List: contact l-help@x.org\r\n\r\nx", "Mailing-List"),
            ("From: ann@x.org\r\nList-Unsubscribe: <mailto:u@x.org>\r\n\r\nx", "List-Unsubscribe"),
            ("From: ann@x.org\r\nX-Loop: helpdesk@x.org\r\n\r\nx", "X-Loop"),
            ("From: swarm@bot.example\r\n\r\nx", "loop"),
            ("From: ann@x.org\r\nMessage-ID: <swarm.00ff@bot.example>\r\n\r\nx", "loop"),
            ("Subject: no from\r\n\r\nx", "no valid sender"),
        ] {
            let reason = verdict(raw).expect_err(raw);
            assert!(reason.contains(rule), "{raw:?}: {reason}");
        }
    }
}
