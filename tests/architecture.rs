//! The layer table of `docs/architecture.md`, enforced: every `crate::…` path in `src/` (and
//! `swarm_director::…` in `main.rs`) is resolved to the file it names; an import that the table
//! does not allow, or a cycle of imports between files, fails with the file and line.
//! `#[cfg(test)]` modules are left out: tests may reach across layers.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

/// Who may import whom. A module belongs to the longest entry that is a prefix of its path;
/// it may import its own entry and the entries listed with it.
const LAYERS: &[(&str, &[&str])] = &[
    ("domain", &[]),
    ("audit", &["domain"]),
    // The pure mail modules: parse, guard, bounce, quote, compose.
    ("mail", &["domain"]),
    // Adapters: DNS authentication and SMTP transport.
    ("mail::auth", &["domain", "mail"]),
    ("mail::transport", &["domain", "mail"]),
    ("mail::policy", &["domain", "mail", "mail::auth"]),
    ("store", &["domain", "audit"]),
    ("agents", &["domain"]),
    ("orchestrator", &["domain", "audit", "mail", "store", "agents"]),
    ("outbox", &["domain", "audit", "mail", "mail::transport", "store"]),
    ("intake", &["domain", "audit", "mail", "mail::auth", "mail::policy", "store", "orchestrator"]),
    ("scheduler", &["domain", "mail", "store"]),
    ("reports", &["domain", "audit", "store"]),
    (
        "web",
        &[
            "domain",
            "audit",
            "mail",
            "mail::auth",
            "store",
            "agents",
            "orchestrator",
            "outbox",
            "intake",
            "scheduler",
            "reports",
        ],
    ),
];

/// The composition root, in order: each may import every layer of [`LAYERS`] and the ones
/// before it here. Nothing in [`LAYERS`] may import these (`config` is seen by `app`, `cli` and
/// `main` only).
const ROOT: &[&str] = &["config", "app", "cli", "main"];

/// One `crate::` path found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Import {
    line: usize,
    path: Vec<String>,
}

