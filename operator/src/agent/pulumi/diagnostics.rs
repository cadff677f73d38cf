//! What a failed command said, reduced to what a person can act on and may see: the engine's
//! diagnostics, never stdout or config values (they may be secrets).

use super::Output;

/// How long a failure's explanation may be: it ends up in object status and events.
const DETAIL_BYTES: usize = 2048;
/// A failure's explanation when the CLI printed no diagnostic on stderr.
const NO_DIAGNOSTICS: &str = "the CLI printed no error diagnostic on stderr; its standard \
     output is in the log of the workspace pod's pulumi container at debug level only (set \
     AGENT_LOG=debug on that container through the Stack's workspaceTemplate)";

/// serde_json's message for a document that did not parse, reduced to its category and
/// position: its data errors quote the offending value (`invalid type: string "hunter2"`).
pub(super) fn json_error(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "JSON of an unexpected shape",
        serde_json::error::Category::Eof => "JSON cut short",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

pub(super) fn is_error_diagnostic(event: &serde_json::Value) -> bool {
    event
        .get("diagnosticEvent")
        .and_then(|d| d.get("severity"))
        .and_then(|s| s.as_str())
        == Some("error")
}

/// Why a command failed, in a few lines a person can act on: the engine's error diagnostics
/// when there are any, else the end of stderr. Never stdout: it can print values (outputs,
/// diffs, whatever the program prints), and this text reaches statuses and events that the
/// view role can read.
pub(super) fn failure_detail(events: &[serde_json::Value], out: &Output) -> String {
    let diagnostics: Vec<String> = events
        .iter()
        .filter(|e| is_error_diagnostic(e))
        .filter_map(|e| e["diagnosticEvent"]["message"].as_str())
        .map(|m| strip_color(m).trim().to_string())
        .filter(|m| !m.is_empty())
        .collect();
    let text = if !diagnostics.is_empty() {
        diagnostics.join("; ")
    } else {
        let err_lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !is_log_line(l))
            .collect();
        if err_lines.is_empty() {
            return NO_DIAGNOSTICS.into();
        }
        let start = err_lines.len().saturating_sub(12);
        err_lines[start..].join("\n")
    };
    truncate(&strip_color(&text), DETAIL_BYTES)
}

/// Engine log lines from `--logtostderr` (JSON in current CLIs, glog's `I1125 09:33:20.1` in
/// older ones): noise in an error message.
pub(super) fn is_log_line(line: &str) -> bool {
    let b = line.as_bytes();
    line.starts_with("{\"time\":")
        || (b.len() > 5
            && matches!(b[0], b'I' | b'W' | b'E' | b'F')
            && b[1..5].iter().all(u8::is_ascii_digit))
}

/// Removes the CLI's colour directives (`<{%reset%}>`) and ANSI escapes.
pub fn strip_color(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("<{%") {
        out.push_str(&rest[..start]);
        match rest[start..].find("%}>") {
            Some(end) => rest = &rest[start + end + 3..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    let mut clean = String::with_capacity(out.len());
    let mut chars = out.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        clean.push(c);
    }
    clean
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The command line for logs and messages; config values are never shown (they may be
/// secrets), only their keys.
pub fn display_args(args: &[String]) -> String {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for a in args {
        if hide_next {
            out.push(match a.split_once('=') {
                Some((k, _)) => format!("{k}=***"),
                None => "***".into(),
            });
            hide_next = false;
            continue;
        }
        hide_next = matches!(a.as_str(), "--plaintext" | "--secret" | "--json");
        out.push(a.clone());
    }
    out.join(" ")
}

/// The permalink the CLI prints for backends that have one (Pulumi Cloud).
pub fn permalink(stdout: &str) -> Option<String> {
    for prefix in [
        "View Live: ",
        "View in Browser: ",
        "View in Browser (Ctrl+O): ",
        "Permalink: ",
    ] {
        if let Some(i) = stdout.find(prefix) {
            let rest = &stdout[i + prefix.len()..];
            let end = rest.find('\n')?;
            let link = rest[..end].trim();
            if !link.is_empty() {
                return Some(link.to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_never_appear_in_the_displayed_command() {
        let args: Vec<String> = [
            "config",
            "set-all",
            "--stack",
            "dev",
            "--path",
            "--secret",
            "p:token=hunter2",
            "--plaintext",
            "p:region=eu",
            "--json",
            "{\"p:x\":{\"value\":\"s3cret\"}}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let shown = display_args(&args);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("p:token=***"), "{shown}");
        assert!(shown.contains("--stack dev"), "{shown}");
    }

    #[test]
    fn permalinks_are_found_after_any_known_prefix() {
        assert_eq!(
            permalink("Updating...\nView Live: https://app.pulumi.com/o/p/s/updates/3\n\n"),
            Some("https://app.pulumi.com/o/p/s/updates/3".into())
        );
        assert_eq!(permalink("no link here\n"), None);
        assert_eq!(permalink("View Live: unterminated"), None);
    }

    #[test]
    fn colour_directives_and_escapes_are_stripped() {
        assert_eq!(
            strip_color("<{%fg 1%}>error: <{%reset%}>boom\u{1b}[31m!\u{1b}[0m"),
            "error: boom!"
        );
    }

    #[test]
    fn failure_detail_prefers_engine_diagnostics() {
        let events = vec![serde_json::json!({
            "diagnosticEvent": {"severity": "error", "message": "<{%reset%}>resource failed: boom\n"}
        })];
        let out = Output {
            stdout: "lots\n".into(),
            stderr: "error: update failed\n".into(),
            ..Output::default()
        };
        assert_eq!(failure_detail(&events, &out), "resource failed: boom");
        let none = failure_detail(&[], &out);
        assert_eq!(none, "error: update failed");
        let verbose = Output {
            stdout: String::new(),
            stderr: "I1125 09:33:20.1 log line\n{\"time\":\"x\",\"v\":9}\nerror: real problem\n"
                .into(),
            ..Output::default()
        };
        assert_eq!(failure_detail(&[], &verbose), "error: real problem");
    }

    #[test]
    fn failure_detail_never_quotes_stdout() {
        let out = Output {
            stdout: "Outputs:\n    password: \"hunter2\"\n".into(),
            stderr: "\n".into(),
            ..Output::default()
        };
        let detail = failure_detail(&[], &out);
        assert!(!detail.contains("hunter2"), "{detail}");
        assert_eq!(detail, NO_DIAGNOSTICS);
    }

    #[test]
    fn a_json_parse_error_never_quotes_the_output() {
        let e = serde_json::from_str::<std::collections::HashMap<String, u32>>(
            r#"{"password": "hunter2"}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("hunter2"),
            "serde_json does quote it"
        );
        let shown = json_error(&e);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.starts_with("JSON of an unexpected shape at line 1"),
            "{shown}"
        );
        let cut = serde_json::from_str::<serde_json::Value>(r#"{"a": "s3cr"#).unwrap_err();
        assert_eq!(json_error(&cut), "JSON cut short at line 1 column 11");
    }
}
