//! `sluice man --out DIR`: the manual pages, written by the binary itself
//! so they cannot drift from it: `sluice(8)` and one page per subcommand
//! from the clap definitions (`clap_mangen`), and `sluice.toml(5)` from
//! the commented example configuration (`deploy/sluice.example.toml`,
//! compiled in), the same file the package installs as the example.
//!
//! The example is read as a sequence of paragraphs (runs of lines between
//! blank lines): a table header (`[server]`, or `# [tls]` right after a
//! `# ---` rule) starts a section of the page; a paragraph with keys
//! (`key = value`, or commented out as `# key = value`) becomes one
//! entry named by its keys, its comment lines the description and its key
//! lines the example; a paragraph without keys is prose.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap_mangen::roff::{Roff, bold, italic, roman};

/// The example configuration, as shipped in /usr/share/doc/sluice.
const EXAMPLE: &str = include_str!("../../deploy/sluice.example.toml");

/// Writes every page into `out` (created if missing); returns their paths.
pub(crate) fn write_all(cmd: clap::Command, out: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut written = Vec::new();
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    command_pages(&cmd, cmd.get_name(), out, &mut written)?;
    let path = out.join("sluice.toml.5");
    std::fs::write(&path, config_page(EXAMPLE))?;
    written.push(path);
    Ok(written)
}

/// The page of `cmd` (named `name`, e.g. `sluice-bans-list`) and of each
/// of its visible subcommands.
fn command_pages(cmd: &clap::Command, name: &str, out: &Path, written: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let top = !name.contains('-');
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section("8")
        .source(format!("sluice {}", env!("CARGO_PKG_VERSION")))
        .manual("System Administration");
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut page)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut page)?;
    }
    if cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some() {
        let mut extra = Vec::new();
        man.render_extra_section(&mut extra)?;
        // clap_mangen calls it EXTRA; ours are always examples.
        page.extend_from_slice(
            String::from_utf8_lossy(&extra)
                .replace(".SH EXTRA", ".SH EXAMPLES")
                .as_bytes(),
        );
    }
    if top {
        page.extend_from_slice(TOP_EXTRA.as_bytes());
    }
    let mut see = Roff::new();
    see.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = Vec::new();
    if !top {
        refs.push("sluice(8)".into());
    }
    refs.extend(
        cmd.get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| format!("{name}-{}(8)", s.get_name())),
    );
    refs.push("sluice.toml(5)".into());
    see.text([roman(refs.join(", "))]);
    page.extend_from_slice(see.to_roff().as_bytes());
    let path = out.join(format!("{name}.8"));
    std::fs::File::create(&path)?.write_all(&page)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command_pages(sub, &format!("{name}-{}", sub.get_name()), out, written)?;
    }
    Ok(())
}

/// What `sluice(8)` says beyond the command line: files, signals, exit
/// codes, the service.
const TOP_EXTRA: &str = r#".SH FILES
.TP
.I /etc/sluice/sluice.toml
The configuration, see \fBsluice.toml\fR(5).
.TP
.I /etc/sluice/recipients
The recipient table (Postfix map text format).
.TP
.I /var/spool/sluice
The spool: accepted mail until the next hop has it, the quarantine, the
bans, the greylisting state and the control sockets.
.TP
.I /var/lib/sluice
State kept for the admin's tools (a classifier model, the banned list).
.TP
.I /var/log/sluice
The event log, when \fBlog.events\fR names a file there (reopened on SIGUSR1).
.TP
.I /usr/share/doc/sluice/sluice.example.toml
Every key, commented, with its default.
.SH SIGNALS
.TP
.B SIGTERM, SIGINT
Stop accepting, answer 421 at command boundaries, let DATA in progress and
deliveries finish within \fBtimeouts.shutdown_grace\fR, then exit.
.TP
.B SIGHUP
Re-read the configuration, as \fBsluice reload\fR does.
.TP
.B SIGUSR1
Reopen the event log file (for logrotate).
.SH EXIT STATUS
0 on success, 64 when the configuration is invalid (sysexits EX_USAGE;
systemd does not restart the service then), 1 on other errors.
.SH SYSTEMD
The unit \fIsluice.service\fR runs \fBsluice serve\fR as user \fIsluice\fR
with Type=notify: \fBsystemctl start\fR returns once the listeners are bound,
and sluice feeds the watchdog (WatchdogSec) from its main loop. The nft and
ipset exporters need CAP_NET_ADMIN, which the unit does not grant; the
drop-in \fI/usr/share/sluice/systemd/firewall.conf\fR does, linked into
\fI/etc/systemd/system/sluice.service.d/\fR (see that file).
"#;

