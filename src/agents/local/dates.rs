//! Finds a deadline in a sentence and resolves it to a calendar date against a base date (the
//! message's Date, in the sender's own offset). Deterministic, English phrases:
//!
//! | phrase | resolves to |
//! |---|---|
//! | `2026-12-05`, `December 5`, `5 Dec 2026`, `Dec 5th`, `12/05` (m/d unless the first number > 12) | that date; without a year, the next such date on or after the base |
//! | `today`, `tonight`, `EOD`, `end of (the) day`, `COB` | the base date |
//! | `tomorrow` | base + 1 |
//! | `monday` … `sunday` (with or without `next`/`this`) | the next such weekday after the base |
//! | `end of (the) week`, `EOW`, `this week` | Friday of the base's week (next Friday on a weekend) |
//! | `next week` | Monday of the following week |
//! | `end of (the) month`, `EOM` | last day of the base's month |
//! | `next month` | the 1st of the following month |
//! | `in`/`within` N `days`/`weeks` | base + N days / weeks |

use chrono::{Datelike, Duration, NaiveDate, Weekday};

const MONTHS: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

const WEEKDAYS: &[(&str, Weekday)] = &[
    ("monday", Weekday::Mon),
    ("tuesday", Weekday::Tue),
    ("wednesday", Weekday::Wed),
    ("thursday", Weekday::Thu),
    ("friday", Weekday::Fri),
    ("saturday", Weekday::Sat),
    ("sunday", Weekday::Sun),
];

