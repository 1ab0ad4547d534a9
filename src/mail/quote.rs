//! Quote and signature stripping: the new text of a reply, without the quoted history or the
//! sender's signature. Heuristics for the common mail clients (Gmail, Outlook, Apple Mail,
//! Thunderbird, Yahoo, AOL, Android and others), in any language for `>`-quoted history.
//!
//! Rules, applied line by line:
//! 1. Lines starting with `>` are quoted history and dropped, wherever they are (top-, bottom- and
//!    interleaved posting all keep the new text).
//! 2. The attribution before a quoted block (1-3 lines ending in `:`, e.g. "On Mon ... wrote:",
//!    "02.04.2012 ... написал:") is dropped with it.
//! 3. A line that starts a non-`>` history block cuts everything after it: "-----Original
//!    Message-----", an Outlook header block ("From:" followed by "Sent:"/"Date:" within 4 lines),
//!    an "On ... wrote:" attribution not followed by `>` lines.
//! 4. A signature cuts everything after it: the `-- ` delimiter (RFC 3676 §4.3) or a mobile
//!    client's "Sent from my ..." line.

/// Returns the new text of `body` (LF line endings expected), trimmed. When stripping would leave
/// nothing, returns the whole body trimmed, so agents always have something to read.
pub fn new_text(body: &str) -> String {
    let lines: Vec<&str> = body.lines().collect();
    let mut keep = vec![true; lines.len()];
    let mut cut_at = lines.len();

    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if is_quoted(line) {
            keep[i] = false;
            drop_attribution_before(&lines, i, &mut keep);
            continue;
        }
        if is_history_start(&lines, i) || is_signature_start(t) {
            cut_at = i;
            break;
        }
    }
    let kept: Vec<&str> =
        lines[..cut_at].iter().zip(&keep).filter(|(_, k)| **k).map(|(l, _)| l.trim_end()).collect();
    let text = collapse_blank_lines(&kept);
    if text.is_empty() { body.trim().to_owned() } else { text }
}

fn is_quoted(line: &str) -> bool {
    line.trim_start().starts_with('>')
}

/// Drops the 1-3 non-blank lines just above a quoted line when they read as an attribution.
fn drop_attribution_before(lines: &[&str], quoted: usize, keep: &mut [bool]) {
    let mut j = quoted;
    while j > 0 && lines[j - 1].trim().is_empty() {
        j -= 1;
    }
    if j == 0 || is_quoted(lines[j - 1]) || !keep[j - 1] {
        return;
    }
    let end = j;
    let mut start = end;
    while start > 0 && end - start < 3 && !lines[start - 1].trim().is_empty() && !is_quoted(lines[start - 1])
    {
        start -= 1;
        let joined: String = lines[start..end].iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
        if looks_like_attribution(&joined) {
            // A wrapped attribution: take in the line above when it is clearly its start.
            if start > 0 && end - start < 3 {
                let above = lines[start - 1].trim();
                if above.ends_with(['<', ',']) || opens_attribution(&above.to_lowercase()) {
                    start -= 1;
                }
            }
            keep[start..end].iter_mut().for_each(|k| *k = false);
            return;
        }
    }
}

/// "On <date>, <name> wrote:" in its many forms: ends with a colon and names a date or a person.
fn looks_like_attribution(text: &str) -> bool {
    let t = text.trim();
    t.ends_with(':')
        && t.chars().count() <= 300
        && (t.chars().any(|c| c.is_ascii_digit()) || t.contains('@') || has_wrote_word(&t.to_lowercase()))
}

const WROTE_WORDS: &[&str] = &[
    "wrote",
    "writes",
    "schrieb",
    "a écrit",
    "escribió",
    "scrisse",
    "schreef",
    "skrev",
    "napisał",
    "написал",
    "escreveu",
    "kirjoitti",
    "írta",
];

fn has_wrote_word(lower: &str) -> bool {
    WROTE_WORDS.iter().any(|w| lower.contains(w))
}

/// Header names that open a quoted header block (Outlook, GMX, Yahoo, ...), several languages.
const QUOTED_HEADERS: &[&str] = &[
    "from:",
    "sent:",
    "date:",
    "to:",
    "cc:",
    "subject:",
    "von:",
    "gesendet:",
    "an:",
    "betreff:",
    "datum:",
    "de:",
    "envoyé:",
    "à:",
    "objet:",
    "enviado:",
    "para:",
    "asunto:",
];

/// A line of a quoted header block: `From: ...`, also `*From:*` or `**Von:**` from HTML bold.
fn quoted_header(line: &str) -> bool {
    let t = line.trim().trim_start_matches('*').replace(['*', '\u{a0}'], " ").to_lowercase();
    QUOTED_HEADERS.iter().any(|h| t.starts_with(h))
}

fn is_history_start(lines: &[&str], i: usize) -> bool {
    let t = lines[i].trim().trim_matches('*');
    let lower = t.to_lowercase();
    // A quoted header block (Outlook, GMX, ...): a "From:" line and at least one more header
    // line among the next four, or any header line and at least two more.
    if quoted_header(lines[i]) {
        let more = lines.iter().skip(i + 1).take(4).filter(|l| quoted_header(l)).count();
        let from_line = ["from:", "von:", "de:"].iter().any(|f| lower.starts_with(f));
        if more >= 2 || (from_line && more >= 1) {
            return true;
        }
    }
    let dashes = lower.trim_matches(|c: char| c == '-' || c == ' ');
    if lower.starts_with("--")
        && ["original message", "ursprüngliche nachricht", "message d'origine", "forwarded message"]
            .iter()
            .any(|m| dashes.starts_with(m))
    {
        return true;
    }
    // Outlook Web's underscore rule above a header block.
    if lower.chars().count() >= 10 && lower.chars().all(|c| c == '_') {
        return lines.iter().skip(i + 1).take(3).any(|l| quoted_header(l));
    }
    // "On ... wrote:" (possibly wrapped onto a second line, or after Yahoo's "--- ") with no `>`
    // lines after it: everything below is history. When `>` lines follow, rule 2 drops it instead.
    let lower = lower.trim_start_matches(['-', ' ']);
    if starts_attribution(lower) {
        let Some(end) = (i..lines.len().min(i + 2)).find(|&j| lines[j].trim_end().ends_with(':')) else {
            return false;
        };
        let next_content = lines.iter().skip(end + 1).find(|l| !l.trim().is_empty());
        return !next_content.is_some_and(|l| is_quoted(l));
    }
    false
}

