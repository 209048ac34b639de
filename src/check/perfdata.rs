//! The Monitoring Plugins (Nagios) output format, parsed: the status line, the long text after
//! it, and the performance data after a `|`, each item `'label'=value[UOM];[warn];[crit];[min];[max]`.
//!
//! A plugin's output is untrusted text: parsing never fails and never panics. An item that does
//! not parse (no `=`, a value that is not a number, `U` for "undetermined", an unknown unit, a
//! bad range) is skipped and its raw text kept for the message; items beyond
//! [`MAX_PERFDATA_ITEMS`] are counted and dropped, so a result's perfdata stays bounded.
//!
//! The layout, as the plugin guidelines describe it:
//!
//! ```text
//! STATUS TEXT | PERFDATA
//! LONG TEXT LINE
//! LONG TEXT LINE | PERFDATA
//! PERFDATA
//! ```
//!
//! Everything after the first `|` on a later line, on that line and every line after it, is
//! performance data.

use crate::proto::PerfData;

/// Items kept per result; more are counted as dropped.
pub const MAX_PERFDATA_ITEMS: usize = 64;

/// Longest label kept, in bytes; an item with a longer label is not parsed.
pub const MAX_LABEL_BYTES: usize = 255;

/// The units of measurement the guidelines define (empty: a count of things).
pub const UNITS: [&str; 10] = ["", "s", "ms", "us", "%", "B", "KB", "MB", "TB", "c"];

/// At most this many bytes of unparsed items are quoted in the message.
const UNPARSED_QUOTE_BYTES: usize = 256;

/// A plugin's output taken apart.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PluginOutput {
    /// The status line, then the long text lines (newline-separated, trailing blanks trimmed).
    pub text: String,
    /// The performance data items that parsed, at most [`MAX_PERFDATA_ITEMS`].
    pub perfdata: Vec<PerfData>,
    /// The raw text of the items that did not parse (including `U` values), in order.
    pub unparsed: Vec<String>,
    /// Well-formed items beyond [`MAX_PERFDATA_ITEMS`], not kept.
    pub dropped: usize,
}

impl PluginOutput {
    /// Takes `output` apart. With `cut` (the output was clipped at the engine's limit), a last
    /// perfdata item that does not end in white space may be incomplete, so it is reported
    /// unparsed rather than trusted.
    pub fn parse(output: &str, cut: bool) -> Self {
        let mut lines = output.lines();
        let first = lines.next().unwrap_or("");
        let (status, first_perf) = match first.split_once('|') {
            Some((status, perf)) => (status, Some(perf)),
            None => (first, None),
        };
        let mut text_lines = vec![status.trim()];
        let mut perf_lines: Vec<&str> = first_perf.into_iter().collect();
        // Once a later line has had a `|`, every line after it is perfdata.
        let mut in_perf = false;
        let mut last_line_is_perf = first_perf.is_some();
        for line in lines {
            if in_perf {
                perf_lines.push(line);
                continue;
            }
            match line.split_once('|') {
                Some((text, perf)) => {
                    text_lines.push(text.trim_end());
                    perf_lines.push(perf);
                    in_perf = true;
                }
                None => text_lines.push(line.trim_end()),
            }
            last_line_is_perf = in_perf;
        }
        while text_lines.len() > 1 && text_lines.last().is_some_and(|l| l.is_empty()) {
            text_lines.pop();
        }
        let text = if text_lines[0].is_empty() {
            text_lines[1..].join("\n")
        } else {
            text_lines.join("\n")
        };

        let mut parsed = PluginOutput {
            text,
            ..PluginOutput::default()
        };
        let mut raw_items: Vec<&str> = perf_lines.iter().flat_map(|l| items(l)).collect();
        let last_may_be_cut =
            cut && last_line_is_perf && !output.ends_with(|c: char| c.is_whitespace());
        let cut_item = if last_may_be_cut {
            raw_items.pop()
        } else {
            None
        };
        for raw in raw_items {
            match parse_item(raw) {
                Some(item) if parsed.perfdata.len() < MAX_PERFDATA_ITEMS => {
                    parsed.perfdata.push(item)
                }
                Some(_) => parsed.dropped += 1,
                None => parsed.unparsed.push(raw.to_string()),
            }
        }
        parsed.unparsed.extend(cut_item.map(str::to_string));
        parsed
    }