/// One paragraph of the example, as it goes on the page.
#[derive(Debug, Default, PartialEq)]
struct Entry {
    /// The keys it documents (none: prose).
    keys: Vec<String>,
    /// Comment text, one item per line; `None` is a paragraph break.
    doc: Vec<Option<String>>,
    /// The key lines as written (commented-out ones without the `# `).
    example: Vec<String>,
}

/// A table of the example: `[server]`, `[firewall.rules.unknown_user]`.
#[derive(Debug, Default, PartialEq)]
struct Section {
    title: String,
    entries: Vec<Entry>,
}

/// The example read as sections; the first (empty title) is the text
/// before the first table.
fn parse(text: &str) -> Vec<Section> {
    let mut sections = vec![Section::default()];
    let mut entry = Entry::default();
    // Inside a commented-out table given as an example (`# [relay.routes]`):
    // its key lines are example lines, not keys of the section.
    let mut example_table = false;
    let mut after_rule = false;
    let mut in_value = false;
    for line in text.lines() {
        let trimmed = line.trim_end();
        if trimmed.starts_with("# ---") {
            after_rule = true;
            continue;
        }
        let rule_before = std::mem::take(&mut after_rule);
        if trimmed.is_empty() {
            flush(&mut sections, &mut entry);
            example_table = false;
            in_value = false;
            continue;
        }
        // The continuation of a multi-line value (`banned_extensions`).
        if in_value && line.starts_with(char::is_whitespace) {
            entry.example.push(trimmed.to_string());
            continue;
        }
        in_value = false;
        if let Some(title) = table_header(trimmed) {
            // Prose right before a table describes that table.
            if !entry.keys.is_empty() || !entry.example.is_empty() {
                flush(&mut sections, &mut entry);
            }
            sections.push(Section {
                title: title.to_string(),
                entries: Vec::new(),
            });
            continue;
        }
        let Some(comment) = trimmed.strip_prefix('#') else {
            // An uncommented key line.
            add_key(&mut entry, trimmed, false);
            in_value = !balanced(trimmed);
            continue;
        };
        let comment = comment.strip_prefix(' ').unwrap_or(comment);
        if let Some(title) = commented_header(comment) {
            let current = &sections.last().expect("a section").title;
            if rule_before {
                // `# [tls]   (optional; ...)` between rules: a section, the
                // note its first words.
                flush(&mut sections, &mut entry);
                sections.push(Section {
                    title: title_name(title).to_string(),
                    entries: Vec::new(),
                });
                let note = title[title_name(title).len()..].trim();
                if !note.is_empty() {
                    entry.doc.push(Some(note.to_string()));
                }
            } else if title_name(title) == title_name(current) {
                // The table repeated for copying: what is before it is
                // the section's introduction.
                flush(&mut sections, &mut entry);
            } else {
                example_table = true;
                entry.example.push(comment.to_string());
            }
            continue;
        }
        if let Some(key) = key_name(comment) {
            // A quoted key in a comment is an example entry of a map
            // (`"zone" = "text"`), not a key of the section.
            add_key(&mut entry, comment, example_table || key.starts_with('"'));
            continue;
        }
        // Prose; `# # text` documents a commented-out key.
        let prose = comment.strip_prefix("# ").unwrap_or(comment);
        if prose.is_empty() || prose == "#" {
            entry.doc.push(None);
        } else {
            if !entry.example.is_empty() {
                // New text after key lines starts the next entry.
                flush(&mut sections, &mut entry);
            }
            entry.doc.push(Some(prose.to_string()));
        }
    }
    flush(&mut sections, &mut entry);
    sections
}

/// Adds a key line to `entry`; `example_only`: shown, not a key.
fn add_key(entry: &mut Entry, line: &str, example_only: bool) {
    if !example_only && let Some(name) = key_name(line) {
        let name = name.trim_matches('"').to_string();
        if !entry.keys.contains(&name) {
            entry.keys.push(name);
        }
    }
    entry.example.push(line.to_string());
}

