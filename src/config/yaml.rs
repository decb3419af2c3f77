//! Typed YAML parsing with positions, turning serde errors into problems, and recovering
//! after a bad entry so that one file can report several problems at once.

use super::diagnostic::Code;
use super::diagnostic::{Diagnostics, Problem, SourceFile, did_you_mean};
use serde::de::DeserializeOwned;

/// How many problems one file may report from the parser before we stop re-parsing.
const MAX_PARSE_PROBLEMS: usize = 20;

fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
    }
}

/// Parses a file into `T`. On a problem, blanks the offending entry and parses again to find
/// the next one; returns `None` when the file had any problem.
pub fn parse<T: DeserializeOwned>(file: &SourceFile, diags: &mut Diagnostics) -> Option<T> {
    parse_recovering(file, diags, false)
}

/// [`parse`], but when every problem was an unknown key that could be read as the key it
/// most likely means (`sorce:` as `source:`) or dropped, returns what was read that way, so
/// the checks after parsing can go on and report the file's other problems in the same
/// pass. The problems are reported all the same: the caller must not run what it gets.
pub fn parse_recovering<T: DeserializeOwned>(
    file: &SourceFile,
    diags: &mut Diagnostics,
    recover: bool,
) -> Option<T> {
    let mut text = file.text.to_string();
    let mut blanked_keys: Vec<String> = Vec::new();
    // Whether the text still means what the admin meant, with each unknown key read as its
    // suggestion (or, with no suggestion, dropped).
    let mut faithful = recover;
    let mut renamed_lines: Vec<usize> = Vec::new();
    let mut found = 0;
    loop {
        match serde_saphyr::from_str_with_options::<T>(&text, options()) {
            Ok(v) => {
                return if found == 0 || faithful {
                    Some(v)
                } else {
                    None
                };
            }
            Err(e) => {
                let problem = to_problem(file, &e);
                let suppressed = (problem.code == Code::MissingKey
                    && blanked_keys
                        .iter()
                        .any(|k| problem.message.contains(&format!("`{k}`"))))
                    // A key read as its suggestion that the mapping already has.
                    || (problem.code == Code::DuplicateKey
                        && renamed_lines.contains(&problem.line));
                if !suppressed {
                    diags.push(problem.clone());
                }
                found += 1;
                if found >= MAX_PARSE_PROBLEMS
                    || problem.code == Code::YamlSyntax
                    || problem.code == Code::MissingKey
                    || suppressed
                {
                    return None;
                }
                let loc = e.location()?;
                let line = loc.line() as usize;
                if faithful && problem.code == Code::UnknownKey {
                    let wrong = problem
                        .message
                        .strip_prefix("unknown key `")
                        .and_then(|m| m.strip_suffix('`'));
                    let meant = problem.help.as_deref().and_then(suggested);
                    if let (Some(wrong), Some(meant)) = (wrong, meant.as_deref())
                        && let Some(next) = rename_key(&text, line, wrong, meant)
                    {
                        renamed_lines.push(line);
                        text = next;
                        continue;
                    }
                    if meant.is_some() {
                        faithful = false;
                    }
                } else {
                    faithful = false;
                }
                match blank_entry(&text, line) {
                    Some((next, key)) => {
                        if let Some(k) = key {
                            blanked_keys.push(k);
                        }
                        if let Some(s) = problem.help.as_deref().and_then(suggested) {
                            blanked_keys.push(s);
                        }
                        text = next;
                        let empty = text
                            .lines()
                            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
                        if empty {
                            return None;
                        }
                    }
                    None => return None,
                }
            }
        }
    }
}

/// `text` with the key `from` that starts line `line` (1-based, after its indentation and
/// any `- `) written as `to`, without moving anything after it on the line: only when the
/// names are as long, nothing but a comment follows the colon, or the spaces after the
/// colon can absorb the difference.
fn rename_key(text: &str, line: usize, from: &str, to: &str) -> Option<String> {
    let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let l = lines.get(line.checked_sub(1)?)?.clone();
    let indent = l.len() - l.trim_start().len();
    let mut at = indent;
    while l[at..].starts_with("- ") {
        at += 2;
        at += l[at..].len() - l[at..].trim_start().len();
    }
    let rest = l[at..].strip_prefix(from)?.strip_prefix(':')?;
    let after = rest.trim_start();
    let spaces = rest.len() - after.len();
    let grow = to.len().saturating_sub(from.len());
    let shrink = from.len().saturating_sub(to.len());
    let value_part = if after.is_empty() || after.starts_with('#') {
        rest.to_string()
    } else if shrink > 0 {
        format!("{}{}", " ".repeat(spaces + shrink), after)
    } else if spaces > grow {
        format!("{}{}", " ".repeat(spaces - grow), after)
    } else {
        return None;
    };
    let renamed = format!("{}{to}:{value_part}", &l[..at]);
    if let Some(slot) = lines.get_mut(line - 1) {
        *slot = renamed;
    }
    Some(lines.join("\n"))
}

