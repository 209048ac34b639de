//! The layout rule of docs/DESIGN.md: no two files in `src/` import each other.
//!
//! A file imports another when it names something of it by path: `crate::a::b::X`, `super::X`,
//! `self::x::X`, or, in a file that declares `mod child;`, `child::X`. A path leads to the file
//! of the longest module prefix it names (`crate::proto::X` is `lib.rs`). A parent's `mod child;`
//! and its `pub use child::...` re-exports are not imports: they present the children, they do
//! not use them. Comments, string and char literals and `#[cfg(test)] mod name { ... }` blocks
//! are ignored. `main.rs` is a crate of its own that reaches the library only as `turbomon::`,
//! so it cannot take part in a cycle and is left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which files each file imports, by path relative to `src/`.
type Imports = BTreeMap<String, BTreeSet<String>>;

#[test]
fn no_two_files_in_src_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_sources(&src, &src, &mut files);
    files.retain(|(path, _)| path != "main.rs");
    assert!(files.len() > 10, "found only {} files in src/", files.len());
    let pairs: Vec<String> = mutual_pairs(&imports(&files))
        .iter()
        .map(|(a, b)| format!("  {a} <-> {b}"))
        .collect();
    assert!(
        pairs.is_empty(),
        "files that import each other:\n{}",
        pairs.join("\n")
    );
}

#[test]
fn the_detector_finds_a_cycle_and_only_that() {
    // Each file as its path, a space, and its text.
    let files = [
        "lib.rs pub mod a; pub mod c; pub mod d;",
        // Re-exporting `b` is not a use of it; calling `b::g` is.
        "a/mod.rs mod b; pub use b::{B,}; pub const X: u8 = 1; fn f() { b::g() }",
        "a/b.rs use super::{X, self as parent}; pub struct B; pub fn g() {}",
        // Only `crate::a::B` counts here, not the comment or the string.
        "c.rs use crate::a::B; // crate::d\n const S: &str = \"crate::d::{\";",
        // The test block does not count, however its braces are quoted.
        "d.rs fn f() -> &'static str { crate::c::S }\n\
         #[cfg(test)]\nmod tests { const C: char = '}'; use crate::a::X; }",
    ]
    .map(|file| {
        let (path, text) = file.split_once(' ').unwrap();
        (path.to_string(), text.to_string())
    });
    let imports = imports(&files);
    let of = |path: &str| imports[path].iter().map(String::as_str).collect::<Vec<_>>();
    assert!(imports["lib.rs"].is_empty());
    assert_eq!(of("a/mod.rs"), ["a/b.rs"]);
    assert_eq!(of("a/b.rs"), ["a/mod.rs"]);
    assert_eq!(of("c.rs"), ["a/mod.rs"]);
    assert_eq!(of("d.rs"), ["c.rs"]);
    let pairs = mutual_pairs(&imports);
    assert_eq!(pairs, [("a/b.rs".to_string(), "a/mod.rs".to_string())]);
}

/// Every `.rs` file under `dir`, as (path relative to `root`, text).
fn read_sources(root: &Path, dir: &Path, files: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("src/ is readable").path();
        if path.is_dir() {
            read_sources(root, &path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path.strip_prefix(root).unwrap().to_string_lossy();
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            files.push((relative.replace('\\', "/"), text));
        }
    }
}

/// Each pair of files that import each other, once, in order.
fn mutual_pairs(imports: &Imports) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (a, targets) in imports {
        for b in targets.iter().filter(|b| a < *b) {
            if imports.get(b).is_some_and(|back| back.contains(a)) {
                pairs.push((a.clone(), b.clone()));
            }
        }
    }
    pairs
}

/// The module a file defines: `lib.rs` is the root, `a/mod.rs` is `a`, `a/b.rs` is `a::b`.
fn module_of(path: &str) -> Vec<&str> {
    let path = path.strip_suffix(".rs").unwrap_or(path);
    let mut module: Vec<&str> = path.split('/').collect();
    if matches!(module.last(), Some(&("mod" | "lib" | "main"))) {
        module.pop();
    }
    module
}