/// Ends the paragraph: the entry goes to the current section.
fn flush(sections: &mut [Section], entry: &mut Entry) {
    while entry.doc.last().is_some_and(Option::is_none) {
        entry.doc.pop();
    }
    while entry.doc.first().is_some_and(Option::is_none) {
        entry.doc.remove(0);
    }
    if entry.doc.is_empty() && entry.example.is_empty() {
        return;
    }
    let e = std::mem::take(entry);
    sections.last_mut().expect("a section").entries.push(e);
}

/// `[name]` alone on a line.
fn table_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    (!inner.is_empty() && inner.chars().all(|c| c.is_ascii_alphanumeric() || "_.\"-".contains(c))).then_some(line)
}

/// `[name]`, maybe followed by a parenthesised note, in a comment.
fn commented_header(comment: &str) -> Option<&str> {
    let (head, rest) = match comment.find(']') {
        Some(i) => comment.split_at(i + 1),
        None => return None,
    };
    let rest = rest.trim();
    (table_header(head).is_some() && (rest.is_empty() || rest.starts_with('('))).then_some(comment)
}

/// `[server]` of `[tls]   (optional; ...)`.
fn title_name(title: &str) -> &str {
    title.find(']').map_or(title, |i| &title[..=i])
}

/// The key of a `key = value` line: a bare or quoted key.
fn key_name(line: &str) -> Option<&str> {
    let (key, _) = line.split_once(" = ")?;
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let quoted = key.len() > 2 && key.starts_with('"') && key.ends_with('"') && !key[1..key.len() - 1].contains('"');
    (bare || quoted).then_some(key)
}

