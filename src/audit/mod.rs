//! The append-only, hash-chained audit log: its record shape, the chain hash, verification and
//! CSV export. Rows are written by `store` inside the same transaction as the state change they
//! record; this module never updates or deletes one.
//!
//! Chain: `hash = hex(sha256(prev_hash || "\n" || canonical_json))`, where `canonical_json` is the
//! record without its hashes, serialized with keys in a fixed order (object keys sorted). The first
//! record's `prev_hash` is [`GENESIS`]. A single-row chain head (seq, hash) moves in the same
//! transaction, so removing the newest rows is detected too.

pub mod export;

use std::io::Write;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a state change appends to the log.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Who acted: `intake:cli`, `intake:webhook`, `worker`, `outbox`, ...
    pub actor: String,
    /// Dotted verb: `message.received`, `task.created`, `step.finished`, `delivery.delivered`, ...
    pub action: &'static str,
    /// `kind:id` of the row changed, e.g. `task:42`.
    pub entity: String,
    pub task_id: Option<i64>,
    pub details: Value,
}

impl AuditEvent {
    pub fn new(actor: impl Into<String>, action: &'static str, entity: impl Into<String>) -> Self {
        Self { actor: actor.into(), action, entity: entity.into(), task_id: None, details: Value::Null }
    }

    pub fn task(mut self, id: i64) -> Self {
        self.task_id = Some(id);
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// One stored audit row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub seq: i64,
    /// RFC 3339, UTC, microseconds.
    pub at: String,
    pub actor: String,
    pub action: String,
    pub entity: String,
    pub task_id: Option<i64>,
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Appends the canonical JSON of `value`: no whitespace, object keys sorted by their UTF-8 bytes
/// at every level, strings and numbers as serde_json writes them. It does not depend on how
/// serde_json orders map keys (its `preserve_order` feature, which any crate in the build can
/// switch on), so a record's hash never changes with the dependency graph.
pub fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(key, out);
                out.push(b':');
                canonical_json(item, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        // Scalars: serde_json's own writer; writing into a Vec cannot fail.
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
fn json_string(s: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Computes a record's hash from its predecessor's hash and its own fields.
#[allow(clippy::too_many_arguments)]
pub fn chain_hash(
    prev_hash: &str,
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    entity: &str,
    task_id: Option<i64>,
    details: &Value,
) -> String {
    // The hashed form, fixed: the fields in this order, `details` in canonical JSON.
    let mut json = Vec::with_capacity(256);
    json.extend_from_slice(b"{\"seq\":");
    canonical_json(&Value::from(seq), &mut json);
    for (name, value) in [("at", at), ("actor", actor), ("action", action), ("entity", entity)] {
        json.extend_from_slice(b",\"");
        json.extend_from_slice(name.as_bytes());
        json.extend_from_slice(b"\":");
        json_string(value, &mut json);
    }
    json.extend_from_slice(b",\"task_id\":");
    canonical_json(&task_id.map_or(Value::Null, Value::from), &mut json);
    json.extend_from_slice(b",\"details\":");
    canonical_json(details, &mut json);
    json.push(b'}');
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(&json);
    hex::encode(hasher.finalize())
}

impl AuditRecord {
    fn expected_hash(&self) -> String {
        chain_hash(
            &self.prev_hash,
            self.seq,
            &self.at,
            &self.actor,
            &self.action,
            &self.entity,
            self.task_id,
            &self.details,
        )
    }
}

/// The first record that breaks the chain, and how.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("audit record seq {seq} is bad: {problem}")]
pub struct ChainBroken {
    pub seq: i64,
    pub problem: String,
}

/// Walks records in `seq` order and checks every link, then the chain head.
///
/// Detects an altered row (its hash no longer matches), a removed row (a gap in `seq` or a
/// `prev_hash` that does not match), and removed newest rows (the head points past the last row).
/// Returns the number of records checked.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
    count: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self { expected_seq: 1, prev_hash: GENESIS.to_owned(), count: 0 }
    }
}

impl ChainVerifier {
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), ChainBroken> {
        let broken = |problem: String| ChainBroken { seq: record.seq, problem };
        if record.seq != self.expected_seq {
            return Err(broken(format!(
                "expected seq {} here, found {} (a record was removed)",
                self.expected_seq, record.seq
            )));
        }
        if record.prev_hash != self.prev_hash {
            return Err(broken("prev_hash does not match the previous record's hash".into()));
        }
        if record.hash != record.expected_hash() {
            return Err(broken("contents do not match its hash (the record was altered)".into()));
        }
        self.expected_seq += 1;
        self.prev_hash = record.hash.clone();
        self.count += 1;
        Ok(())
    }

    /// Final check against the chain head `(seq, hash)`.
    pub fn finish(self, head_seq: i64, head_hash: &str) -> Result<u64, ChainBroken> {
        if head_seq != self.expected_seq - 1 || head_hash != self.prev_hash {
            return Err(ChainBroken {
                seq: head_seq,
                problem: format!(
                    "chain head is seq {head_seq} but the log ends at seq {} (records were removed)",
                    self.expected_seq - 1
                ),
            });
        }
        Ok(self.count)
    }
}

/// Makes a CSV cell safe to open in a spreadsheet: a cell starting with `=`, `+`, `-`, `@`, tab or
/// CR gets a leading `'` (OWASP "CSV injection").
pub fn neutralize_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// Column order of the CSV export.
pub const CSV_HEADER: [&str; 9] =
    ["seq", "at", "actor", "action", "entity", "task_id", "details", "prev_hash", "hash"];

/// Writes records as RFC 4180 CSV (CRLF rows, quoted where needed) with a header row.
pub struct CsvExport<W: Write> {
    writer: csv::Writer<W>,
}

impl<W: Write> CsvExport<W> {
    pub fn new(out: W) -> csv::Result<Self> {
        let mut writer = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out);
        writer.write_record(CSV_HEADER)?;
        Ok(Self { writer })
    }

