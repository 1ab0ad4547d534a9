//! Audit exports besides CSV: JSON Lines (one record per line, the stored fields) and a per-task
//! PDF report with the chain hashes, for people who file it.
//!
//! The PDF is written with `pdf-writer`: A4 pages of Courier (a PDF base font, so nothing is
//! embedded) 8 pt, 100 characters a line, WinAnsi encoding (characters outside Latin-1 are
//! shown as `?`), content streams left uncompressed so the text can be searched as is.

use std::io::Write;

use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};

use super::AuditRecord;

/// Writes records as JSON Lines (`application/jsonl`): one JSON object per line, LF-terminated,
/// with the fields of [`AuditRecord`].
pub struct JsonlExport<W: Write> {
    out: W,
}

impl<W: Write> JsonlExport<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    pub fn write(&mut self, r: &AuditRecord) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, r)?;
        self.out.write_all(b"\n")
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What the PDF report says about its task, above the records.
#[derive(Debug, Clone, Default)]
pub struct ReportHead {
    /// `Task #7: Invoice 42`.
    pub title: String,
    /// `key: value` lines: sender, status, created, generated, chain check.
    pub lines: Vec<String>,
}

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 48.0;
const FONT_SIZE: f32 = 8.0;
const LEADING: f32 = 10.0;
/// Courier advances 0.6 em: 100 characters fit the text width at 8 pt.
const COLUMNS: usize = 100;

/// The audit report of one task as a PDF: the head, then per record its sequence number, time,
/// actor, action, entity, details, previous hash and hash.
pub fn pdf_report(head: &ReportHead, records: &[AuditRecord]) -> Vec<u8> {
    let mut lines = vec![head.title.clone(), String::new()];
    lines.extend(head.lines.iter().cloned());
    lines.push(String::new());
    lines.push(format!("{} audit records", records.len()));
    for r in records {
        lines.push(String::new());
        lines.push(format!("#{}  {}  {}  {}", r.seq, r.at, r.action, r.entity));
        lines.push(format!("  actor: {}", r.actor));
        if !r.details.is_null() {
            lines.push(format!("  details: {}", r.details));
        }
        lines.push(format!("  prev_hash: {}", r.prev_hash));
        lines.push(format!("  hash:      {}", r.hash));
    }
    let wrapped: Vec<String> = lines.iter().flat_map(|l| wrap(l, COLUMNS)).collect();
    let per_page = ((PAGE_HEIGHT - 2.0 * MARGIN) / LEADING) as usize;
    render(&wrapped.chunks(per_page.max(1)).collect::<Vec<_>>())
}

/// `line` cut into pieces of at most `width` characters (continuations indented).
fn wrap(line: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= width {
        return vec![line.to_owned()];
    }
    let mut out = vec![chars[..width].iter().collect::<String>()];
    for piece in chars[width..].chunks(width - 4) {
        out.push(format!("    {}", piece.iter().collect::<String>()));
    }
    out
}

/// A line in WinAnsi (Latin-1 for our purposes); other characters become `?`.
fn win_ansi(line: &str) -> Vec<u8> {
    line.chars().map(|c| if (c as u32) < 256 && !c.is_control() { c as u8 } else { b'?' }).collect()
}

fn render(pages: &[&[String]]) -> Vec<u8> {
    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let font = Ref::new(3);
    let page_ids: Vec<(Ref, Ref)> =
        (0..pages.len()).map(|i| (Ref::new(4 + 2 * i as i32), Ref::new(5 + 2 * i as i32))).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(page_ids.iter().map(|(page, _)| *page)).count(pages.len() as i32);
    pdf.type1_font(font).base_font(Name(b"Courier")).encoding_predefined(Name(b"WinAnsiEncoding"));
    for (n, (lines, (page_id, content_id))) in pages.iter().zip(&page_ids).enumerate() {
        let mut page = pdf.page(*page_id);
        page.media_box(Rect::new(0.0, 0.0, PAGE_WIDTH, PAGE_HEIGHT));
        page.parent(tree);
        page.contents(*content_id);
        page.resources().fonts().pair(Name(b"F1"), font);
        page.finish();
        let mut content = Content::new();
        content.begin_text();
        content.set_font(Name(b"F1"), FONT_SIZE);
        content.set_leading(LEADING);
        content.next_line(MARGIN, PAGE_HEIGHT - MARGIN);
        for line in lines.iter() {
            content.show(Str(&win_ansi(line)));
            content.next_line_using_leading();
        }
        let footer = format!("page {} of {}", n + 1, pages.len());
        content.end_text();
        content.begin_text();
        content.set_font(Name(b"F1"), FONT_SIZE);
        content.next_line(MARGIN, MARGIN / 2.0);
        content.show(Str(footer.as_bytes()));
        content.end_text();
        pdf.stream(*content_id, &content.finish());
    }
    pdf.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(seq: i64) -> AuditRecord {
        AuditRecord {
            seq,
            at: "2026-12-04T02:00:00.000000Z".into(),
            actor: "intake:cli".into(),
            action: "task.created".into(),
            entity: "task:7".into(),
            task_id: Some(7),
            details: if seq == 1 {
                json!({"subject": "Rechnung für März"})
            } else {
                json!({"long": "x".repeat(300)})
            },
            prev_hash: "a".repeat(64),
            hash: format!("{seq:064}"),
        }
    }

    #[test]
    fn jsonl_is_one_record_per_line() {
        let mut out = JsonlExport::new(Vec::new());
        out.write(&record(1)).expect("write");
        out.write(&record(2)).expect("write");
        let text = String::from_utf8(out.finish().expect("finish")).expect("UTF-8");
        let lines: Vec<AuditRecord> =
            text.lines().map(|l| serde_json::from_str(l).expect("a record per line")).collect();
        assert_eq!(lines, vec![record(1), record(2)]);
    }

    #[test]
    fn the_pdf_carries_every_hash_over_several_pages() {
        let records: Vec<AuditRecord> = (1..=60).map(record).collect();
        let head = ReportHead { title: "Task #7: Rechnung".into(), lines: vec!["status: done".into()] };
        let pdf = pdf_report(&head, &records);
        assert!(pdf.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&pdf);
        for r in &records {
            assert!(text.contains(&r.hash), "hash of #{} in the PDF", r.seq);
        }
        assert!(text.contains("page 2 of"), "several pages");
        // A line with non-ASCII text is written as a hex string of its WinAnsi bytes.
        assert!(text.to_ascii_lowercase().contains(&hex::encode(b"f\xfcr M\xe4rz")), "Latin-1 text kept");
    }
}
