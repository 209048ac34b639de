//! The value of `task_submit_batch_size` and `task_info_batch_size`: a fixed number of tasks
//! (or ids) per batch, or `"auto"`, chosen per loop by the engine's controller
//! ([`crate::supervisor::autosize`]) between `batch_size_min` and `batch_size_max`.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A batch size as the configuration gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchSize {
    /// This many per batch.
    Fixed(usize),
    /// Chosen at run time from what each loop measures.
    Auto,
}

impl BatchSize {
    /// The fixed size, `None` for `auto`.
    pub fn fixed(self) -> Option<usize> {
        match self {
            BatchSize::Fixed(size) => Some(size),
            BatchSize::Auto => None,
        }
    }

    /// Whether the size is chosen at run time.
    pub fn is_auto(self) -> bool {
        self == BatchSize::Auto
    }
}

impl From<usize> for BatchSize {
    fn from(size: usize) -> Self {
        BatchSize::Fixed(size)
    }
}

/// A fixed size compares equal to its number (`auto` to none).
impl PartialEq<usize> for BatchSize {
    fn eq(&self, other: &usize) -> bool {
        *self == BatchSize::Fixed(*other)
    }
}

impl std::fmt::Display for BatchSize {
    /// `30` or `auto`, as written in the file.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchSize::Fixed(size) => write!(f, "{size}"),
            BatchSize::Auto => f.write_str("auto"),
        }
    }
}

/// `auto` or a number, as on the command line (`bench --batch-sizes auto,10,30`).
impl std::str::FromStr for BatchSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "auto" {
            return Ok(BatchSize::Auto);
        }
        text.parse::<usize>()
            .map(BatchSize::Fixed)
            .map_err(|_| format!("`{text}` is neither a batch size nor `auto`"))
    }
}

impl Serialize for BatchSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchSize::Fixed(size) => serializer.serialize_u64(*size as u64),
            BatchSize::Auto => serializer.serialize_str("auto"),
        }
    }
}

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(BatchSizeVisitor)
    }
}

struct BatchSizeVisitor;

impl Visitor<'_> for BatchSizeVisitor {
    type Value = BatchSize;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number of tasks per batch, or \"auto\"")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<BatchSize, E> {
        usize::try_from(value)
            .map(BatchSize::Fixed)
            .map_err(|_| E::invalid_value(de::Unexpected::Unsigned(value), &self))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<BatchSize, E> {
        u64::try_from(value)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(value), &self))
            .and_then(|value| self.visit_u64(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<BatchSize, E> {
        // A number in quotes is refused like any other string: the file says what it means.
        if value == "auto" {
            Ok(BatchSize::Auto)
        } else {
            Err(E::invalid_value(de::Unexpected::Str(value), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize)]
    struct File {
        size: BatchSize,
    }

    #[test]
    fn numbers_and_auto_parse_and_serialize_back() {
        let fixed: File = toml::from_str("size = 24").expect("a number");
        assert_eq!(fixed.size, BatchSize::Fixed(24));
        let auto: File = toml::from_str("size = \"auto\"").expect("auto");
        assert_eq!(auto.size, BatchSize::Auto);
        assert_eq!(
            toml::to_string(&auto).ok().as_deref(),
            Some("size = \"auto\"\n")
        );
        assert_eq!(toml::to_string(&fixed).ok().as_deref(), Some("size = 24\n"));
    }

    #[test]
    fn strings_other_than_auto_and_negatives_are_refused() {
        for text in [
            "size = \"30\"",
            "size = \"Auto\"",
            "size = -1",
            "size = 1.5",
        ] {
            let error = toml::from_str::<File>(text).expect_err(text).to_string();
            assert!(error.contains("\"auto\""), "{text}: {error}");
        }
    }
}