/// Which files each of `files` imports (see the top of this file for what counts).
fn imports(files: &[(String, String)]) -> Imports {
    let modules: BTreeMap<Vec<&str>, &str> = files
        .iter()
        .map(|(path, _)| (module_of(path), path.as_str()))
        .collect();
    let mut imports = Imports::new();
    for (path, text) in files {
        let own = module_of(path);
        let tokens = code_tokens(text);
        let children: BTreeSet<&str> = tokens
            .windows(3)
            .filter(|w| w[0] == "mod" && w[2] == ";")
            .map(|w| w[1])
            .collect();
        let targets = imports.entry(path.clone()).or_default();
        let mut i = 0;
        while i < tokens.len() {
            let root =
                matches!(tokens[i], "crate" | "super" | "self") || children.contains(tokens[i]);
            let mid_path = i > 0 && matches!(tokens[i - 1], "::" | ".");
            if !root || mid_path || tokens.get(i + 1) != Some(&"::") {
                i += 1;
                continue;
            }
            let reexport = i >= 2 && tokens[i - 2..i] == ["pub", "use"];
            let mut leaves = Vec::new();
            i = use_tree(&tokens, i, Vec::new(), &mut leaves);
            for leaf in leaves {
                let mut target = own.clone();
                for segment in leaf {
                    match segment {
                        "crate" => target.clear(),
                        "super" => drop(target.pop()),
                        "self" => {}
                        name => target.push(name),
                    }
                }
                // A parent re-exporting what lies below it presents it; it does not use it.
                if reexport && target.len() > own.len() && target.starts_with(&own) {
                    continue;
                }
                let file = (0..=target.len())
                    .rev()
                    .find_map(|n| modules.get(&target[..n]));
                if let Some(file) = file.filter(|file| **file != path) {
                    targets.insert(file.to_string());
                }
            }
        }
    }
    imports
}

/// Reads the path or use tree at `tokens[i]` (`a::b::{c, d::e as f}`), adding each full path
/// to `leaves`; returns the index after it.
fn use_tree<'a>(
    tokens: &[&'a str],
    mut i: usize,
    mut path: Vec<&'a str>,
    leaves: &mut Vec<Vec<&'a str>>,
) -> usize {
    let token = |i: usize| tokens.get(i).copied().unwrap_or("");
    while token(i).starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
        path.push(token(i));
        if token(i + 1) != "::" {
            leaves.push(path);
            return i + 1;
        }
        i += 2;
    }
    if token(i) != "{" {
        // A glob (`*`) or generic arguments (`::<`) end the path.
        leaves.push(path);
        return i;
    }
    // A group: each item (maybe `as alias`) up to a comma, until the closing brace.
    while matches!(token(i), "{" | ",") && token(i + 1) != "}" {
        i = use_tree(tokens, i + 1, path.clone(), leaves);
        while !matches!(token(i), "," | "}" | "") {
            i += 1;
        }
    }
    i + if token(i) == "," { 2 } else { 1 }
}

/// The tokens of `text` without comments, string and char literals, and `#[cfg(test)] mod`
/// blocks: identifiers, `::`, and single ASCII punctuation characters.
fn code_tokens(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let past = |i: usize, end: &str| {
        text[i..]
            .find(end)
            .map_or(text.len(), |n| i + n + end.len())
    };
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let (c, next) = (bytes[i], at(i + 1));
        if c == b'/' && next == b'/' {
            i = past(i, "\n");
        } else if c == b'/' && next == b'*' {
            i = past(i + 2, "*/");
        } else if c == b'"' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'\'' && next == b'\\' {
            i = past(i + 3, "'");
        } else if c == b'\'' && text[i + 1..].chars().nth(1) == Some('\'') {
            // A char literal; a lifetime (`'a`) has no closing quote.
            i = past(i + 1, "'");
        } else if is_word(c) {
            let start = i;
            while is_word(at(i)) {
                i += 1;
            }
            let hashes = text[i..].bytes().take_while(|b| *b == b'#').count();
            if matches!(&text[start..i], "r" | "br") && at(i + hashes) == b'"' {
                // A raw string: it ends at a quote followed by as many `#`.
                i = past(i + hashes + 1, &format!("\"{}", "#".repeat(hashes)));
            } else {
                tokens.push(&text[start..i]);
            }
        } else if c == b':' && next == b':' {
            tokens.push("::");
            i += 2;
        } else {
            if c.is_ascii_punctuation() {
                tokens.push(&text[i..=i]);
            }
            i += 1;
        }
    }
    drop_test_modules(tokens)
}

/// `tokens` without `#[cfg(test)] mod name { ... }` blocks.
fn drop_test_modules(tokens: Vec<&str>) -> Vec<&str> {
    const START: [&str; 8] = ["#", "[", "cfg", "(", "test", ")", "]", "mod"];
    let (mut kept, mut i) = (Vec::new(), 0);
    while i < tokens.len() {
        if !(tokens[i..].starts_with(&START) && tokens.get(i + 9) == Some(&"{")) {
            kept.push(tokens[i]);
            i += 1;
            continue;
        }
        // Skip from the opening brace past its match.
        let (mut depth, mut j) = (0, i + 9);
        while j < tokens.len() {
            depth += i32::from(tokens[j] == "{") - i32::from(tokens[j] == "}");
            j += 1;
            if depth == 0 {
                break;
            }
        }
        i = j;
    }
    kept
}