/// The name in a "did you mean `x`?" hint.
fn suggested(help: &str) -> Option<String> {
    let rest = help.strip_prefix("did you mean `")?;
    Some(rest[..rest.find('`')?].to_string())
}

/// Replaces the mapping entry that starts on `line` (1-based), and every deeper-indented
/// line under it, with spaces, keeping line numbers. Returns the key that was removed.
/// Refuses when the region would cut a flow collection in half.
fn blank_entry(text: &str, line: usize) -> Option<(String, Option<String>)> {
    let lines: Vec<&str> = text.split('\n').collect();
    let idx = line.checked_sub(1)?;
    let first = *lines.get(idx)?;
    let indent = first.len() - first.trim_start().len();
    let mut key_start = indent;
    let mut rest = &first[indent..];
    while let Some(r) = rest.strip_prefix("- ") {
        key_start += 2;
        let trimmed = r.trim_start();
        key_start += r.len() - trimmed.len();
        rest = trimmed;
    }
    if rest.trim().is_empty() {
        return None;
    }
    let key = rest
        .split_once(':')
        .map(|(k, _)| k.trim().trim_matches(['"', '\'']).to_string())
        .filter(|k| !k.is_empty() && !k.contains(' '));
    let mut end = idx + 1;
    while end < lines.len() {
        let l = lines[end];
        let t = l.trim_start();
        if !t.is_empty() && !t.starts_with('#') && l.len() - t.len() <= key_start {
            break;
        }
        end += 1;
    }
    let mut region = String::new();
    region.push_str(&first[key_start..]);
    for l in &lines[idx + 1..end] {
        region.push_str(l);
    }
    if !balanced(&region) {
        return None;
    }
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    out[idx] = format!(
        "{}{}",
        &first[..key_start],
        " ".repeat(first.len() - key_start)
    );
    for l in out.iter_mut().take(end).skip(idx + 1) {
        *l = " ".repeat(l.len());
    }
    // A list item whose only entry was removed would leave a bare `-`; that is a null item,
    // which the next parse reports as a type error at the same line; avoid looping on it.
    if out[idx].trim() == "-" || out[idx].trim().is_empty() && first.trim_start().starts_with('-') {
        out[idx] = " ".repeat(first.len());
    }
    Some((out.join("\n"), key))
}

fn balanced(s: &str) -> bool {
    let mut depth: i64 = 0;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '{' | '[' => depth += 1,
                '}' | ']' => depth -= 1,
                _ => {}
            },
        }
    }
    depth == 0
}

/// Converts a serde-saphyr error into a problem with our wording and a hint.
pub fn to_problem(file: &SourceFile, e: &serde_saphyr::Error) -> Problem {
    let raw = e.without_snippet().to_string();
    let (code, message, help) = classify(&strip_position(&raw));
    let (offset, len) = match e.location() {
        Some(loc) if loc.line() > 0 => {
            let (mut line, mut column) = (loc.line() as usize, loc.column() as usize);
            // A missing key is reported by the parser at the mapping's last key; the mapping
            // starts at its first.
            if code == Code::MissingKey {
                (line, column) = mapping_start(&file.text, line, column);
            }
            let off = file.offset_of(line, column);
            let rest = &file.text[off..];
            let token = token_len(rest);
            (off, token)
        }
        _ => (file.text.len(), 0),
    };
    let (message, help) = match code {
        Code::YamlSyntax => match indentation_hint(&file.text, &message, file.line_col(offset).0) {
            Some((m, h)) => (m, Some(h)),
            None => (message, help),
        },
        _ => (message, help),
    };
    let label = match code {
        Code::UnknownKey => "unknown key",
        Code::MissingKey => "in this mapping",
        Code::WrongType => "wrong type",
        Code::UnknownValue => "not allowed here",
        _ => "here",
    };
    Problem::at(file, code, offset, len, message)
        .label(label)
        .maybe_help(help)
}

