//! Policy source texts and positions in them. Pure: holds text it is given, reads no file.

use serde::Serialize;
use std::fmt;
use std::sync::OnceLock;

/// A byte range in one policy file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    /// Index into [`Sources`].
    pub file: u32,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: u32, range: std::ops::Range<usize>) -> Span {
        Span {
            file,
            start: u32::try_from(range.start).unwrap_or(u32::MAX),
            end: u32::try_from(range.end).unwrap_or(u32::MAX),
        }
    }
}

/// One policy file: its display name (the path as given) and its text.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
    /// Byte offsets of line starts, built on first use (rendering, rule positions).
    lines: OnceLock<Vec<usize>>,
}

impl SourceFile {
    pub fn new(name: String, text: String) -> SourceFile {
        SourceFile {
            name,
            text,
            lines: OnceLock::new(),
        }
    }

    fn line_starts(&self) -> &[usize] {
        self.lines.get_or_init(|| {
            let mut starts = vec![0];
            starts.extend(
                self.text
                    .bytes()
                    .enumerate()
                    .filter(|(_, b)| *b == b'\n')
                    .map(|(i, _)| i + 1),
            );
            starts
        })
    }
}

/// All files of one policy, in load order (sorted paths).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

/// A human position: `file:line:col`, 1-based, columns in characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    pub file: String,
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

impl Sources {
    pub fn new(files: Vec<SourceFile>) -> Sources {
        Sources { files }
    }

    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// Puts `file` in place of file `index` (a reloaded file; spans keep their index).
    pub fn replace(&mut self, index: usize, file: SourceFile) {
        if let Some(slot) = self.files.get_mut(index) {
            *slot = file;
        }
    }

    pub fn name(&self, file: u32) -> &str {
        self.files
            .get(file as usize)
            .map_or("<unknown>", |f| f.name.as_str())
    }

    fn text(&self, file: u32) -> &str {
        self.files
            .get(file as usize)
            .map_or("", |f| f.text.as_str())
    }

    /// The position of the start of `span`.
    pub fn locate(&self, span: Span) -> Location {
        let Some(file) = self.files.get(span.file as usize) else {
            return Location {
                file: "<unknown>".to_string(),
                line: 0,
                col: 0,
            };
        };
        let text = file.text.as_str();
        let at = clamp_to_char(text, span.start as usize);
        let starts = file.line_starts();
        let line = starts.partition_point(|s| *s <= at);
        let line_start = starts.get(line.saturating_sub(1)).copied().unwrap_or(0);
        let col = text[line_start..at].chars().count() + 1;
        Location {
            file: self.name(span.file).to_string(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: u32::try_from(col).unwrap_or(u32::MAX),
        }
    }

    /// The whole line holding the start of `span`, and the character columns (0-based,
    /// end exclusive) the span covers on it.
    pub fn line_of(&self, span: Span) -> (&str, usize, usize) {
        let text = self.text(span.file);
        let at = clamp_to_char(text, span.start as usize);
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
        let line = text[line_start..line_end].trim_end_matches('\r');
        // A span may start on the `\n` of a CRLF ending, past the end of the trimmed line
        // (found by the policy fuzzer: clamp panicked with min > max).
        let line_stop = (line_start + line.len()).max(at);
        let end = clamp_to_char(text, (span.end as usize).clamp(at, line_stop));
        let from = text[line_start..at].chars().count();
        let to = from + text[at..end].chars().count();
        (line, from, to.max(from + 1))
    }
}

fn clamp_to_char(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_on_the_line_feed_of_a_crlf_line_renders() {
        let text = "[site]\r\nname = \"x\"\r\n";
        let sources = Sources::new(vec![SourceFile::new("crlf.toml".into(), text.into())]);
        let lf = text.find('\n').expect("a LF") as u32;
        let (line, from, to) = sources.line_of(Span {
            file: 0,
            start: lf,
            end: lf + 1,
        });
        assert_eq!((line, from, to), ("[site]", 7, 8));
        assert_eq!(
            sources
                .locate(Span {
                    file: 0,
                    start: lf,
                    end: lf
                })
                .to_string(),
            "crlf.toml:1:8"
        );
    }
}
