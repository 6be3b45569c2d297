//! The crate's modules form layers (listed in `src/lib.rs`): a module imports (`crate::<module>`)
//! only modules of lower layers, or of its own layer without a cycle, so each layer can be read
//! and changed without the ones above it. The verbs and everything below them know nothing of
//! HTTP: only the front end and the server handle use the HTTP crates.
//!
//! The graph is read from the sources: every `crate::` path outside comments, per top-level
//! module (`src/x.rs` and `src/x/**` are module `x`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The modules by layer, bottom to top, as in `src/lib.rs`. A new module must be placed here.
const LAYERS: &[&[&str]] = &[
    &[
        "builtin",
        "clock",
        "error",
        "events",
        "protobuf",
        "request",
        "semantics",
        "tls",
    ],
    &["resources", "store"],
    &["authn", "crd_storage", "rbac", "sem"],
    &["api", "discovery", "table"],
    &["shared"],
    &["aggregation", "crd_switch", "gc", "watch"],
    &["http"],
    &["server"],
];

/// Modules that may use the HTTP crates.
const HTTP_MODULES: &[&str] = &["http", "server"];

/// The HTTP crates.
const HTTP_CRATES: &[&str] = &["http", "http_body_util", "hyper", "hyper_util"];

/// Where a module refers to another: file and line.
type Site = (PathBuf, usize);

/// The crate's sources: module name -> (file, code with comments blanked) for every file under
/// `src/` except the crate root (which declares and re-exports every module) and `src/bin`
/// (separate crates).
fn sources() -> Vec<(String, PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path.strip_prefix(&src).ok()?.to_path_buf();
            let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
            if first == "bin" || first == "lib.rs" {
                return None;
            }
            let module = first.trim_end_matches(".rs").to_owned();
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            Some((module, rel, code(&text)))
        })
        .collect()
}

/// `text` with comments blanked (comment lines emptied, trailing `// ...` cut), lines kept so
/// that positions still give line numbers. Doc comments and their links are comments too.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("//") {
                return "";
            }
            // A trailing comment starts at `//` after whitespace (`https://` is not one).
            match line.find(" //") {
                Some(i) => &line[..i],
                None => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
    &s[..end]
}

/// Occurrences of the path segment `name::` that start a path (not `x::name::`, not
/// `$name::`, not part of a longer identifier), with their byte offsets.
fn path_starts<'a>(code: &'a str, name: &str) -> Vec<(usize, &'a str)> {
    let pat = format!("{name}::");
    code.match_indices(&pat)
        .filter(|(i, _)| {
            let before = &code[..*i];
            !before.ends_with(is_ident) && !before.ends_with(':') && !before.ends_with('$')
        })
        .map(|(i, m)| (i, &code[i + m.len()..]))
        .collect()
}

/// The inside of the `{...}` group `rest` starts with, if it starts with one.
fn group(rest: &str) -> Option<&str> {
    let inner = rest.strip_prefix('{')?;
    let mut depth = 0;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(&inner[..i]),
            '}' => depth -= 1,
            _ => {}
        }
    }
    Some(inner)
}

/// The first segments of the paths after `crate::` at `rest`: one, or each of a `{...}` group.
fn first_segments(rest: &str) -> Vec<String> {
    let Some(group) = group(rest) else {
        return vec![ident_at(rest).to_owned()];
    };
    let mut depth = 0;
    let mut items = vec![String::new()];
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(String::new());
                continue;
            }
            _ => {}
        }
        if let Some(item) = items.last_mut() {
            item.push(c);
        }
    }
    items
        .iter()
        .map(|i| ident_at(i.trim()).to_owned())
        .filter(|i| !i.is_empty())
        .collect()
}

fn line_of(code: &str, offset: usize) -> usize {
    code[..offset].matches('\n').count() + 1
}

/// Names the crate root re-exports (`pub use module::{A, B};`) -> their module, so that a
/// `crate::A` counts as a use of `module`.
fn reexports() -> BTreeMap<String, String> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap_or_else(|e| panic!("reading lib.rs: {e}"));
    let mut out = BTreeMap::new();
    for line in code(&text).lines() {
        let Some(path) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let path = path.trim_end_matches(';');
        let Some((module, items)) = path.split_once("::") else {
            continue;
        };
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = item.rsplit("::").next().unwrap_or_default().trim();
            if !name.is_empty() {
                out.insert(name.to_owned(), module.to_owned());
            }
        }
    }
    out
}

/// module -> module it uses -> where it first does.
fn graph() -> BTreeMap<String, BTreeMap<String, Site>> {
    let sources = sources();
    let modules: BTreeSet<&str> = sources.iter().map(|(m, _, _)| m.as_str()).collect();
    let reexports = reexports();
    let mut graph: BTreeMap<String, BTreeMap<String, Site>> = BTreeMap::new();
    for (module, file, code) in &sources {
        let uses = graph.entry(module.clone()).or_default();
        for (offset, rest) in path_starts(code, "crate") {
            for segment in first_segments(rest) {
                let target = if modules.contains(segment.as_str()) {
                    segment
                } else if let Some(m) = reexports.get(&segment) {
                    m.clone()
                } else if segment == "self" {
                    continue;
                } else {
                    panic!(
                        "{}:{}: `crate::{segment}` is neither a module nor a re-export of lib.rs",
                        file.display(),
                        line_of(code, offset)
                    );
                };
                if target != *module {
                    uses.entry(target)
                        .or_insert_with(|| (file.clone(), line_of(code, offset)));
                }
            }
        }
    }
    graph
}

