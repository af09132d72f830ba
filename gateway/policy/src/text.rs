//! Text that came from outside (policy files, device names, the kernel) made safe to print:
//! control characters would otherwise reach an operator's terminal raw (clearing it,
//! moving the cursor, rewriting what a line says). Pure.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1) written as `\u{…}`, and backslashes
/// doubled only when something was escaped, so plain text prints unchanged.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// One CSV cell (RFC 4180), safe to open in a spreadsheet: a value starting like a formula
/// (`=`, `+`, `-`, `@`, tab, carriage return) is prefixed with `'` so it stays text (OWASP's
/// CSV injection advice), control characters are escaped, and a cell with a separator,
/// quote or line break is quoted.
pub fn csv_cell(v: &str) -> String {
    let v = printable(v);
    let mut cell = String::with_capacity(v.len() + 3);
    if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        cell.push('\'');
    }
    cell.push_str(&v);
    if cell.contains([',', '"', '\n', ';']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::{csv_cell, printable};

    #[test]
    fn csv_cells_cannot_become_formulas_or_break_rows() {
        assert_eq!(csv_cell("mon-icu-01"), "mon-icu-01");
        assert_eq!(
            csv_cell("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("two\nlines"), "two\\u{a}lines");
    }

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_untouched() {
        assert_eq!(printable("mon-icu-01"), "mon-icu-01");
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(
            printable("line\nbreak\u{7f}\u{9b}"),
            "line\\u{a}break\\u{7f}\\u{9b}"
        );
    }
}
