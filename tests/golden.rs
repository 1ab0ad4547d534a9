//! Golden parse tests: every `fixtures/*.eml` parses to the JSON beside it (`*.json`).
//! Regenerate after an intended change with `UPDATE_GOLDEN=1 cargo test --test golden`.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;
use swarm_director::mail::parse;
use swarm_director::mail::parse::Limits;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("fixtures folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .collect();
    files.sort();
    files
}

/// Line-by-line differences, numbered, at most 20.
fn diff(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut out = Vec::new();
    for i in 0..e.len().max(a.len()) {
        let (x, y) = (e.get(i).copied(), a.get(i).copied());
        if x != y {
            out.push(format!(
                "line {}:\n  - {}\n  + {}",
                i + 1,
                x.unwrap_or("<none>"),
                y.unwrap_or("<none>")
            ));
        }
        if out.len() == 20 {
            out.push("...".into());
            break;
        }
    }
    out.join("\n")
}

#[test]
fn every_fixture_parses_to_its_golden_json() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let files = fixtures();
    assert!(files.len() >= 6, "expected the fixture set, found {}", files.len());
    let mut failures = Vec::new();
    for path in files {
        let raw = fs::read(&path).expect("readable fixture");
        let actual = match parse(&raw, &Limits::default()) {
            Ok(p) => json!({"email": p.email, "signals": p.signals}),
            Err(e) => json!({"error": e.to_string()}),
        };
        let actual = serde_json::to_string_pretty(&actual).expect("json") + "\n";
        let golden = path.with_extension("json");
        if update {
            fs::write(&golden, &actual).expect("write golden");
            continue;
        }
        match fs::read_to_string(&golden) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!("{}:\n{}", path.display(), diff(&expected, &actual))),
            Err(_) => failures.push(format!(
                "{}: no golden file; run UPDATE_GOLDEN=1 cargo test --test golden",
                golden.display()
            )),
        }
    }
    assert!(failures.is_empty(), "golden mismatches:\n\n{}", failures.join("\n\n"));
}
