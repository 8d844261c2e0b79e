//! The house rules: which of herald's modules may import which, and how
//! long a source file may grow. Reads every `crate::<module>` path in
//! `src/` (comments aside) and fails on a rule broken or a cycle between
//! top-level modules, and on a file in `src/` over [`MAX_LINES`] lines that
//! is not a listed exception. The rules are written once, here, each with
//! the reason it exists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module that does one part of the flow.
const ROLES: &[&str] = &[
    "api",
    "batch",
    "dashboard",
    "fleet",
    "http",
    "ingress",
    "jobs",
    "layer",
    "payload",
    "publish",
    "queue",
    "sidecar",
    "store",
    "telemetry",
    "tokens",
    "worker",
];

/// `(module, modules it must not import, why)`.
const RULES: &[(&str, &[&str], &str)] = &[
    (
        "config",
        ROLES,
        "configuration only describes and parses; each role checks its own settings \
         (startup::check_settings), so config sits below every role",
    ),
    (
        "layer",
        &["store", "jobs", "sidecar", "publish", "queue", "worker"],
        "the channel layer is a transport (channels_redis's wire): it carries messages to \
         groups and knows nothing of rows, jobs or sockets",
    ),
    (
        "store",
        &["layer", "sidecar", "publish", "jobs", "queue"],
        "the store keeps rows; publishing them is publish's part and delivering them the \
         sidecar's, so a store change never reaches the wire",
    ),
    (
        "sidecar",
        &[
            "queue",
            "jobs",
            "api",
            "dashboard",
            "http",
            "worker",
            "ingress",
        ],
        "the sidecar knows sockets only: submission and the rest of the HTTP surface are \
         composed around it in http",
    ),
    (
        "jobs",
        &["queue", "worker", "api", "ingress", "sidecar", "http"],
        "a job kind is a payload and a handler; queues, workers and front doors carry it",
    ),
];

/// Modules nothing in the library imports: they run the roles, and a role
/// that reached up to them would depend on the command line.
const TOP: &[(&str, &str)] = &[
    (
        "commands",
        "the CLI's commands call the roles, never the other way",
    ),
    (
        "startup",
        "startup builds and runs the roles; main only calls it",
    ),
];

/// Modules only the top may import.
const OPENERS: &[(&str, &[&str], &str)] = &[(
    "connect",
    &["commands", "startup"],
    "opening the store, queue and layer is the top's job; a role gets them handed in",
)];

/// The most lines a source file in `src/` may have: past it, a file holds
/// more than one part, and is split along its seams.
const MAX_LINES: usize = 500;

/// `(file, why it may be longer)`: the few files allowed over
/// [`MAX_LINES`], each for a reason. An exception whose file is gone or
/// back under the limit fails too, so the list only shrinks.
const LONG_FILES: &[(&str, &str)] = &[];

/// The top-level module a source file belongs to: `src/a/b.rs` and
/// `src/a.rs` are `a`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    let first = first.to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules `text` names as `crate::<module>`, comments aside.
fn imports_of(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        // A trailing comment (a string holding " //" would be cut short too).
        let code = code.split(" //").next().unwrap_or_default();
        for (at, _) in code.match_indices("crate::") {
            let before = code[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // `mycrate::`, not herald's own.
            }
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// Module -> the other top-level modules it imports, from `src/`.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(&src, &file);
        if module == "main" || module == "lib" {
            continue; // the binary and the crate root declare, not import.
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let imports: Vec<String> = imports_of(&text)
            .into_iter()
            .filter(|m| *m != module)
            .collect();
        graph.entry(module).or_default().extend(imports);
    }
    graph
}

/// Each file over [`MAX_LINES`] that `long_files` does not excuse, and each
/// exception that no longer applies, one line each; `files` are
/// `(path from the crate root, lines)`.
fn length_violations(files: &[(String, usize)], long_files: &[(&str, &str)]) -> Vec<String> {
    let mut broken = Vec::new();
    for (path, lines) in files {
        if *lines > MAX_LINES && !long_files.iter().any(|(file, _)| file == path) {
            broken.push(format!(
                "{path} has {lines} lines, over {MAX_LINES}: split it along its seams \
                 (or name it in LONG_FILES with its reason)"
            ));
        }
    }
    for (file, why) in long_files {
        match files.iter().find(|(path, _)| path == file) {
            None => broken.push(format!("{file} is gone: drop its exception ({why})")),
            Some((_, lines)) if *lines <= MAX_LINES => broken.push(format!(
                "{file} has {lines} lines, within {MAX_LINES}: drop its exception ({why})"
            )),
            Some(_) => {}
        }
    }
    broken
}

/// Every source file in `src/` with its line count, by its path from the
/// crate root (`src/a/b.rs`).
fn source_lengths() -> Vec<(String, usize)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut lengths: Vec<(String, usize)> = files
        .iter()
        .map(|file| {
            let relative = file.strip_prefix(&root).unwrap();
            let path = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let lines = std::fs::read_to_string(file).unwrap().lines().count();
            (path, lines)
        })
        .collect();
    lengths.sort();
    lengths
}