    pub fn write(&mut self, r: &AuditRecord) -> csv::Result<()> {
        let seq = r.seq.to_string();
        let task = r.task_id.map(|t| t.to_string()).unwrap_or_default();
        let details = if r.details.is_null() { String::new() } else { r.details.to_string() };
        let cells = [&seq, &r.at, &r.actor, &r.action, &r.entity, &task, &details, &r.prev_hash, &r.hash];
        self.writer.write_record(cells.iter().map(|c| neutralize_formula(c).into_owned()))
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.writer.flush()?;
        self.writer.into_inner().map_err(|e| e.into_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Pinned: a record hashes the same whatever order serde_json keeps map keys in. Built from
    /// a map whose keys were inserted unsorted; the hash was computed independently (SHA-256 of
    /// the previous hash, a line feed and the canonical JSON written out by hand).
    #[test]
    fn the_hashed_form_is_fixed_canonical_json() {
        let mut inner = serde_json::Map::new();
        inner.insert("b".into(), json!([1, "x"]));
        inner.insert("a".into(), Value::Null);
        let mut details = serde_json::Map::new();
        details.insert("zeta".into(), json!(1));
        details.insert("alpha".into(), Value::Object(inner));
        details.insert("mid".into(), json!("é"));
        let details = Value::Object(details);
        let mut out = Vec::new();
        canonical_json(&details, &mut out);
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            r#"{"alpha":{"a":null,"b":[1,"x"]},"mid":"é","zeta":1}"#
        );
        let hash = chain_hash(
            &"0".repeat(64),
            7,
            "2026-12-01T10:00:00.000000Z",
            "worker",
            "task.created",
            "task:3",
            Some(3),
            &details,
        );
        assert_eq!(hash, "3b8d25a8f791ed6819b01afac4656bf4ada4dbbb36f121dd66acaf45b3c0c258");
    }

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let details = json!({"n": seq, "b": "x", "a": [1, 2]});
                let at = format!("2026-11-22T00:00:{seq:02}.000000Z");
                let hash = chain_hash(&prev, seq, &at, "test", "thing.done", "task:1", Some(1), &details);
                let r = AuditRecord {
                    seq,
                    at,
                    actor: "test".into(),
                    action: "thing.done".into(),
                    entity: "task:1".into(),
                    task_id: Some(1),
                    details,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                r
            })
            .collect()
    }

    fn verify(records: &[AuditRecord], head: (i64, &str)) -> Result<u64, ChainBroken> {
        let mut v = ChainVerifier::default();
        for r in records {
            v.push(r)?;
        }
        v.finish(head.0, head.1)
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        assert_eq!(verify(&c, (5, &c[4].hash)), Ok(5));
    }

    #[test]
    fn altered_details_are_detected_at_that_record() {
        let mut c = chain(5);
        c[2].details = json!({"n": 3, "b": "y", "a": [1, 2]});
        let head = c[4].hash.clone();
        assert_eq!(verify(&c, (5, &head)).expect_err("altered").seq, 3);
    }

    #[test]
    fn removed_record_is_detected() {
        let mut c = chain(5);
        c.remove(1);
        let head = c[3].hash.clone();
        assert_eq!(verify(&c, (5, &head)).expect_err("removed").seq, 3);
    }

    #[test]
    fn removed_tail_is_detected_by_the_head() {
        let c = chain(5);
        assert!(verify(&c[..4], (5, &c[4].hash)).is_err());
    }

    #[test]
    fn hash_does_not_depend_on_key_order_in_details() {
        let a = chain_hash(GENESIS, 1, "t", "a", "b", "c", None, &json!({"x": 1, "y": 2}));
        let b: Value = serde_json::from_str(r#"{"y":2,"x":1}"#).expect("json");
        assert_eq!(a, chain_hash(GENESIS, 1, "t", "a", "b", "c", None, &b));
    }

    #[test]
    fn formula_cells_are_prefixed() {
        for (input, want) in [
            ("=SUM(A1)", "'=SUM(A1)"),
            ("+1", "'+1"),
            ("-2", "'-2"),
            ("@cmd", "'@cmd"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("plain", "plain"),
            ("", ""),
        ] {
            assert_eq!(neutralize_formula(input), want);
        }
    }

    #[test]
    fn csv_export_quotes_per_rfc4180_and_neutralizes_formulas() {
        let mut r = chain(1).remove(0);
        r.actor = "=HYPERLINK(\"http://evil\")".into();
        r.entity = "a,b".into();
        let mut out = CsvExport::new(Vec::new()).expect("writer");
        out.write(&r).expect("row");
        let text = String::from_utf8(out.finish().expect("flush")).expect("utf8");
        let mut lines = text.split("\r\n");
        assert_eq!(lines.next(), Some("seq,at,actor,action,entity,task_id,details,prev_hash,hash"));
        let row = lines.next().expect("row");
        assert!(row.contains(r#""'=HYPERLINK(""http://evil"")""#), "{row}");
        assert!(row.contains(r#","a,b","#) || row.contains(r#""a,b""#), "{row}");
    }
}