    /// The text for a result's message: [`PluginOutput::text`], then a note quoting the
    /// unparsed items (clipped) and one counting the dropped ones, if any.
    pub fn message(&self) -> String {
        let mut message = self.text.clone();
        let mut note = |text: String| {
            if !message.is_empty() {
                message.push(' ');
            }
            message.push_str(&text);
        };
        if !self.unparsed.is_empty() {
            note(format!(
                "(unparsed perfdata: {})",
                clip_bytes(&self.unparsed.join(" "), UNPARSED_QUOTE_BYTES)
            ));
        }
        if self.dropped > 0 {
            note(format!(
                "({} perfdata items over the limit of {MAX_PERFDATA_ITEMS} not kept)",
                self.dropped
            ));
        }
        message
    }
}

/// `text` cut to at most `limit` bytes on a character boundary, marked with `…` when cut.
fn clip_bytes(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The raw items of one line of perfdata: separated by white space, except inside a quoted
/// label (`'a label'=1`, with `''` for a quote in it).
fn items(line: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return found;
        }
        let mut end = 0;
        if rest.starts_with('\'') {
            // The label runs to the first quote not doubled.
            let bytes = rest.as_bytes();
            let mut i = 1;
            end = rest.len();
            while i < bytes.len() {
                if bytes[i] == b'\'' {
                    if bytes.get(i + 1) == Some(&b'\'') {
                        i += 2;
                        continue;
                    }
                    end = i + 1;
                    break;
                }
                i += 1;
            }
        }
        let tail = rest[end..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |at| end + at);
        found.push(&rest[..tail]);
        rest = &rest[tail..];
    }
}

/// One item, or `None` when it does not parse (or its value is `U`, undetermined).
pub fn parse_item(raw: &str) -> Option<PerfData> {
    let (label, rest) = if let Some(quoted) = raw.strip_prefix('\'') {
        let (label, after) = unquote(quoted)?;
        (label, after.strip_prefix('=')?)
    } else {
        let (label, rest) = raw.split_once('=')?;
        if label.contains('\'') {
            return None;
        }
        (label.to_string(), rest)
    };
    if label.is_empty() || label.len() > MAX_LABEL_BYTES {
        return None;
    }
    let mut fields = rest.split(';');
    let value_field = fields.next()?;
    let warn = fields.next().unwrap_or("");
    let crit = fields.next().unwrap_or("");
    let min = fields.next().unwrap_or("");
    let max = fields.next().unwrap_or("");
    // Trailing empty fields are tolerated; anything more is not this format.
    if fields.any(|extra| !extra.is_empty()) {
        return None;
    }
    let (value, uom) = split_number(value_field);
    let value = number(value)?;
    if !UNITS.contains(&uom) {
        return None;
    }
    if !(warn.is_empty() || is_range(warn)) || !(crit.is_empty() || is_range(crit)) {
        return None;
    }
    Some(PerfData {
        label,
        value,
        uom: uom.to_string(),
        warn: warn.to_string(),
        crit: crit.to_string(),
        min: bound(min, uom)?,
        max: bound(max, uom)?,
    })
}

/// A quoted label (after its opening quote) with `''` turned into `'`, and what follows its
/// closing quote; `None` without a closing quote.
fn unquote(quoted: &str) -> Option<(String, &str)> {
    let mut label = String::new();
    let mut rest = quoted;
    loop {
        let at = rest.find('\'')?;
        label.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.strip_prefix('\'') {
            Some(more) => {
                label.push('\'');
                rest = more;
            }
            None => return Some((label, after)),
        }
    }
}

/// `text` split into its leading number (sign, digits, point, exponent) and the rest.
fn split_number(text: &str) -> (&str, &str) {
    let bytes = text.as_bytes();
    let mut i = 0;
    if matches!(bytes.first(), Some(b'-' | b'+')) {
        i += 1;
    }
    while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
        i += 1;
    }
    // An exponent only when digits follow it, so that a unit is never taken for one.
    if i > 0 && matches!(bytes.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(bytes.get(j), Some(b'-' | b'+')) {
            j += 1;
        }
        if bytes.get(j).is_some_and(u8::is_ascii_digit) {
            while bytes.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
            i = j;
        }
    }
    text.split_at(i)
}