/// Where a YAML syntax error is most likely a line indented wrongly, our words for it and a
/// hint naming the line to check and the indentation the lines around it have.
fn indentation_hint(text: &str, parser: &str, line: usize) -> Option<(String, String)> {
    let lines: Vec<&str> = text.split('\n').collect();
    let this = *lines.get(line.checked_sub(1)?)?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    // The nearest line above with content, and where its key starts (after any `- `).
    let above = lines[..line - 1]
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))?;
    let key_col = |l: &str| {
        let mut at = indent(l);
        while l[at..].starts_with("- ") {
            at += 2;
            at += indent(&l[at..]);
        }
        at
    };
    let here = indent(this);
    let spaces = |n: usize| {
        if n == 1 {
            "1 space".to_string()
        } else {
            format!("{n} spaces")
        }
    };
    if parser.contains("did not find expected '-' indicator") {
        // The nearest `- ` item at or left of this line.
        let item = lines[..line - 1].iter().rev().find(|l| {
            let t = l.trim_start();
            t.starts_with("- ") && indent(l) <= here
        });
        let hint = match item {
            Some(item) => format!(
                "check the indentation of line {line}: a key of the list item above lines up with its first key ({}); a new item starts with `- ` at {}",
                spaces(key_col(item)),
                spaces(indent(item))
            ),
            None => format!(
                "check the indentation of line {line}: it does not line up with the list above it"
            ),
        };
        return Some((
            format!("line {line} is not lined up with the list it is in"),
            hint,
        ));
    }
    if parser.contains("did not find expected key") {
        return Some((
            format!("line {line} is not lined up with the keys above it"),
            format!(
                "check the indentation of line {line} ({}): keys of one mapping start in the same column; the line above starts its key at {}",
                spaces(here),
                spaces(key_col(above))
            ),
        ));
    }
    if parser.contains("mapping values are not allowed") {
        let above_has_value = above
            .split_once(':')
            .is_some_and(|(_, v)| !v.trim().is_empty() && !v.trim_start().starts_with('#'));
        let deeper = here > key_col(above);
        let hint = if deeper && above_has_value {
            format!(
                "check the indentation of line {line}: it is indented deeper than the key above it ({} vs {}), so it reads as part of that key's value",
                spaces(here),
                spaces(key_col(above))
            )
        } else {
            format!(
                "check the indentation of line {line}, or quote a value that contains `: ` (like \"a: b\")"
            )
        };
        return Some((
            format!("line {line} has a `key:` where a value was expected"),
            hint,
        ));
    }
    None
}

/// The first key of the block mapping that has a key at `line`:`column` (1-based, the
/// column in characters): the topmost line above at the same indentation without a line
/// less indented between, or the `- ` list item that opens it. A key inside a flow mapping
/// (`{ a: 1 }`) is left where it is.
fn mapping_start(text: &str, line: usize, column: usize) -> (usize, usize) {
    let lines: Vec<&str> = text.split('\n').collect();
    let Some(at) = line.checked_sub(1).and_then(|i| lines.get(i)) else {
        return (line, column);
    };
    let key_col = column.saturating_sub(1);
    let before: String = at.chars().take(key_col).collect();
    if before.contains(['{', '[']) || before.trim_start_matches([' ', '-']).trim() != "" {
        return (line, column);
    }
    let mut best = (line, column);
    for i in (0..line - 1).rev() {
        let l = lines[i];
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let indent = l.chars().count() - t.chars().count();
        // Where the line's key starts, after any `- ` list markers.
        let mut key_at = indent;
        let mut rest = t;
        while let Some(r) = rest.strip_prefix('-') {
            let r2 = r.trim_start_matches(' ');
            if r2.len() == r.len() && !r.is_empty() {
                break;
            }
            key_at += 1 + (r.len() - r2.len());
            rest = r2;
        }
        if indent > key_col {
            continue;
        }
        if key_at == key_col {
            best = (i + 1, key_col + 1);
            if indent < key_col {
                // `- first_key:` opens the mapping.
                break;
            }
            continue;
        }
        break;
    }
    best
}

/// Length of the token at the start of `rest`: a key up to `:`, a scalar up to the end of
/// the line, at least one character.
fn token_len(rest: &str) -> usize {
    let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
    let line = line.trim_end();
    if let Some(i) = line
        .find(": ")
        .or_else(|| line.strip_suffix(':').map(|l| l.len()))
    {
        if i > 0 {
            return i;
        }
    }
    let mut n = 0;
    for c in line.chars() {
        if c == '#' && n > 0 {
            break;
        }
        n += c.len_utf8();
    }
    line[..n].trim_end().len().max(1).min(line.len().max(1))
}

fn strip_position(msg: &str) -> String {
    let msg = msg.trim();
    let msg = match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains("column") => &msg[..i],
        _ => msg,
    };
    let msg = msg
        .strip_prefix("line ")
        .and_then(|m| m.split_once(": ").map(|(_, r)| r))
        .unwrap_or(msg);
    msg.to_string()
}