fn describe(graph: &BTreeMap<String, BTreeMap<String, Site>>, from: &str, to: &str) -> String {
    match graph.get(from).and_then(|u| u.get(to)) {
        Some((file, line)) => format!("{from} -> {to} (src/{}:{line})", file.display()),
        None => format!("{from} -> {to}"),
    }
}

/// A cycle of the graph as the list of its modules (the first repeated at the end), if any.
fn find_cycle(graph: &BTreeMap<String, BTreeMap<String, Site>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Active,
        Done,
    }
    fn visit(
        graph: &BTreeMap<String, BTreeMap<String, Site>>,
        module: &str,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(module) {
            Some(Mark::Done) => return None,
            Some(Mark::Active) => {
                let start = stack.iter().position(|m| m == module).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(module.to_owned());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(module.to_owned(), Mark::Active);
        stack.push(module.to_owned());
        for next in graph.get(module).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(graph, next, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(module.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for module in graph.keys() {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(graph, module, &mut marks, &mut stack) {
            return Some(cycle);
        }
    }
    None
}

#[test]
fn module_imports_are_acyclic() {
    let graph = graph();
    assert!(
        graph.contains_key("api") && graph.contains_key("http"),
        "no sources read"
    );
    if let Some(cycle) = find_cycle(&graph) {
        let edges: Vec<String> = cycle
            .windows(2)
            .map(|w| describe(&graph, &w[0], &w[1]))
            .collect();
        panic!("import cycle:\n  {}", edges.join("\n  "));
    }
}

#[test]
fn modules_use_only_lower_layers() {
    let graph = graph();
    let layer_of: BTreeMap<&str, usize> = LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, layer)| layer.iter().map(move |m| (*m, i + 1)))
        .collect();
    let mut problems = Vec::new();
    for module in graph.keys() {
        if !layer_of.contains_key(module.as_str()) {
            problems.push(format!("{module} is in no layer (add it to LAYERS)"));
        }
    }
    for module in layer_of.keys() {
        if !graph.contains_key(*module) {
            problems.push(format!("{module} is in LAYERS but has no source"));
        }
    }
    for (from, uses) in &graph {
        for to in uses.keys() {
            if let (Some(&lf), Some(&lt)) = (layer_of.get(from.as_str()), layer_of.get(to.as_str()))
                && lt > lf
            {
                problems.push(format!(
                    "{} uses a higher layer ({lf} -> {lt})",
                    describe(&graph, from, to)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn only_the_front_end_uses_http() {
    let mut problems = Vec::new();
    for (module, file, code) in sources() {
        if HTTP_MODULES.contains(&module.as_str()) {
            continue;
        }
        // `crate::{http::..}` names the module, not the crate (the other checks cover it).
        let groups: Vec<(usize, usize)> = path_starts(&code, "crate")
            .into_iter()
            .filter_map(|(offset, rest)| {
                let inner = group(rest)?;
                let start = offset + "crate::".len();
                Some((start, start + inner.len() + 1))
            })
            .collect();
        for krate in HTTP_CRATES {
            let uses = path_starts(&code, krate)
                .into_iter()
                .find(|(offset, _)| !groups.iter().any(|(a, b)| (a..=b).contains(&offset)));
            if let Some((offset, _)) = uses {
                problems.push(format!(
                    "{module} uses `{krate}` (src/{}:{})",
                    file.display(),
                    line_of(&code, offset)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The verbs and what they build on reach neither the front end, nor the server, nor its
/// shared state.
#[test]
fn semantics_layer_is_below_the_server() {
    let graph = graph();
    for start in ["api", "sem", "store", "resources", "rbac"] {
        let mut seen = BTreeSet::new();
        let mut todo = vec![(start.to_owned(), vec![start.to_owned()])];
        while let Some((module, path)) = todo.pop() {
            assert!(
                !["http", "server", "shared"].contains(&module.as_str()),
                "{start} reaches {module}: {}",
                path.join(" -> ")
            );
            if !seen.insert(module.clone()) {
                continue;
            }
            for next in graph.get(&module).into_iter().flat_map(BTreeMap::keys) {
                let mut path = path.clone();
                path.push(next.clone());
                todo.push((next.clone(), path));
            }
        }
    }
}

/// The checks above would pass vacuously if the reading or the cycle search were broken.
#[test]
fn checker_sees_grouped_imports_and_cycles() {
    let code = code(
        "use crate::{a::X, b};\n// crate::c\nlet u = \"https://x\"; crate::d::f(); // crate::e",
    );
    let found: Vec<String> = path_starts(&code, "crate")
        .into_iter()
        .flat_map(|(_, rest)| first_segments(rest))
        .collect();
    assert_eq!(found, ["a", "b", "d"]);
    let site = (PathBuf::new(), 0);
    let mut graph: BTreeMap<String, BTreeMap<String, Site>> = BTreeMap::new();
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(from.to_owned())
            .or_default()
            .insert(to.to_owned(), site.clone());
    }
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.entry("c".to_owned()).or_default().remove("a");
    assert_eq!(find_cycle(&graph), None);
}
