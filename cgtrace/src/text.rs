//! Names from outside, in and out: cgroup, pod, container and process
//! names come from whoever runs a workload, and cgtrace prints them in
//! terminals, HTML pages, metric labels and JSON.
//!
//! In: bytes become a `String` without losing any ([`from_bytes`]): valid
//! UTF-8 stays as it is, and each byte that is not becomes the text `\xNN`,
//! as the kernel's log writes such bytes. So a directory walk and the
//! kernel log ([`unescape_kernel`]) give the same string for one cgroup, and
//! two names that differ in such bytes stay different.
//!
//! Out: [`printable`] shows every control character (C0, DEL and C1, which
//! terminals act on: `ESC [2J` clears the screen, `ESC ]0;…BEL` sets the
//! window title) and every bidirectional override (which reorders what a
//! terminal or a browser shows) as text, `\xNN` or `\uNNNN`.
//! [`TerminalSafe`] does the same to whatever a text view writes, keeping
//! only its own line ends, so a name that reaches output some other way
//! still cannot act on the terminal.

use std::{
    borrow::Cow,
    fmt::Write as _,
    io::{self, Write},
};

/// `bytes` as a `String`: valid UTF-8 kept, every other byte as `\xNN`.
#[must_use]
pub fn from_bytes(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
    text
}

/// A `/dev/kmsg` message as the kernel meant it: the kernel writes every
/// byte below space, from DEL up, and the backslash itself as `\xNN`
/// (`printk`'s `msg_add_ext_text`), so the escapes are undone exactly and
/// the bytes decoded as [`from_bytes`] does.
#[must_use]
pub fn unescape_kernel(text: &str) -> String {
    if !text.contains("\\x") {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x'))
            .then(|| bytes.get(i + 2..i + 4))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    from_bytes(&out)
}

/// Whether a terminal or a browser would act on `c` rather than show it.
fn acts(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            // Marks and embeddings, overrides and isolates (Unicode's
            // bidirectional algorithm): "Trojan source" reordering.
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// C0 controls as `\xNN`, as the kernel's log writes them; DEL, C1
/// controls and overrides as `\uNNNN`, as JSON writes them, so JSON that
/// passes through [`TerminalSafe`] stays JSON (its serializer escapes C0
/// controls itself, and no others).
fn escape_into(out: &mut String, c: char) {
    let code = u32::from(c);
    if code < 0x20 {
        let _ = write!(out, "\\x{code:02x}");
    } else {
        let _ = write!(out, "\\u{code:04x}");
    }
}

/// `text` with everything a terminal would act on shown as text, for a
/// name in a line of output. Borrowed when nothing needed escaping.
#[must_use]
pub fn printable(text: &str) -> Cow<'_, str> {
    escaped(text, false)
}

/// As [`printable`], keeping line ends: for whole lines of output.
#[must_use]
pub fn printable_lines(text: &str) -> Cow<'_, str> {
    escaped(text, true)
}

fn escaped(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let keep = |c: char| !acts(c) || (keep_newlines && c == '\n');
    if text.chars().all(keep) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if keep(c) {
            out.push(c);
        } else {
            escape_into(&mut out, c);
        }
    }
    Cow::Owned(out)
}

/// A writer for text meant for a terminal: what passes through it has its
/// control characters (but line ends) and bidirectional overrides shown as
/// text, and bytes that are not UTF-8 as `\xNN`. A net under the views'
/// own escaping of names, so nothing written can act on the terminal.
#[derive(Debug)]
pub struct TerminalSafe<W: Write> {
    inner: W,
    /// The start of a character split between two writes.
    pending: Vec<u8>,
}

impl<W: Write> TerminalSafe<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            pending: Vec::new(),
        }
    }
}

impl<W: Write> Write for TerminalSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(buf);
        // A character cut at the end waits for the rest (at most 3 bytes).
        let complete = match std::str::from_utf8(&bytes) {
            Err(error) if error.error_len().is_none() => error.valid_up_to(),
            _ => bytes.len(),
        };
        let text = from_bytes(&bytes[..complete]);
        self.inner.write_all(printable_lines(&text).as_bytes())?;
        self.pending = bytes[complete..].to_vec();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            let rest = from_bytes(&std::mem::take(&mut self.pending));
            self.inner.write_all(printable_lines(&rest).as_bytes())?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for TerminalSafe<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Standard output for a text view, locked, through [`TerminalSafe`].
