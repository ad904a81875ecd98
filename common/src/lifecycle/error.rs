//! The runtime's error messages, in the runtime's own words.
//!
//! runc logs in logrus text format, `time="..." level=error msg="..."`, with the message quoted
//! the way Go quotes strings (`\"`, `\\`, `\n`, `\t`, `\xNN`, `\uNNNN`); crun writes plain
//! lines. This is the one parser of that format: every tool that reports a runtime failure goes
//! through [`message_of_line`], so the same failure reads the same everywhere. A FATAL line is one
//! line, so control characters in a message become spaces.

/// The message of one log line: the unquoted `msg="..."` of a logfmt line, else the line.
pub fn message_of_line(line: &str) -> String {
    let line = line.trim();
    let text = logfmt_msg(line).unwrap_or_else(|| line.to_string());
    one_line(&text)
}

/// The last non-empty line of a runtime's stderr, as its message.
pub fn last_message(text: &str) -> Option<String> {
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    Some(message_of_line(line))
}

/// Every line's message, repeated ones once, joined with `: ` (conmon hands over the runtime's
/// whole stderr).
pub fn all_messages(text: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let m = message_of_line(line);
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out.join(": ")
}

/// `WHAT failed: <the runtime's last words>`, or the runtime's exit code when it said nothing.
pub fn failure(what: &str, stderr: &[u8], runtime_name: &str, code: i32) -> String {
    let said = last_message(&String::from_utf8_lossy(stderr))
        .unwrap_or_else(|| format!("{runtime_name} exited with {code}"));
    format!("{what} failed: {said}")
}

/// The value of the `msg` key of a logfmt line, unquoted; `None` when the line has no quoted
/// `msg` or its quote does not end.
fn logfmt_msg(line: &str) -> Option<String> {
    let start = key_start(line, "msg=\"")?;
    unquote(&line[start..])
}

/// Where the value of `key` starts: the key must begin the line or follow a space (so that
/// `errmsg="..."` is not taken for `msg`).
fn key_start(line: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = line[from..].find(key) {
        let at = from + i;
        if at == 0 || line.as_bytes()[at - 1] == b' ' {
            return Some(at + key.len());
        }
        from = at + key.len();
    }
    None
}

/// Go string unquoting of the text after the opening quote, up to the closing one.
fn unquote(rest: &str) -> Option<String> {
    let mut msg = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(msg),
            '\\' => match chars.next()? {
                'n' => msg.push('\n'),
                't' => msg.push('\t'),
                'r' => msg.push('\r'),
                'x' => {
                    let h: String = chars.by_ref().take(2).collect();
                    let b = u8::from_str_radix(&h, 16).ok()?;
                    msg.push(char::from(b));
                }
                'u' => {
                    let h: String = chars.by_ref().take(4).collect();
                    msg.push(char::from_u32(u32::from_str_radix(&h, 16).ok()?)?);
                }
                other => msg.push(other),
            },
            c => msg.push(c),
        }
    }
    None
}

/// Control characters (newlines, tabs) become single spaces; the ends are trimmed.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut gap = false;
    for c in s.chars() {
        if c.is_control() {
            gap = true;
            continue;
        }
        if gap && !out.is_empty() {
            out.push(' ');
        }
        gap = false;
        out.push(c);
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNC: &str =
        r#"time="2026-11-29T04:15:04Z" level=error msg="cannot start \"x\" container""#;

    #[test]
    fn runc_line_is_unquoted() {
        assert_eq!(message_of_line(RUNC), r#"cannot start "x" container"#);
    }

    #[test]
    fn crun_line_is_kept() {
        assert_eq!(
            message_of_line(
                "crun: executable file `nope` not found in $PATH: No such file or directory"
            ),
            "crun: executable file `nope` not found in $PATH: No such file or directory"
        );
    }

    #[test]
    fn backslashes_are_unescaped_once() {
        let l = r#"level=error msg="path C:\\dir and \"q\"""#;
        assert_eq!(message_of_line(l), r#"path C:\dir and "q""#);
    }

    #[test]
    fn newlines_and_tabs_become_spaces() {
        let l = r#"level=error msg="first\nsecond\tthird""#;
        assert_eq!(message_of_line(l), "first second third");
    }

    #[test]
    fn hex_and_unicode_escapes() {
        assert_eq!(message_of_line(r#"msg="a\x41b""#), "aAb");
        assert_eq!(message_of_line(r#"msg="caf\u00e9""#), "café");
    }

    #[test]
    fn bad_escape_keeps_the_line() {
        let l = r#"msg="bad \xZZ""#;
        assert_eq!(message_of_line(l), l);
    }

    #[test]
    fn unterminated_quote_keeps_the_line() {
        let l = r#"level=error msg="no end"#;
        assert_eq!(message_of_line(l), l);
    }

    #[test]
    fn a_key_ending_in_msg_is_not_msg() {
        let l = r#"level=error errmsg="not this" msg="this""#;
        assert_eq!(message_of_line(l), "this");
        let l = r#"level=error errmsg="only this""#;
        assert_eq!(message_of_line(l), l);
    }

    #[test]
    fn msg_at_the_start_of_the_line() {
        assert_eq!(message_of_line(r#"msg="hello""#), "hello");
    }

    #[test]
    fn last_message_skips_the_blank_tail() {
        assert_eq!(last_message("a\nb\n\n  \n").as_deref(), Some("b"));
        assert_eq!(last_message(""), None);
        assert_eq!(last_message(" \n\t\n"), None);
        assert_eq!(
            last_message(&format!("noise\n{RUNC}\n")).as_deref(),
            Some(r#"cannot start "x" container"#)
        );
    }

    #[test]
    fn all_messages_joins_and_drops_repeats() {
        let m = "time=\"t\" level=error msg=\"runc create failed: unable to start container process: exec: \\\"nope\\\": executable file not found in $PATH\"\n";
        assert_eq!(
            all_messages(m),
            "runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(all_messages("crun: x\n"), "crun: x");
        assert_eq!(all_messages("a\nb\na\n\n"), "a: b");
        assert_eq!(all_messages(""), "");
    }

    #[test]
    fn failure_names_the_operation() {
        assert_eq!(
            failure("start", RUNC.as_bytes(), "runc", 1),
            r#"start failed: cannot start "x" container"#
        );
    }

    #[test]
    fn failure_without_words_gives_the_code() {
        assert_eq!(
            failure("kill", b"\n", "crun", 1),
            "kill failed: crun exited with 1"
        );
    }

    #[test]
    fn failure_of_invalid_utf8_is_still_one_line() {
        let f = failure("state", b"bad \xff byte\n", "crun", 1);
        assert!(
            f.starts_with("state failed: bad ") && !f.contains('\n'),
            "{f}"
        );
    }
}