/// Whether the brackets of a value line are closed (else the value goes
/// on over the next lines).
fn balanced(line: &str) -> bool {
    let (mut depth, mut in_str) = (0i32, false);
    for c in line.chars() {
        match c {
            '"' => in_str = !in_str,
            '[' | '{' if !in_str => depth += 1,
            ']' | '}' if !in_str => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

/// `sluice.toml(5)` from the example's text.
fn config_page(example: &str) -> String {
    let sections = parse(example);
    let mut r = Roff::new();
    let source = format!("sluice {}", env!("CARGO_PKG_VERSION"));
    r.control("TH", ["SLUICE.TOML", "5", "", source.as_str(), "File Formats"]);
    r.control("SH", ["NAME"]);
    r.text([roman(
        "sluice.toml - configuration of the sluice SMTP relay and content filter",
    )]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([italic("/etc/sluice/sluice.toml")]);
    r.control("SH", ["DESCRIPTION"]);
    r.text([
        bold("sluice"),
        roman(
            "(8) reads its configuration from the file named by -c/--config or SLUICE_CONFIG, \
             else /etc/sluice/sluice.toml when it exists, else it runs on the built-in defaults. \
             The file is TOML. This page is generated from the commented example configuration, \
             /usr/share/doc/sluice/sluice.example.toml, which the text below calls \"here\" and \
             \"this file\"; every key is listed with its default.",
        ),
    ]);
    r.text([
        roman("Check a file with "),
        bold("sluice check-config"),
        roman("; see what is in effect with "),
        bold("sluice config"),
        roman("."),
    ]);
    for (i, section) in sections.iter().enumerate() {
        if i > 0 {
            r.control("SH", [section.title.as_str()]);
        }
        for entry in &section.entries {
            render_entry(&mut r, entry);
        }
    }
    r.control("SH", ["FILES"]);
    r.control("TP", []);
    r.text([italic("/etc/sluice/sluice.toml")]);
    r.text([roman("The configuration.")]);
    r.control("TP", []);
    r.text([italic("/usr/share/doc/sluice/sluice.example.toml")]);
    r.text([roman("The example this page is made from.")]);
    r.control("SH", ["SEE ALSO"]);
    r.text([roman(
        "sluice(8), sluice-check-config(8), sluice-config(8), sluice-reload(8)",
    )]);
    r.render()
}

fn render_entry(r: &mut Roff, entry: &Entry) {
    if entry.keys.is_empty() {
        r.control("PP", []);
    } else {
        r.control("TP", []);
        r.control("B", [entry.keys.join(", ").as_str()]);
    }
    // Comment lines: prose is filled; lines indented in the comment (lists,
    // tables) are kept as they are.
    let mut literal = false;
    for line in &entry.doc {
        match line {
            None => {
                set_fill(r, &mut literal, false);
                r.control("sp", []);
            }
            Some(l) => {
                set_fill(r, &mut literal, l.starts_with(' '));
                if !literal && l.starts_with("Default") {
                    r.control("br", []);
                }
                r.text([roman(l.as_str())]);
            }
        }
    }
    set_fill(r, &mut literal, false);
    if !entry.example.is_empty() {
        if !entry.doc.is_empty() {
            r.control("sp", []);
        }
        r.control("nf", []);
        for l in &entry.example {
            r.text([roman(l.as_str())]);
        }
        r.control("fi", []);
    }
}

/// Switches between filled text and lines kept as written.
fn set_fill(r: &mut Roff, literal: &mut bool, want_literal: bool) {
    if want_literal != *literal {
        r.control(if want_literal { "nf" } else { "fi" }, []);
        *literal = want_literal;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_become_entries_named_by_their_keys() {
        let text = "# Header line.\n\n# ---\n[server]\n# ---\n\n# Where to listen.\n# Default: x\nlisten = [\"a\",\n  \"b\"]\n\n# Two keys.\ntag = 5.0\nreject = 10.0\n\n# Unset by default.\n# helo_name = \"mx\"\n\n# ---\n# [tls]   (optional)\n# ---\n# Both keys.\n#\n# [tls]\n# # The chain.\n# cert = \"c.pem\"\n# # The key.\n# key = \"k.pem\"\n\n# Routes, e.g.\n# [relay.routes]\n# \"example.org\" = \"lmtp:/x\"\n";
        let s = parse(text);
        assert_eq!(s[0].entries[0].doc, vec![Some("Header line.".to_string())]);
        assert_eq!(s[1].title, "[server]");
        let keys: Vec<_> = s[1].entries.iter().map(|e| e.keys.join(",")).collect();
        assert_eq!(keys, ["listen", "tag,reject", "helo_name"]);
        assert_eq!(s[1].entries[0].example, ["listen = [\"a\",", "  \"b\"]"]);
        assert_eq!(s[2].title, "[tls]");
        assert_eq!(s[2].entries[0].doc[0].as_deref(), Some("(optional)"));
        let keys: Vec<_> = s[2].entries.iter().map(|e| e.keys.join(",")).collect();
        assert_eq!(keys, ["", "cert", "key", ""], "{:#?}", s[2]);
        assert_eq!(s[2].entries[1].doc, vec![Some("The chain.".to_string())]);
        // A commented table given as an example is shown, not documented.
        assert_eq!(
            s[2].entries[3].example,
            ["[relay.routes]", "\"example.org\" = \"lmtp:/x\""]
        );
    }

    /// Every key of the example, uncommented or commented out, is on the
    /// page under its table.
    #[test]
    fn the_page_documents_every_key_of_the_example() {
        let sections = parse(EXAMPLE);
        let mut current = String::new();
        let mut expected = Vec::new();
        for line in EXAMPLE.lines() {
            if let Some(t) = table_header(line) {
                current = t.to_string();
            } else if let Some(k) = key_name(line).filter(|_| !line.starts_with('#')) {
                expected.push((current.clone(), k.trim_matches('"').to_string()));
            }
        }
        assert!(expected.len() > 100, "{}", expected.len());
        for (table, key) in &expected {
            let documented = sections
                .iter()
                .filter(|s| title_name(&s.title) == table)
                .any(|s| s.entries.iter().any(|e| e.keys.contains(key)));
            assert!(documented, "{table} {key} is not on the page");
        }
        let page = config_page(EXAMPLE);
        assert!(page.starts_with(".ie \\n(.g"), "{}", &page[..80]);
        assert!(page.contains("\n.SH [spam]\n"));
        assert!(page.contains("\n.B max_message_size\n"));
        // The commented-out keys with their own documentation too.
        assert!(page.contains("\n.B cert\n") && page.contains("\n.B bayes_model\n"));
    }
}