/// The problem for a [`super::spec::Choice`] that is not one of its words, with the same
/// wording and hint a parse error would have.
pub(crate) fn choice_problem(file: &SourceFile, pos: super::at::Pos, reason: &str) -> Problem {
    let (code, message, help) = classify(&strip_position(reason));
    let label = match code {
        Code::UnknownValue => "not allowed here",
        Code::WrongType => "wrong type",
        _ => "here",
    };
    Problem::at_pos(file, code, pos, message)
        .label(label)
        .maybe_help(help)
}

/// Our wording for serde-saphyr's messages: (code, message, hint).
fn classify(message: &str) -> (Code, String, Option<String>) {
    let quoted = |rest: &str| rest.split('`').next().unwrap_or("").to_string();
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let name = quoted(rest);
        let candidates = expected_list(message);
        let help = did_you_mean(&name, candidates.iter().map(String::as_str)).or_else(|| {
            (!candidates.is_empty()).then(|| format!("valid keys here: {}", candidates.join(", ")))
        });
        return (Code::UnknownKey, format!("unknown key `{name}`"), help);
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let name = quoted(rest);
        let candidates = expected_list(message);
        let help = did_you_mean(&name, candidates.iter().map(String::as_str)).or_else(|| {
            (!candidates.is_empty()).then(|| format!("one of: {}", candidates.join(", ")))
        });
        return (
            Code::UnknownValue,
            format!("`{name}` is not one of {}", candidates.join(", ")),
            help,
        );
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = quoted(rest);
        return (
            Code::MissingKey,
            format!("missing key `{name}`"),
            Some(format!("add `{name}:` to this mapping")),
        );
    }
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let name = rest.split(',').next().unwrap_or(rest).trim();
        return (
            Code::DuplicateKey,
            format!("`{name}` is written twice in this mapping"),
            Some("each key may appear once; remove one of them".into()),
        );
    }
    let expected = [
        ("expected string scalar", "expected a string"),
        ("expected sequence start", "expected a list"),
        ("expected mapping start", "expected a mapping"),
    ];
    for (theirs, ours) in expected {
        if message.starts_with(theirs) {
            let help = match ours {
                "expected a list" => Some("write `[a, b]` or one `- item` per line".to_string()),
                "expected a mapping" => {
                    Some("write `key: value` entries indented below".to_string())
                }
                _ => None,
            };
            return (Code::WrongType, ours.to_string(), help);
        }
    }
    if message.starts_with("invalid boolean") {
        return (
            Code::WrongType,
            "expected `true` or `false`".into(),
            Some("ferry reads only `true` and `false` as booleans (not yes/no/on/off)".into()),
        );
    }
    if message.starts_with("invalid type")
        || message.starts_with("invalid value")
        || message.starts_with("expected")
        || message.starts_with("invalid")
        || message.contains("cannot deserialize")
    {
        return (Code::WrongType, message.to_string(), None);
    }
    (Code::YamlSyntax, message.to_string(), None)
}