/// The module path of a source file relative to `src/`: `store/mod.rs` → `store`,
/// `mail/parse.rs` → `mail::parse`, `main.rs` → `main`; `lib.rs` → empty.
fn module_of(file: &str) -> Vec<String> {
    let file = file.strip_suffix(".rs").unwrap_or(file);
    let mut parts: Vec<String> = file.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// Source text with comments, string and char literals blanked (line breaks kept).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        for &c in s {
            out.push(if c == b'\n' { '\n' } else { ' ' });
        }
    };
    while i < b.len() {
        let rest = &b[i..];
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with(b"/*") {
            let mut depth = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if rest[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &rest[..j.min(rest.len())]);
            i += j.min(rest.len());
        } else if rest.starts_with(b"r#\"") || rest.starts_with(b"r\"") || rest.starts_with(b"br\"") {
            let start = rest.iter().position(|&c| c == b'"').unwrap_or(0);
            let hashes = rest[..start].iter().filter(|&&c| c == b'#').count();
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            let end = rest[start + 1..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(rest.len(), |p| start + 1 + p + close.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'"' {
            let mut j = 1;
            while j < rest.len() && rest[j] != b'"' {
                j += if rest[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): only the former is blanked.
            let end = if rest.get(1) == Some(&b'\\') {
                rest[2..].iter().position(|&c| c == b'\'').map(|p| p + 3)
            } else {
                let ch = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + ch) == Some(&b'\'')).then_some(2 + ch)
            };
            match end {
                Some(end) => {
                    blank(&mut out, &rest[..end]);
                    i += end;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let ch = src[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Most lines a source file may have, its test modules aside.
const MAX_FILE_LINES: usize = 600;
/// Most lines a function may have (signature to closing brace), in test modules aside.
const MAX_FN_LINES: usize = 80;

/// Files and functions over the size limits, each named with its file and line.
fn oversized(files: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (file, src) in files {
        let stripped = code_only(src);
        let tests: usize = test_modules(&stripped).into_iter().map(|s| stripped[s].lines().count()).sum();
        let lines = src.lines().count() - tests;
        let code = without_test_modules(&stripped);
        if lines > MAX_FILE_LINES {
            problems.push(format!("src/{file}: {lines} lines, tests aside (at most {MAX_FILE_LINES})"));
        }
        for (line, name, length) in functions(&code) {
            if length > MAX_FN_LINES {
                problems.push(format!(
                    "src/{file}:{line}: fn {name} has {length} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    problems
}

/// Every function with a body in `code` (comments, strings and tests already blanked):
/// (first line, name, lines from the `fn` to its closing brace).
fn functions(code: &str) -> Vec<(usize, String, usize)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("fn ").map(|p| p + from) {
        from = at + 3;
        if code[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let name: String = code[at + 3..].trim_start().chars().take_while(|&c| is_ident(c)).collect();
        if name.is_empty() {
            continue; // `fn(` in a type
        }
        let rest = &code[at..];
        let (Some(open), semi) = (rest.find('{'), rest.find(';')) else { continue };
        if semi.is_some_and(|s| s < open) {
            continue; // a declaration without a body
        }
        let close = closing_brace(rest, open);
        let first = code[..at].matches('\n').count() + 1;
        let length = rest[..close].matches('\n').count() + 1;
        found.push((first, name, length));
    }
    found
}

/// The byte offset of the `}` that closes the `{` at `open` (the end of `code` when none does).
fn closing_brace(code: &str, open: usize) -> usize {
    let mut depth = 0;
    for (k, c) in code[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return open + k;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// Byte ranges of the `#[cfg(test)] mod name { … }` blocks of `code`.
fn test_modules(code: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("#[cfg(test)]").map(|p| p + from) {
        from = at + 1;
        if !code[at + "#[cfg(test)]".len()..].trim_start().starts_with("mod ") {
            continue;
        }
        let Some(open) = code[at..].find('{').map(|p| p + at) else { break };
        let end = (closing_brace(code, open) + 1).min(code.len());
        spans.push(at..end);
        from = end;
    }
    spans
}

/// `code` with its test modules blanked (line breaks kept).
fn without_test_modules(code: &str) -> String {
    let mut out = code.to_owned();
    for span in test_modules(code) {
        let blanked: String =
            code[span.clone()].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
        out.replace_range(span, &blanked);
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Every path below `root::` (`crate` or `swarm_director`), with `{a, b::{c}}` groups expanded.
fn imports(src: &str, root: &str) -> Vec<Import> {
    let code = without_test_modules(&code_only(src));
    let needle = format!("{root}::");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find(&needle).map(|p| p + from) {
        from = at + needle.len();
        if code[..at].chars().next_back().is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let line = code[..at].matches('\n').count() + 1;
        let mut paths = Vec::new();
        parse_tree(&code[from..], Vec::new(), &mut paths);
        found.extend(paths.into_iter().filter(|p| !p.is_empty()).map(|path| Import { line, path }));
    }
    found
}

/// Parses `a::b::{c, d::e}` at the start of `s`; returns how many bytes it used.
fn parse_tree(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix;
    let mut i = 0;
    loop {
        let rest = &s[i..];
        let skipped = rest.len() - rest.trim_start().len();
        i += skipped;
        let rest = &s[i..];
        if rest.starts_with('{') {
            i += 1;
            loop {
                let rest = &s[i..];
                let skipped = rest.len() - rest.trim_start().len();
                i += skipped;
                if s[i..].starts_with('}') {
                    return i + 1;
                }
                if s[i..].starts_with(',') {
                    i += 1;
                    continue;
                }
                if i >= s.len() {
                    return i;
                }
                let used = parse_tree(&s[i..], path.clone(), out);
                if used == 0 {
                    return i;
                }
                i += used;
            }
        }
        let ident: String = rest.chars().take_while(|&c| is_ident(c)).collect();
        if ident.is_empty() {
            out.push(path);
            return i;
        }
        i += ident.len();
        if ident != "self" {
            path.push(ident);
        }
        if s[i..].starts_with("::") {
            i += 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

/// The file an import path names: the longest prefix of it that is a module file.
fn resolve<'a>(modules: &'a BTreeMap<Vec<String>, String>, path: &[String]) -> Option<&'a String> {
    (1..=path.len()).rev().find_map(|n| modules.get(&path[..n]))
}

/// The layer entry a module belongs to.
fn layer_of(module: &[String]) -> Option<&'static str> {
    let joined = module.join("::");
    LAYERS
        .iter()
        .map(|(name, _)| *name)
        .chain(ROOT.iter().copied())
        .filter(|name| joined == *name || joined.starts_with(&format!("{name}::")))
        .max_by_key(|name| name.len())
}

fn allowed(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    match (ROOT.iter().position(|r| *r == from), ROOT.iter().position(|r| *r == to)) {
        (Some(f), Some(t)) => t < f,
        (Some(_), None) => true,
        (None, _) => LAYERS.iter().any(|(name, deps)| *name == from && deps.contains(&to)),
    }
}

/// Checks files (path relative to `src/` → source); returns one message per problem.
fn check(files: &BTreeMap<String, String>) -> Vec<String> {
    let modules: BTreeMap<Vec<String>, String> =
        files.keys().map(|f| (module_of(f), f.clone())).filter(|(m, _)| !m.is_empty()).collect();
    let mut problems = Vec::new();
    // file → (imported file → first line)
    let mut edges: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for (file, src) in files {
        let module = module_of(file);
        let root = if file == "main.rs" { "swarm_director" } else { "crate" };
        let Some(from_layer) = layer_of(&module) else {
            if !module.is_empty() {
                problems.push(format!(
                    "src/{file}: module {} has no entry in the layer table",
                    module.join("::")
                ));
            }
            continue;
        };
        for import in imports(src, root) {
            let Some(target) = resolve(&modules, &import.path) else { continue };
            if target == file {
                continue;
            }
            let to_module = module_of(target);
            let Some(to_layer) = layer_of(&to_module) else { continue };
            if !allowed(from_layer, to_layer) {
                problems.push(format!(
                    "src/{file}:{}: {} imports {} (layer {from_layer} may not import layer {to_layer})",
                    import.line,
                    module.join("::"),
                    import.path.join("::"),
                ));
            }
            edges.entry(file).or_default().entry(target.as_str()).or_insert(import.line);
        }
    }
    problems.extend(cycles(&edges));
    problems
}

/// Import cycles between files, each named with the line of every import on it.
fn cycles(edges: &BTreeMap<&str, BTreeMap<&str, usize>>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut reported: BTreeSet<Vec<&str>> = BTreeSet::new();
    for &start in edges.keys() {
        // Shortest way back to `start`, by breadth-first search.
        let mut previous: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        let mut closing = None;
        while let Some(node) = queue.pop_front() {
            for &next in edges.get(node).map(|m| m.keys().collect::<Vec<_>>()).unwrap_or_default() {
                if next == start {
                    closing = Some(node);
                    break;
                }
                if !previous.contains_key(next) && next != start {
                    previous.insert(next, node);
                    queue.push_back(next);
                }
            }
            if closing.is_some() {
                break;
            }
        }
        let Some(mut node) = closing else { continue };
        let mut ring = vec![node];
        while node != start {
            node = previous[node];
            ring.push(node);
        }
        ring.reverse();
        let mut key = ring.clone();
        key.sort_unstable();
        if !reported.insert(key) {
            continue;
        }
        let steps: Vec<String> = ring
            .iter()
            .zip(ring.iter().cycle().skip(1))
            .map(|(a, b)| format!("src/{a}:{} imports src/{b}", edges[a][b]))
            .collect();
        problems.push(format!("import cycle: {}", steps.join(", ")));
    }
    problems
}

fn source_files(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("src/ is readable").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(base).expect("under src").to_string_lossy().replace('\\', "/");
            out.insert(rel, std::fs::read_to_string(&path).expect("source is UTF-8"));
        }
    }
}

#[test]
fn imports_follow_the_layer_table_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    source_files(&src, &src, &mut files);
    assert!(files.len() > 20, "found only {} files in {}", files.len(), src.display());
    let problems = check(&files);
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files.iter().map(|(f, s)| (f.to_string(), s.to_string())).collect()
}

#[test]
fn no_file_or_function_is_over_the_size_limits() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    source_files(&src, &src, &mut files);
    let problems = oversized(&files);
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn size_checker_counts_function_lines_without_tests() {
    let long_body = "    let x = 1;\n".repeat(MAX_FN_LINES);
    let files = tree(&[(
        "store/mod.rs",
        &format!(
            "fn short() {{ let s = \"{{\"; }}\nfn long() {{\n{long_body}}}\n#[cfg(test)]\nmod tests {{\n    fn huge() {{\n{long_body}    }}\n}}\n"
        ),
    )]);
    assert_eq!(
        oversized(&files),
        [format!("src/store/mod.rs:2: fn long has {} lines (at most {MAX_FN_LINES})", MAX_FN_LINES + 2)]
    );
}

#[test]
fn checker_reports_an_upward_import_with_file_and_line() {
    let files = tree(&[
        ("domain/mod.rs", "pub struct Id;\n"),
        ("store/mod.rs", "use crate::domain::Id;\n\nuse crate::web::{Page, inbound::Hook};\n"),
        ("web/mod.rs", "use crate::store::Store;\npub mod inbound;\n"),
        ("web/inbound.rs", "pub struct Hook;\n"),
    ]);
    let problems = check(&files);
    assert_eq!(problems.len(), 3, "{problems:#?}"); // two paths into web, and the store ⇄ web cycle
    assert!(problems[0].starts_with("src/store/mod.rs:3: store imports web::Page"), "{problems:#?}");
    assert!(problems[1].starts_with("src/store/mod.rs:3: store imports web::inbound::Hook"), "{problems:#?}");
    assert!(problems[2].starts_with("import cycle:"), "{problems:#?}");
}

#[test]
fn only_the_composition_root_sees_config() {
    let files = tree(&[
        ("config.rs", "use crate::web::inbound::Settings;\n"),
        ("app.rs", "use crate::config::Settings;\n"),
        ("web/mod.rs", "pub mod inbound;\nfn f(s: &crate::config::Settings) {}\n"),
        ("web/inbound.rs", "pub struct Settings;\n"),
    ]);
    let problems = check(&files);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].starts_with("src/web/mod.rs:2: web imports config::Settings"), "{problems:#?}");
}

#[test]
fn checker_reports_a_cycle_inside_one_layer() {
    let files = tree(&[
        ("mail/mod.rs", "pub mod a; pub mod b;\n"),
        ("mail/a.rs", "use crate::mail::b::B;\npub struct A;\n"),
        ("mail/b.rs", "// use crate::mail::c is only a comment\nfn f() { let _ = crate::mail::a::A; }\n"),
    ]);
    assert_eq!(
        check(&files),
        ["import cycle: src/mail/a.rs:1 imports src/mail/b.rs, src/mail/b.rs:2 imports src/mail/a.rs"]
    );
}

#[test]
fn checker_ignores_comments_strings_and_test_modules() {
    let files = tree(&[
        ("domain/mod.rs", "const S: &str = \"crate::web::X\";\nlet c = '\"'; // crate::web\n"),
        ("web/mod.rs", "pub struct X;\n"),
        ("store/mod.rs", "#[cfg(test)]\nmod tests {\n    use crate::web::X;\n}\nfn f<'a>(x: &'a str) {}\n"),
    ]);
    assert_eq!(check(&files), Vec::<String>::new());
}
