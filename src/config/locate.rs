//! Finding lines and keys in a TOML document: the document is parsed a second time into a table
//! that keeps byte spans, so an error found after deserialisation (validation) can name the line
//! of its key, and a deserialisation error's byte span can name its key.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{KeyPath, Segment};

/// A TOML text together with its spanned parse (absent when the text does not parse).
pub(crate) struct SourceMap<'a> {
    text: &'a str,
    root: Option<Spanned<DeTable<'a>>>,
}

impl<'a> SourceMap<'a> {
    /// Parse `text` for spans; a syntax error leaves the map without keys (lines still work).
    pub(crate) fn new(text: &'a str) -> Self {
        Self {
            text,
            root: DeTable::parse(text).ok(),
        }
    }

    /// The top-level keys of the document (empty when it does not parse).
    pub(crate) fn top_level_keys(&self) -> Vec<String> {
        self.root
            .as_ref()
            .map(|root| {
                root.get_ref()
                    .keys()
                    .map(|k| k.get_ref().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// 1-based line holding byte `offset`.
    pub(crate) fn line_of_offset(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    /// The line of `path`: of its key when present, else of the nearest enclosing item that is
    /// (an array-of-tables element is found at its `[[header]]`). `None` for the root or when
    /// nothing of the path is in the file.
    pub(crate) fn line_of(&self, path: &KeyPath) -> Option<usize> {
        let root = self.root.as_ref()?;
        let mut best: Option<Range<usize>> = None;
        let mut current: Option<&DeValue<'a>> = None;
        let mut table: Option<&DeTable<'a>> = Some(root.get_ref());
        for segment in path.segments() {
            match segment {
                Segment::Key(key) => {
                    let t = match (table, current) {
                        (Some(t), _) => t,
                        (None, Some(DeValue::Table(t))) => t,
                        _ => break,
                    };
                    let Some((k, v)) = t.get_key_value(key.as_str()) else {
                        break;
                    };
                    best = Some(k.span());
                    current = Some(v.get_ref());
                    table = None;
                }
                Segment::Index(index) => {
                    let Some(DeValue::Array(array)) = current else {
                        break;
                    };
                    let Some(element) = array.get(*index) else {
                        break;
                    };
                    best = Some(element.span());
                    current = Some(element.get_ref());
                    table = None;
                }
            }
        }
        best.map(|span| self.line_of_offset(span.start))
    }

    /// The path of the deepest key or value whose span holds byte `offset`.
    pub(crate) fn path_at(&self, offset: usize) -> Option<KeyPath> {
        let root = self.root.as_ref()?;
        find_in_table(root.get_ref(), offset, &KeyPath::root())
    }
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && (offset < span.end || (span.is_empty() && offset == span.start))
}

fn find_in_table(table: &DeTable<'_>, offset: usize, path: &KeyPath) -> Option<KeyPath> {
    for (key, value) in table.iter() {
        let here = path.key(key.get_ref());
        if contains(&key.span(), offset) {
            return Some(here);
        }
        if let Some(found) = find_in_value(value, offset, &here) {
            return Some(found);
        }
    }
    None
}

/// `path` is the path of `value` itself.
fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &KeyPath) -> Option<KeyPath> {
    match value.get_ref() {
        DeValue::Table(table) => {
            // A table made by a `[header]` has the header as its span and its keys elsewhere:
            // look inside first.
            find_in_table(table, offset, path)
                .or_else(|| contains(&value.span(), offset).then(|| path.clone()))
        }
        DeValue::Array(array) => {
            for (index, element) in array.iter().enumerate() {
                if let Some(found) = find_in_value(element, offset, &path.index(index)) {
                    return Some(found);
                }
            }
            contains(&value.span(), offset).then(|| path.clone())
        }
        _ => contains(&value.span(), offset).then(|| path.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "a = 1\n\n[[engines]]\nname = \"x\"\n\n[[engines]]\nname = \"y\"\nn = 3\n";

    #[test]
    fn lines_of_keys_inside_arrays_of_tables() {
        let map = SourceMap::new(DOC);
        let root = KeyPath::root();
        assert_eq!(map.line_of(&root.key("a")), Some(1));
        assert_eq!(map.line_of(&root.key("engines").index(1).key("n")), Some(8));
        // A missing key falls back to its table's header.
        assert_eq!(
            map.line_of(&root.key("engines").index(1).key("absent")),
            Some(6)
        );
        assert_eq!(map.line_of(&root.key("nothing")), None);
    }

    #[test]
    fn paths_at_offsets() {
        let map = SourceMap::new(DOC);
        let offset = DOC.find("n = 3").map(|o| o + 4).unwrap_or_default();
        assert_eq!(
            map.path_at(offset).map(|p| p.to_string()),
            Some("engines[1].n".to_string())
        );
        let header = DOC.rfind("[[engines]]").unwrap_or_default();
        assert_eq!(
            map.path_at(header).map(|p| p.to_string()),
            Some("engines[1]".to_string())
        );
    }
}