/// The names after "expected one of" / "expected `a` or `b`" in a serde message.
fn expected_list(message: &str) -> Vec<String> {
    let Some(i) = message.find("expected") else {
        return Vec::new();
    };
    let rest = &message[i + "expected".len()..];
    let rest = rest.trim_start().strip_prefix("one of").unwrap_or(rest);
    rest.split([',', ' '])
        .map(|s| s.trim().trim_matches('`'))
        .filter(|s| !s.is_empty() && *s != "or" && *s != "and")
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        #[serde(default)]
        count: u32,
        #[serde(default)]
        items: Vec<Item>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        id: String,
        #[serde(default)]
        flag: bool,
    }

    fn run(text: &str) -> Diagnostics {
        let f = SourceFile::new(Path::new("t.yaml"), "t.yaml".into(), text.into());
        let mut d = Diagnostics::default();
        let _ = parse::<Doc>(&f, &mut d);
        d
    }

    #[test]
    fn reports_several_problems_in_one_file() {
        let d = run("name: a\ncont: 3\nitems:\n  - id: x\n    flag: yes\n  - idd: y\n");
        let got: Vec<_> = d
            .problems
            .iter()
            .map(|p| (p.line, p.column, p.code))
            .collect();
        assert_eq!(
            got,
            vec![
                (2, 1, Code::UnknownKey),
                (5, 11, Code::WrongType),
                (6, 5, Code::UnknownKey),
            ],
            "{d:#?}"
        );
        assert_eq!(d.problems[0].help.as_deref(), Some("did you mean `count`?"));
    }

    #[test]
    fn a_misspelt_required_key_is_one_problem() {
        let d = run("nme: a\n");
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(d.problems[0].help.as_deref(), Some("did you mean `name`?"));
    }

    #[test]
    fn a_missing_key_points_at_the_first_key_of_its_mapping() {
        // Top level, after a comment.
        let d = run("# doc\ncount: 1\nitems: []\n");
        assert_eq!((d.problems[0].line, d.problems[0].column), (2, 1), "{d:#?}");
        assert_eq!(d.problems[0].code, Code::MissingKey);
        assert_eq!(
            mapping_start("a:\n  b: 1\n  c:\n    d: 2\n  e: 3\n", 5, 3),
            (2, 3)
        );
        assert_eq!(
            mapping_start("- x: 1\n  y: 2\n- z: 1\n  w: 2\n", 4, 3),
            (3, 3)
        );
        assert_eq!(mapping_start("a: { b: 1, c: 2 }\n", 1, 12), (1, 12));
    }

    #[test]
    fn a_misspelt_key_is_read_as_its_suggestion_without_moving_columns() {
        let text = "a:\n  sobjetc: Event\n  acton: x\n  fieldz:\n    f: 1\n  namee:   y\n";
        assert_eq!(
            rename_key(text, 2, "sobjetc", "sobject").as_deref(),
            Some("a:\n  sobject: Event\n  acton: x\n  fieldz:\n    f: 1\n  namee:   y\n")
        );
        // Longer, with the value right after the colon: it would move; refused.
        assert_eq!(rename_key(text, 3, "acton", "action"), None);
        // Longer, with nothing after the colon, or room in the spaces: done.
        let t = rename_key(text, 4, "fieldz", "fieldss").unwrap();
        assert_eq!(t.split('\n').nth(3), Some("  fieldss:"));
        let t = rename_key(text, 6, "namee", "nameee").unwrap();
        assert_eq!(t.split('\n').nth(5), Some("  nameee:  y"));
        assert_eq!(
            t.split('\n').nth(5).map(str::len),
            text.split('\n').nth(5).map(str::len)
        );
    }

    #[test]
    fn recovery_reads_on_after_a_misspelt_key_and_still_reports_it() {
        let f = SourceFile::new(
            Path::new("t.yaml"),
            "t.yaml".into(),
            "nmae: a\ncount: 2\nextra: 1\n".into(),
        );
        let mut d = Diagnostics::default();
        let doc = parse_recovering::<Doc>(&f, &mut d, true).expect("recovered");
        assert_eq!((doc.name.as_str(), doc.count), ("a", 2));
        let codes: Vec<_> = d.problems.iter().map(|p| (p.line, p.code)).collect();
        assert_eq!(codes, vec![(1, Code::UnknownKey), (3, Code::UnknownKey)]);
        // Without recovery the same file gives the same problems and nothing to check.
        let mut d2 = Diagnostics::default();
        assert!(parse::<Doc>(&f, &mut d2).is_none());
        assert_eq!(d2.len(), 2);
    }

    #[test]
    fn a_misindented_line_gets_a_hint_naming_it() {
        let d = run("name: a\nitems:\n  - id: x\n     flag: true\n");
        assert_eq!(d.len(), 1, "{d:#?}");
        let p = &d.problems[0];
        assert_eq!(p.code, Code::YamlSyntax);
        assert!(
            !p.message.contains("indicator") && !p.message.contains("block"),
            "{p:#?}"
        );
        let help = p.help.as_deref().unwrap_or("");
        assert!(help.contains("line 4"), "{help}");

        let d = run("name: a\nitems:\n  - id: x\n   flag: true\n");
        let help = d.problems[0].help.clone().unwrap_or_default();
        assert!(
            help.starts_with("check the indentation of line 4"),
            "{d:#?}"
        );
        assert!(help.contains("(4 spaces)"), "{help}");

        let d = run("name: a\n count: 3\n");
        assert_eq!(
            d.problems[0].message,
            "line 2 has a `key:` where a value was expected"
        );
        assert!(
            d.problems[0]
                .help
                .as_deref()
                .unwrap_or("")
                .contains("deeper than the key above"),
            "{d:#?}"
        );

        let d = run("items:\n  - id: x\n    flag: true\n   - id: y\nname: a\n");
        assert!(
            d.problems[0]
                .help
                .as_deref()
                .unwrap_or("")
                .contains("line 4"),
            "{d:#?}"
        );
    }

    #[test]
    fn syntax_errors_stop() {
        let d = run("name: [a\n");
        assert_eq!(d.len(), 1);
        assert!(d.problems[0].line >= 1);
    }
}