const NUMBER_WORDS: &[&str] =
    &["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];

/// The first deadline phrase in `sentence` and its date.
pub fn find_due(sentence: &str, base: NaiveDate) -> Option<(NaiveDate, String)> {
    let tokens: Vec<String> = sentence
        .split_whitespace()
        .map(|t| t.trim_matches(|c: char| !c.is_alphanumeric() && c != '/' && c != '-').to_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    (0..tokens.len()).find_map(|i| match_at(&tokens, i, base))
}

fn month_of(token: &str) -> Option<u32> {
    let t = token.trim_end_matches('.');
    if t.len() < 3 {
        return None;
    }
    MONTHS.iter().position(|m| m.starts_with(t)).map(|p| p as u32 + 1)
}

fn day_of(token: &str) -> Option<u32> {
    let digits = token.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &token[digits.len()..];
    if !["", "st", "nd", "rd", "th"].contains(&suffix) {
        return None;
    }
    digits.parse().ok().filter(|d| (1..=31).contains(d))
}

fn year_of(token: Option<&String>) -> Option<i32> {
    token.and_then(|t| t.parse().ok()).filter(|y| (1970..=2200).contains(y))
}

fn number_of(token: &str) -> Option<i64> {
    token.parse().ok().or_else(|| NUMBER_WORDS.iter().position(|w| *w == token).map(|n| n as i64))
}

/// The next date with this month and day on or after `base`, or in `year` when given.
fn month_day(base: NaiveDate, month: u32, day: u32, year: Option<i32>) -> Option<NaiveDate> {
    match year {
        Some(y) => NaiveDate::from_ymd_opt(y, month, day),
        None => {
            let this = NaiveDate::from_ymd_opt(base.year(), month, day);
            match this {
                Some(d) if d >= base => Some(d),
                _ => NaiveDate::from_ymd_opt(base.year() + 1, month, day),
            }
        }
    }
}

fn next_weekday(base: NaiveDate, day: Weekday) -> NaiveDate {
    let ahead = (7 + day.num_days_from_monday() as i64 - base.weekday().num_days_from_monday() as i64) % 7;
    base + Duration::days(if ahead == 0 { 7 } else { ahead })
}

fn end_of_month(base: NaiveDate) -> NaiveDate {
    let (y, m) = if base.month() == 12 { (base.year() + 1, 1) } else { (base.year(), base.month() + 1) };
    NaiveDate::from_ymd_opt(y, m, 1).map_or(base, |first| first - Duration::days(1))
}

/// The date that the words of `t` starting at `i` name, relative to `base`, and those words.
fn match_at(t: &[String], i: usize, base: NaiveDate) -> Option<(NaiveDate, String)> {
    calendar_date(t, i, base).or_else(|| relative_date(t, i, base))
}

/// A date written as one: `2026-12-05`, `12/5`, `5/12/26`, `December 5`, `5th of Dec 2026`.
fn calendar_date(t: &[String], i: usize, base: NaiveDate) -> Option<(NaiveDate, String)> {
    let w = t[i].as_str();
    let next = |k: usize| t.get(i + k).map(String::as_str);
    let phrase = |n: usize| t[i..(i + n).min(t.len())].join(" ");

    if let Ok(d) = NaiveDate::parse_from_str(w, "%Y-%m-%d") {
        return Some((d, phrase(1)));
    }
    if let Some((a, b)) = w.split_once('/') {
        let (b, year) = match b.split_once('/') {
            Some((b, y)) => (b, y.parse::<i32>().ok().map(|y| if y < 100 { 2000 + y } else { y })),
            None => (b, None),
        };
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            let (month, day) = if a > 12 { (b, a) } else { (a, b) };
            if let Some(d) = month_day(base, month, day, year) {
                return Some((d, phrase(1)));
            }
        }
    }
    if let Some(month) = month_of(w) {
        // "December 5", "Dec 5th, 2026"
        if let Some(day) = next(1).and_then(day_of) {
            let year = year_of(t.get(i + 2));
            if let Some(d) = month_day(base, month, day, year) {
                return Some((d, phrase(if year.is_some() { 3 } else { 2 })));
            }
        }
    }
    if let Some(day) = day_of(w) {
        // "5 December", "5th of Dec 2026"
        let (m_at, n) = if next(1) == Some("of") { (2, 3) } else { (1, 2) };
        if let Some(month) = next(m_at).and_then(month_of) {
            let year = year_of(t.get(i + m_at + 1));
            if let Some(d) = month_day(base, month, day, year) {
                return Some((d, phrase(if year.is_some() { n + 1 } else { n })));
            }
        }
    }
    None
}

/// A date named by words: `today`, `tomorrow`, `eow`, a weekday, `end of the month`, `next
/// week`, `in 3 days`.
fn relative_date(t: &[String], i: usize, base: NaiveDate) -> Option<(NaiveDate, String)> {
    let w = t[i].as_str();
    let next = |k: usize| t.get(i + k).map(String::as_str);
    let phrase = |n: usize| t[i..(i + n).min(t.len())].join(" ");
    match w {
        "today" | "tonight" | "eod" | "cob" => return Some((base, phrase(1))),
        "tomorrow" => return Some((base + Duration::days(1), phrase(1))),
        "eow" => return Some((friday_of_week(base), phrase(1))),
        "eom" => return Some((end_of_month(base), phrase(1))),
        _ => {}
    }
    if let Some((_, day)) = WEEKDAYS.iter().find(|(name, _)| *name == w) {
        return Some((next_weekday(base, *day), phrase(1)));
    }
    if w == "end" || w == "close" {
        // "end of (the) day|week|month", "close of business"
        let skip =
            if next(1) == Some("of") { if next(2) == Some("the") { 3 } else { 2 } } else { return None };
        return match next(skip)? {
            "day" | "business" => Some((base, phrase(skip + 1))),
            "week" => Some((friday_of_week(base), phrase(skip + 1))),
            "month" => Some((end_of_month(base), phrase(skip + 1))),
            _ => None,
        };
    }
    if w == "this" && next(1) == Some("week") {
        return Some((friday_of_week(base), phrase(2)));
    }
    if w == "next" {
        return match next(1)? {
            "week" => Some((next_weekday(base, Weekday::Mon), phrase(2))),
            "month" => Some((end_of_month(base) + Duration::days(1), phrase(2))),
            _ => None,
        };
    }
    if w == "in" || w == "within" {
        let n = number_of(next(1)?)?;
        let days = match next(2)? {
            "day" | "days" => n,
            "week" | "weeks" => n * 7,
            _ => return None,
        };
        return Some((base + Duration::days(days), phrase(3)));
    }
    None
}

fn friday_of_week(base: NaiveDate) -> NaiveDate {
    match base.weekday() {
        Weekday::Sat | Weekday::Sun => next_weekday(base, Weekday::Fri),
        _ => base + Duration::days(4 - base.weekday().num_days_from_monday() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Friday, 20 November 2026.
    fn base() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 20).expect("date")
    }

    fn due(s: &str) -> Option<String> {
        find_due(s, base()).map(|(d, _)| d.to_string())
    }

    #[test]
    fn absolute_dates() {
        assert_eq!(due("Ship it by 2026-12-05 please").as_deref(), Some("2026-12-05"));
        assert_eq!(due("due December 5th").as_deref(), Some("2026-12-05"));
        assert_eq!(due("due on 3 Jan").as_deref(), Some("2027-01-03"));
        assert_eq!(due("by the 4th of March 2027.").as_deref(), Some("2027-03-04"));
        assert_eq!(due("before 12/24").as_deref(), Some("2026-12-24"));
        assert_eq!(due("before 24/12/2026").as_deref(), Some("2026-12-24"));
    }

    #[test]
    fn relative_dates_resolve_against_the_message_date() {
        assert_eq!(due("Send it today").as_deref(), Some("2026-11-20"));
        assert_eq!(due("Send it tomorrow").as_deref(), Some("2026-11-21"));
        assert_eq!(due("by Monday").as_deref(), Some("2026-11-23"));
        assert_eq!(due("by Friday").as_deref(), Some("2026-11-27"));
        assert_eq!(due("by end of the week").as_deref(), Some("2026-11-20"));
        assert_eq!(due("by end of month").as_deref(), Some("2026-11-30"));
        assert_eq!(due("sometime next week").as_deref(), Some("2026-11-23"));
        assert_eq!(due("within two weeks").as_deref(), Some("2026-12-04"));
        assert_eq!(due("in 3 days").as_deref(), Some("2026-11-23"));
    }

    #[test]
    fn sentences_without_deadlines_have_none() {
        assert_eq!(due("Please review the attached draft."), None);
        assert_eq!(due("I may be late in the office."), None);
        assert_eq!(due("The end of an era."), None);
    }

    #[test]
    fn the_phrase_is_reported() {
        assert_eq!(
            find_due("by end of the week.", base()).map(|(_, p)| p).as_deref(),
            Some("end of the week")
        );
    }
}