#[must_use]
pub fn stdout() -> TerminalSafe<io::StdoutLock<'static>> {
    TerminalSafe::new(io::stdout().lock())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::{TerminalSafe, from_bytes, printable, printable_lines, unescape_kernel};

    /// The name measured on 2026-12-01, which cleared the screen and set
    /// the window title when printed raw.
    const HOSTILE: &str = "bar-\u{1b}[2J\u{1b}]0;pwned\u{7}<b>x";

    #[test]
    fn bytes_that_are_not_utf8_are_kept_as_escapes() {
        assert_eq!(from_bytes(b"pod-\xff\xfe-x"), "pod-\\xff\\xfe-x");
        assert_eq!(from_bytes("caf\u{e9}".as_bytes()), "caf\u{e9}");
        // Different bytes, different names (a lossy decode made both "�").
        assert_ne!(from_bytes(b"\xff"), from_bytes(b"\xfe"));
    }

    #[test]
    fn the_kernel_logs_escapes_are_undone_exactly() {
        // printk writes ESC, TAB, the backslash and every byte from 0x7f up
        // as \xNN, UTF-8 included.
        assert_eq!(
            unescape_kernel("task_memcg=/a\\x1b[2J\\x09b\\x5cx2d-caf\\xc3\\xa9-\\xff"),
            "task_memcg=/a\u{1b}[2J\tb\\x2d-caf\u{e9}-\\xff"
        );
        assert_eq!(unescape_kernel("plain"), "plain");
        assert_eq!(unescape_kernel("cut \\x4"), "cut \\x4");
        // A walk of the directory and the kernel's log agree on a name.
        assert_eq!(
            unescape_kernel("/x\\xff\\x09"),
            from_bytes(b"/x\xff\t"),
            "one cgroup, one string"
        );
    }

    #[test]
    fn control_characters_and_overrides_are_shown_not_acted_on() {
        assert_eq!(
            printable(HOSTILE),
            "bar-\\x1b[2J\\x1b]0;pwned\\x07<b>x",
            "ESC and BEL"
        );
        assert_eq!(printable("a\tb\nc\rd\u{7f}"), "a\\x09b\\x0ac\\x0dd\\u007f");
        assert_eq!(printable("csi\u{9b}2J"), "csi\\u009b2J", "C1 CSI");
        assert_eq!(
            printable("evil\u{202e}gnp.exe"),
            "evil\\u202egnp.exe",
            "right-to-left override"
        );
        assert!(matches!(
            printable("/kubepods/pod-é"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(printable_lines("one\ntwo\u{1b}"), "one\ntwo\\x1b");
    }

    /// JSON through the terminal writer is still JSON, and says the same.
    #[test]
    fn json_through_the_terminal_writer_stays_json() {
        let value = serde_json::json!({"cgroup": "/a\u{1b}[2J\u{7f}\u{9b}\u{202e}\\xff\n"});
        let mut out = Vec::new();
        TerminalSafe::new(&mut out)
            .write_all(serde_json::to_string(&value).unwrap().as_bytes())
            .unwrap();
        let back: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, value);
        assert!(!String::from_utf8(out).unwrap().contains('\u{202e}'));
    }

    #[test]
    fn the_terminal_writer_escapes_across_writes() {
        let mut out = Vec::new();
        {
            let mut safe = TerminalSafe::new(&mut out);
            safe.write_all(b"row \x1b[2J\n").unwrap();
            // An é split over two writes stays one character.
            safe.write_all(&[0xc3]).unwrap();
            safe.write_all(&[0xa9, b'\n']).unwrap();
            safe.write_all(b"\xff\x07\n").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "row \\x1b[2J\n\u{e9}\n\\xff\\x07\n"
        );
    }
}
