//! Imports run one way: no two files of a crate depend on each other, directly or
//! around a loop. Checked by a unit test over the crates whose layering matters
//! most; a file's dependencies are the other files of its crate that it names in
//! `use` declarations or paths (`crate::a::b`, `super::x`, `self::y`).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's files by module path (`ws::gate`), and what each one names.
pub fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = BTreeMap::new();
    collect(src, src, &mut files);
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut deps = BTreeSet::new();
        // Children named without a prefix (`https::run(..)` in `intercept`).
        let prefix = if module.is_empty() {
            String::new()
        } else {
            format!("{module}::")
        };
        for child in modules
            .iter()
            .filter_map(|m| m.strip_prefix(prefix.as_str()))
        {
            if !child.is_empty() && !child.contains("::") && names_bare(&text, child) {
                deps.insert(format!("{prefix}{child}"));
            }
        }
        for reference in references(&text) {
            // The crate root is its facade (re-exports): naming it is not a layer.
            if let Some(target) = resolve(module, &reference, &modules)
                && target != *module
                && !target.is_empty()
            {
                deps.insert(target);
            }
        }
        graph.insert(module.clone(), deps);
    }
    graph
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<String, PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, files);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(root).expect("under root");
        let mut parts: Vec<String> = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        // Unit tests look at their parent from below; they are not part of the layering.
        if parts.last().is_some_and(|p| p == "tests") {
            continue;
        }
        files.insert(parts.join("::"), path);
    }
}

/// `pub use child::Item;`: a module's facade, not something it uses.
fn is_reexport(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("pub use ") || line.starts_with("pub(crate) use ")
}

/// The lines of `text` that count as uses: without comments, `pub use` re-exports
/// and an inline `#[cfg(test)]` module.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or(text)
        .lines()
        .filter(|l| !is_reexport(l))
        .map(|l| l.split("//").next().unwrap_or(""))
}

/// Whether `text` names `child::` on its own (not as `x::child::`), in code.
fn names_bare(text: &str, child: &str) -> bool {
    let needle = format!("{child}::");
    code_lines(text).any(|line| {
        line.match_indices(&needle).any(|(at, _)| {
            let before = &line[..at];
            !(before.ends_with("::")
                || before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        })
    })
}

/// Paths that start with `crate::`, `super::` or `self::`, outside comments and
/// `#[cfg(test)]` modules written inline.
fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in code_lines(text) {
        let bytes = line.as_bytes();
        for start in ["crate::", "super::", "self::"] {
            let mut from = 0;
            while let Some(i) = line[from..].find(start) {
                let at = from + i;
                from = at + start.len();
                if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                    continue;
                }
                let rest = &line[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .unwrap_or(rest.len());
                // `use super::{a, b}` / `use crate::{x::y, z}`: each item, not the prefix.
                if !rest[end..].starts_with('{') {
                    out.push(rest[..end].trim_end_matches(':').to_string());
                } else {
                    let inner = &rest[end + 1..];
                    let inner = &inner[..inner.find('}').unwrap_or(inner.len())];
                    let prefix = rest[..end].to_string();
                    for item in inner.split(',') {
                        let item = item.trim().trim_start_matches('{');
                        if !item.is_empty() {
                            out.push(format!("{prefix}{item}"));
                        }
                    }
                }
            }
        }
    }
    out
}

/// The module (file) a path names, from inside `module`.
fn resolve(module: &str, reference: &str, modules: &BTreeSet<String>) -> Option<String> {
    let mut parts: Vec<&str> = reference.split("::").filter(|p| !p.is_empty()).collect();
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    match parts.first().copied() {
        Some("crate") => base.clear(),
        Some("self") => {}
        Some("super") => {
            while parts.first() == Some(&"super") {
                base.pop();
                parts.remove(0);
            }
            parts.insert(0, "self");
        }
        _ => return None,
    }
    parts.remove(0);
    // The longest prefix that is a file of the crate.
    let mut best = None;
    for n in 0..=parts.len() {
        let candidate: Vec<&str> = base.iter().chain(parts[..n].iter()).copied().collect();
        let name = candidate.join("::");
        if modules.contains(&name) {
            best = Some(name);
        }
    }
    best
}

/// Every loop of files that depend on each other, as `a -> b -> a`.
pub fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for start in graph.keys() {
        // Paths from `start` back to `start` through larger names only (each loop once).
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in graph.get(&at).into_iter().flatten() {
                if next == start {
                    let mut shown = path.clone();
                    shown.push(start.clone());
                    found.push(shown.join(" -> "));
                } else if next > start && !path.contains(next) && path.len() < 8 {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(module: &str) -> String {
        if module.is_empty() {
            "lib.rs".into()
        } else {
            module.into()
        }
    }

    #[test]
    fn files_of_the_layered_crates_import_one_way() {
        let root = crate::workspace_root();
        let mut problems = Vec::new();
        for krate in ["proto", "model", "session", "store", "agent", "api"] {
            let graph = module_graph(&root.join(krate).join("src"));
            assert!(graph.len() > 1, "{krate}: no modules found");
            for cycle in cycles(&graph) {
                let shown: Vec<String> = cycle.split(" -> ").map(name).collect();
                problems.push(format!("{krate}: {}", shown.join(" -> ")));
            }
        }
        assert!(
            problems.is_empty(),
            "files that import each other (move what both need lower down):\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn finds_a_loop_and_reads_grouped_imports() {
        let refs = references("use super::{gate::Stream, shared};\nlet x = crate::a::f();");
        assert_eq!(
            refs,
            ["super::gate::Stream", "super::shared", "crate::a::f"]
        );
        let modules: BTreeSet<String> = ["", "a", "ws", "ws::gate", "ws::shared"]
            .map(String::from)
            .into();
        assert_eq!(
            resolve("ws::gate", "super::shared::X", &modules),
            Some("ws::shared".into())
        );
        assert_eq!(
            resolve("ws::gate", "crate::a::f", &modules),
            Some("a".into())
        );
        let graph: BTreeMap<String, BTreeSet<String>> = [
            ("a".to_string(), BTreeSet::from(["b".to_string()])),
            ("b".to_string(), BTreeSet::from(["a".to_string()])),
        ]
        .into();
        assert_eq!(cycles(&graph), ["a -> b -> a"]);
    }
}