/// Every broken rule and every cycle, one line each.
fn violations(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut broken = Vec::new();
    for (module, forbidden, why) in RULES {
        for import in graph.get(*module).into_iter().flatten() {
            if forbidden.contains(&import.as_str()) {
                broken.push(format!("{module} imports {import}: {why}"));
            }
        }
    }
    for (module, imports) in graph {
        for (top, why) in TOP {
            if imports.contains(*top) {
                broken.push(format!("{module} imports {top}: {why}"));
            }
        }
        for (opener, allowed, why) in OPENERS {
            if imports.contains(*opener) && !allowed.contains(&module.as_str()) {
                broken.push(format!("{module} imports {opener}: {why}"));
            }
        }
    }
    broken.extend(cycles(graph));
    broken
}

/// One line per cycle found by a depth-first walk (each reported once, from
/// the edge that closes it).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn walk<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        found: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node);
            found.push(format!(
                "import cycle {}: modules must import one way (submit, queue, run, store, \
                 publish, deliver)",
                cycle.join(" -> ")
            ));
            return;
        }
        if !done.insert(node) {
            return;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            walk(next, graph, path, done, found);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        walk(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn every_module_imports_only_what_the_rules_allow() {
    let graph = import_graph();
    assert!(
        graph.contains_key("config") && graph.contains_key("sidecar"),
        "the walk found herald's modules: {:?}",
        graph.keys()
    );
    let broken = violations(&graph);
    assert!(
        broken.is_empty(),
        "house rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_source_file_is_longer_than_the_limit_unless_excused() {
    let files = source_lengths();
    assert!(
        files.iter().any(|(path, _)| path == "src/lib.rs"),
        "the walk found herald's files: {files:?}"
    );
    let broken = length_violations(&files, LONG_FILES);
    assert!(
        broken.is_empty(),
        "house rules broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn a_long_file_and_a_stale_exception_are_caught() {
    let files = [
        ("src/a.rs".to_string(), MAX_LINES),
        ("src/b.rs".to_string(), MAX_LINES + 1),
        ("src/c.rs".to_string(), MAX_LINES + 1),
        ("src/d.rs".to_string(), 10),
    ];
    let broken = length_violations(
        &files,
        &[
            ("src/c.rs", "why"),
            ("src/d.rs", "why"),
            ("src/e.rs", "why"),
        ],
    );
    assert_eq!(broken.len(), 3, "{broken:?}");
    let too_long = format!("src/b.rs has {} lines", MAX_LINES + 1);
    assert!(broken[0].starts_with(&too_long), "{broken:?}");
    assert!(broken[1].starts_with("src/d.rs has 10 lines"), "{broken:?}");
    assert!(broken[2].starts_with("src/e.rs is gone"), "{broken:?}");
}

#[test]
fn a_reach_up_and_a_cycle_are_caught() {
    let text = "use crate::jobs::KINDS; // crate::worker\n// crate::store\nlet x = crate::commands::run();\nmycrate::queue";
    assert_eq!(
        imports_of(text),
        BTreeSet::from(["jobs".to_string(), "commands".to_string()])
    );
    let graph = BTreeMap::from([
        ("config".to_string(), BTreeSet::from(["jobs".to_string()])),
        ("jobs".to_string(), BTreeSet::from(["config".to_string()])),
        (
            "worker".to_string(),
            BTreeSet::from(["commands".to_string()]),
        ),
    ]);
    let broken = violations(&graph);
    assert!(
        broken.iter().any(|b| b.starts_with("config imports jobs")),
        "{broken:?}"
    );
    assert!(
        broken
            .iter()
            .any(|b| b.starts_with("worker imports commands")),
        "{broken:?}"
    );
    assert!(
        broken
            .iter()
            .any(|b| b.starts_with("import cycle config -> jobs -> config")),
        "{broken:?}"
    );
}