/// A finite number written with digits (never `inf` or `NaN`).
fn number(text: &str) -> Option<f64> {
    let (digits, rest) = split_number(text);
    if digits.is_empty() || !rest.is_empty() {
        return None;
    }
    digits.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A min or max: empty, a number, or a number with the value's unit.
fn bound(text: &str, uom: &str) -> Option<Option<f64>> {
    if text.is_empty() {
        return Some(None);
    }
    let (digits, unit) = split_number(text);
    if !unit.is_empty() && unit != uom {
        return None;
    }
    number(digits).map(Some)
}

/// A threshold range as the guidelines write it: `[@][start:][end]`, `~` for minus infinity.
fn is_range(text: &str) -> bool {
    let text = text.strip_prefix('@').unwrap_or(text);
    match text.split_once(':') {
        None => number(text).is_some(),
        Some((start, end)) => {
            let start_ok = start.is_empty() || start == "~" || number(start).is_some();
            let end_ok = end.is_empty() || number(end).is_some();
            start_ok && end_ok && !(start.is_empty() && end.is_empty())
        }
    }
}

/// `item` as a plugin would print it (the label quoted when it needs to be).
pub fn format_item(item: &PerfData) -> String {
    let needs_quotes = item.label.is_empty()
        || item
            .label
            .chars()
            .any(|c| c.is_whitespace() || c == '=' || c == '\'');
    let label = if needs_quotes {
        format!("'{}'", item.label.replace('\'', "''"))
    } else {
        item.label.clone()
    };
    let bound = |b: Option<f64>| b.map(|v| v.to_string()).unwrap_or_default();
    let mut text = format!(
        "{label}={}{};{};{};{};{}",
        item.value,
        item.uom,
        item.warn,
        item.crit,
        bound(item.min),
        bound(item.max)
    );
    while text.ends_with(';') {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(label: &str, value: f64, uom: &str) -> PerfData {
        PerfData {
            label: label.into(),
            value,
            uom: uom.into(),
            ..PerfData::default()
        }
    }

    #[test]
    fn status_line_long_text_and_perfdata_on_several_lines() {
        let output = "DISK OK - free space: / 3326 MB | /=2643MB;5948;5958;0;5968\n\
                      / 15272 MB (77%);\n\
                      /boot 68 MB (69%);\n\
                      /home 69357 MB (27%); | /boot=68MB;88;93;0;98\n\
                      /home=69357MB;253404;253409;0;253414 \n\
                      'var log'=819MB;970;975;0;980\n";
        let parsed = PluginOutput::parse(output, false);
        assert_eq!(
            parsed.text,
            "DISK OK - free space: / 3326 MB\n/ 15272 MB (77%);\n/boot 68 MB (69%);\n/home 69357 MB (27%);"
        );
        let labels: Vec<&str> = parsed.perfdata.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["/", "/boot", "/home", "var log"]);
        assert_eq!(
            parsed.perfdata[0],
            PerfData {
                label: "/".into(),
                value: 2643.0,
                uom: "MB".into(),
                warn: "5948".into(),
                crit: "5958".into(),
                min: Some(0.0),
                max: Some(5968.0),
            }
        );
        assert!(parsed.unparsed.is_empty());
        assert_eq!(parsed.message(), parsed.text);
    }

    #[test]
    fn output_without_perfdata_is_all_text() {
        let parsed = PluginOutput::parse("OK - all fine\nsecond line\n\n", false);
        assert_eq!(parsed.text, "OK - all fine\nsecond line");
        assert!(parsed.perfdata.is_empty());
        assert_eq!(PluginOutput::parse("", false), PluginOutput::default());
    }

    #[test]
    fn quoted_labels_keep_spaces_and_doubled_quotes() {
        let parsed = PluginOutput::parse("OK | 'a b'=1 'it''s'=2c 'x=y'=3%", false);
        let labels: Vec<&str> = parsed.perfdata.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["a b", "it's", "x=y"]);
        assert_eq!(parsed.perfdata[1].uom, "c");
    }

    #[test]
    fn units_ranges_and_bounds() {
        let parsed = PluginOutput::parse(
            "OK | t=0.5s;1;2;0 m=3ms u=4us p=5%;@10:20;~:30 b=6B k=7KB g=8MB t2=9TB n=-1.5e3;10:;:5",
            false,
        );
        let got: Vec<(&str, f64)> = parsed
            .perfdata
            .iter()
            .map(|p| (p.uom.as_str(), p.value))
            .collect();
        assert_eq!(
            got,
            [
                ("s", 0.5),
                ("ms", 3.0),
                ("us", 4.0),
                ("%", 5.0),
                ("B", 6.0),
                ("KB", 7.0),
                ("MB", 8.0),
                ("TB", 9.0),
                ("", -1500.0)
            ]
        );
        assert_eq!(parsed.perfdata[0].min, Some(0.0));
        assert_eq!(parsed.perfdata[0].max, None);
        assert_eq!(
            (&*parsed.perfdata[3].warn, &*parsed.perfdata[3].crit),
            ("@10:20", "~:30")
        );
        assert!(parsed.unparsed.is_empty(), "{:?}", parsed.unparsed);
    }

    #[test]
    fn malformed_items_are_skipped_and_quoted_in_the_message() {
        let parsed = PluginOutput::parse(
            "WARNING - slow | good=1 novalue load=U bad=12XB r=1;x;2 m=1;;;a many=1;2;3;4;5;6 \
             ok=2;;;; comma=0,5 =4 inf=inf",
            false,
        );
        let labels: Vec<&str> = parsed.perfdata.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["good", "ok"]);
        assert_eq!(
            parsed.unparsed,
            [
                "novalue",
                "load=U",
                "bad=12XB",
                "r=1;x;2",
                "m=1;;;a",
                "many=1;2;3;4;5;6",
                "comma=0,5",
                "=4",
                "inf=inf"
            ]
        );
        assert_eq!(
            parsed.message(),
            "WARNING - slow (unparsed perfdata: novalue load=U bad=12XB r=1;x;2 m=1;;;a \
             many=1;2;3;4;5;6 comma=0,5 =4 inf=inf)"
        );
    }

    #[test]
    fn an_unclosed_quote_swallows_the_rest_of_its_line_only() {
        let parsed = PluginOutput::parse("OK | 'open=1 two=2\n| three=3", false);
        assert_eq!(parsed.unparsed, ["'open=1 two=2"]);
        let labels: Vec<&str> = parsed.perfdata.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["three"]);
    }

    #[test]
    fn items_over_the_limit_are_counted_not_kept() {
        let perf: Vec<String> = (0..MAX_PERFDATA_ITEMS + 3)
            .map(|i| format!("l{i}=1"))
            .collect();
        let parsed = PluginOutput::parse(&format!("OK | {}", perf.join(" ")), false);
        assert_eq!(parsed.perfdata.len(), MAX_PERFDATA_ITEMS);
        assert_eq!(parsed.dropped, 3);
        assert!(
            parsed
                .message()
                .ends_with("(3 perfdata items over the limit of 64 not kept)")
        );
    }

    #[test]
    fn a_label_too_long_is_not_kept() {
        let long = "x".repeat(MAX_LABEL_BYTES + 1);
        assert_eq!(parse_item(&format!("{long}=1")), None);
        assert!(parse_item(&format!("{}=1", &long[1..])).is_some());
    }

    #[test]
    fn a_cut_output_does_not_trust_its_last_item() {
        let parsed = PluginOutput::parse("OK | a=1 b=0.12", true);
        assert_eq!(parsed.perfdata, [item("a", 1.0, "")]);
        assert_eq!(parsed.unparsed, ["b=0.12"]);
        // Cut in the text, after the perfdata line: the perfdata is whole.
        let parsed = PluginOutput::parse("OK | a=1 b=2\nlong te", true);
        assert_eq!(parsed.perfdata.len(), 2);
    }

    #[test]
    fn formatted_items_parse_back() {
        let original = PerfData {
            label: "it's a label".into(),
            value: -0.25,
            uom: "ms".into(),
            warn: "10".into(),
            crit: "@5:20".into(),
            min: Some(0.0),
            max: None,
        };
        let text = format_item(&original);
        assert_eq!(text, "'it''s a label'=-0.25ms;10;@5:20;0");
        assert_eq!(parse_item(&text), Some(original));
    }
}