/// "On <date> ..." in one of the common languages: the first line of an attribution.
fn opens_attribution(lower: &str) -> bool {
    ["on ", "am ", "le ", "el ", "il ", "op ", "em ", "den "].iter().any(|p| lower.starts_with(p))
        && lower.chars().any(|c| c.is_ascii_digit())
}

fn starts_attribution(lower: &str) -> bool {
    opens_attribution(lower) && (has_wrote_word(lower) || lower.ends_with(','))
}

fn is_signature_start(t: &str) -> bool {
    let lower = t.to_lowercase();
    t == "--"
        || t == "-- "
        || [
            "sent from my ",
            "sent from mail for windows",
            "get outlook for ",
            "sent from yahoo mail",
            "sent with sparrow",
            "von meinem iphone gesendet",
        ]
        .iter()
        .any(|p| lower.starts_with(p))
}

fn collapse_blank_lines(lines: &[&str]) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    for l in lines {
        if l.trim().is_empty() && out.last().is_none_or(|p| p.trim().is_empty()) {
            continue;
        }
        out.push(l);
    }
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::new_text;

    #[test]
    fn gmail_top_post() {
        let body = "Hello\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan One <xxx@gmail.com> wrote:\n\n> Hi\n";
        assert_eq!(new_text(body), "Hello");
    }

    #[test]
    fn gmail_attribution_wrapped_over_two_lines() {
        let body =
            "Sounds good.\n\nOn Mon, Apr 2, 2012 at 6:26 PM, Megan One <\nxxx@gmail.com> wrote:\n\n> Hi\n";
        assert_eq!(new_text(body), "Sounds good.");
    }

    #[test]
    fn gmail_attribution_with_wrote_alone_on_the_second_line() {
        let body =
            "Can you confirm?\n\nOn Mon, Nov 23, 2026 at 9:41 AM Bot <bot@x.org>\nwrote:\n\n> summary\n";
        assert_eq!(new_text(body), "Can you confirm?");
    }

    #[test]
    fn thunderbird_bottom_post_keeps_text_below_the_quote() {
        let body = "On 04/02/2012 06:26 PM, Megan One wrote:\n> Hi \nHello\n";
        assert_eq!(new_text(body), "Hello");
    }

    #[test]
    fn localized_attribution_before_quote() {
        let body = "Hello\n02.04.2012 14:20 пользователь \"bob@x.org\" <\nbob@x.org> написал:\n\n> Hi\n>\n";
        assert_eq!(new_text(body), "Hello");
    }

    #[test]
    fn outlook_header_block_cuts_history() {
        let body = "Hello\n\nFrom: xxx@x.org [mailto:xxx@x.org]\nSent: March-09-12 4:22 PM\nTo: Dan\nSubject: Loop\n\nHi dan";
        assert_eq!(new_text(body), "Hello");
    }

    #[test]
    fn original_message_separator_cuts_history() {
        let body = "Hello\n\n\n----- Original Message -----\nFrom: bob\nSent: Monday\n\nHi\n";
        assert_eq!(new_text(body), "Hello");
    }

    #[test]
    fn yahoo_dashed_attribution_cuts_history() {
        let body = "Sounds great.\n\n--- On Wed, 4/4/12, x@example.com <x@example.com> wrote:\n\nFrom: x@example.com\nSubject: booking";
        assert_eq!(new_text(body), "Sounds great.");
    }

    #[test]
    fn gmx_german_header_block_cuts_history() {
        let body = "YIPPEEEEEE\n\n**Gesendet:**\u{a0}Dienstag, 08. Dezember 2020\n**Von:**\u{a0}bob@gmx.de\n**An:**\u{a0}alice@gmx.de\n**Betreff:**\u{a0}Re: x\nNow?";
        assert_eq!(new_text(body), "YIPPEEEEEE");
    }

    #[test]
    fn a_lone_to_line_is_not_a_header_block() {
        let body = "To: do list for Monday\n- call the bank\n- send the invoice";
        assert_eq!(new_text(body), body);
    }

    #[test]
    fn signature_and_mobile_footer_are_cut() {
        assert_eq!(new_text("Hello\n\n-- \nBob\nACME Inc.\n"), "Hello");
        assert_eq!(
            new_text("Hello\n\nSent from my iPhone\n\nOn Apr 3, 2012, at 4:19 PM, bob wrote:\n\n> Hi"),
            "Hello"
        );
    }

    #[test]
    fn interleaved_reply_keeps_every_answer() {
        let body = "> Can you do Monday?\nYes.\n\n> And the budget?\nStill 5k.\n";
        assert_eq!(new_text(body), "Yes.\n\nStill 5k.");
    }

    #[test]
    fn plain_message_is_unchanged() {
        let body = "Please send the report by Friday.\nThanks,\nAnna";
        assert_eq!(new_text(body), body);
    }

    #[test]
    fn only_quotes_falls_back_to_the_whole_body() {
        assert_eq!(new_text("> just a quote\n"), "> just a quote");
    }
}
