//! How text that came over the wire (task data, server messages) is made safe to print on a
//! terminal: control characters are shown, never obeyed.
//!
//! A task's output, error, labels or payload, and anything a server says, can hold escape
//! sequences that a terminal would act on: set the window title, clear the screen, write the
//! clipboard (OSC 52), or reorder what the reader sees (bidi overrides). Everything that
//! prints such text for people passes it through [`neutralize`] or [`neutralize_line`]
//! first; machine output (JSON) carries the exact text instead.
//!
//! The characters are shown the way `less` shows them: C0 controls and DEL in caret notation
//! (`ESC` is `^[`, `BEL` is `^G`, DEL is `^?`), C1 controls and the bidi override and isolate
//! characters as `<U+XXXX>` (`<U+009B>`, `<U+202E>`). The tab is kept.

use std::borrow::Cow;

/// `text` with every control character but the tab and the line break made visible. A line
/// break is `\n`, or `\r\n`; a `\r` elsewhere (which would let a line overwrite itself) is
/// shown as `^M`.
pub fn neutralize(text: &str) -> Cow<'_, str> {
    escape(text, true)
}

/// Like [`neutralize`], for text that must stay on one line (a table cell, a field inside a
/// message, a one-line error): line breaks are shown too (`^J`, `^M`).
pub fn neutralize_line(text: &str) -> Cow<'_, str> {
    escape(text, false)
}

fn escape(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let kept = |c: char, next: Option<char>| {
        c == '\t' || (keep_newlines && (c == '\n' || (c == '\r' && next == Some('\n'))))
    };
    let mut chars = text.chars().peekable();
    let mut clean = true;
    while let Some(c) = chars.next() {
        if is_dangerous(c) && !kept(c, chars.peek().copied()) {
            clean = false;
            break;
        }
    }
    if clean {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if !is_dangerous(c) || kept(c, chars.peek().copied()) {
            out.push(c);
        } else if let Some(caret) = caret(c) {
            out.push('^');
            out.push(caret);
        } else {
            out.push_str(&format!("<U+{:04X}>", u32::from(c)));
        }
    }
    Cow::Owned(out)
}

/// True for the characters a terminal acts on instead of showing, or that change how the text
/// around them reads: C0 controls, DEL, C1 controls, the bidi embedding, override and
/// isolate characters (the "Trojan Source" set, U+202A–U+202E and U+2066–U+2069), the
/// direction marks (U+200E, U+200F, U+061C) and the line and paragraph separators
/// (U+2028, U+2029).
pub fn is_dangerous(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{2028}' | '\u{2029}')
}

/// The caret form of a C0 control or DEL (`^@` … `^_`, `^?`).
fn caret(c: char) -> Option<char> {
    match c {
        '\u{0}'..='\u{1f}' => char::from_u32(u32::from(c) + 0x40),
        '\u{7f}' => Some('?'),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_untouched() {
        for text in ["", "hello", "tab\there", "ünïcödé ✔ 名前", "line\nnext\r\n"] {
            assert!(
                matches!(neutralize(text), Cow::Borrowed(t) if t == text),
                "{text:?}"
            );
        }
        assert!(matches!(neutralize_line("a\tb"), Cow::Borrowed("a\tb")));
    }

    #[test]
    fn terminal_escapes_become_visible() {
        assert_eq!(neutralize("\x1b]52;c;aGk=\x07"), "^[]52;c;aGk=^G");
        assert_eq!(neutralize("\x1b[2J\x1b[H"), "^[[2J^[[H");
        assert_eq!(neutralize("\x1b]0;owned\x1b\\"), "^[]0;owned^[\\");
        assert_eq!(neutralize("nul\0 del\x7f"), "nul^@ del^?");
        assert_eq!(neutralize("\u{9b}31mred"), "<U+009B>31mred");
        assert_eq!(neutralize("\u{85}\u{9d}"), "<U+0085><U+009D>");
        assert_eq!(neutralize("abc\u{202e}fed"), "abc<U+202E>fed");
        assert_eq!(
            neutralize("\u{202a}\u{202d}\u{2066}\u{2069}"),
            "<U+202A><U+202D><U+2066><U+2069>"
        );
    }

    #[test]
    fn line_breaks_stay_only_where_lines_may_break() {
        assert_eq!(neutralize("a\nb\r\nc"), "a\nb\r\nc");
        assert_eq!(
            neutralize("progress 10%\rprogress 20%"),
            "progress 10%^Mprogress 20%"
        );
        assert_eq!(neutralize_line("a\nb\r\nc"), "a^Jb^M^Jc");
        assert_eq!(neutralize_line("x\ty"), "x\ty");
    }

    #[test]
    fn nothing_dangerous_survives_and_it_is_idempotent() {
        let every: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        for text in [neutralize(&every), neutralize_line(&every)] {
            assert!(
                !text
                    .chars()
                    .any(|c| is_dangerous(c) && !matches!(c, '\t' | '\n')),
                "a control character got through"
            );
            assert_eq!(neutralize(&text), text);
        }
        // Everything outside the dangerous set passes as it is.
        assert!(
            (0u32..0x3000)
                .filter_map(char::from_u32)
                .filter(|c| !is_dangerous(*c))
                .all(|c| neutralize_line(&c.to_string()) == c.to_string())
        );
    }
}
