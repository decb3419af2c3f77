//! Problems found while loading: each carries its file, line, column, the offending text's
//! byte range, a label and a hint, and renders as a miette diagnostic.

use super::at::Pos;
use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file the loader read, kept so diagnostics can quote it.
/// What kind of problem a diagnostic reports: stable names (`ferry::unknown_key`) that
/// scripts, editors and the docs can rely on; one variant each, so a typo is a build error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    AmbiguousConnection,
    BadAddress,
    BadApiVersion,
    BadDuration,
    BadName,
    BadPublicHost,
    BadSchedule,
    BadTime,
    BadUrl,
    ConflictingWriters,
    DeclaredLater,
    DuplicateKey,
    DuplicatePipeline,
    EmptyMatch,
    EmptySecret,
    FilterArguments,
    ForEachNotList,
    IdNotUpdate,
    InlineSecret,
    Interpolation,
    ItemOutsideForEach,
    Jsonpath,
    KeyNotField,
    KeyWithoutValue,
    MissingEnv,
    MissingFile,
    MissingId,
    MissingKey,
    MissingKeyField,
    MissingParam,
    NoSinks,
    NotAvailableYet,
    NotIncremental,
    NotTriggerable,
    OnlineField,
    OnlineValue,
    OutOfRange,
    PublishSobject,
    SearchBy,
    ShadowedField,
    TemplateSyntax,
    TriggerForStream,
    UnknownConnection,
    UnknownEvent,
    UnknownField,
    UnknownFilter,
    UnknownKey,
    UnknownLookup,
    UnknownName,
    UnknownParam,
    UnknownReference,
    UnknownSetting,
    UnknownSink,
    UnknownStream,
    UnknownValue,
    Unreadable,
    WrongAuthOption,
    WrongAuthType,
    WrongConnectionKind,
    WrongKindOption,
    WrongType,
    YamlSyntax,
}

impl Code {
    /// The code as printed (`ferry::unknown_key`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::AmbiguousConnection => "ferry::ambiguous_connection",
            Code::BadAddress => "ferry::bad_address",
            Code::BadApiVersion => "ferry::bad_api_version",
            Code::BadDuration => "ferry::bad_duration",
            Code::BadName => "ferry::bad_name",
            Code::BadPublicHost => "ferry::bad_public_host",
            Code::BadSchedule => "ferry::bad_schedule",
            Code::BadTime => "ferry::bad_time",
            Code::BadUrl => "ferry::bad_url",
            Code::ConflictingWriters => "ferry::conflicting_writers",
            Code::DeclaredLater => "ferry::declared_later",
            Code::DuplicateKey => "ferry::duplicate_key",
            Code::DuplicatePipeline => "ferry::duplicate_pipeline",
            Code::EmptyMatch => "ferry::empty_match",
            Code::EmptySecret => "ferry::empty_secret",
            Code::FilterArguments => "ferry::filter_arguments",
            Code::ForEachNotList => "ferry::for_each_not_list",
            Code::IdNotUpdate => "ferry::id_not_update",
            Code::InlineSecret => "ferry::inline_secret",
            Code::Interpolation => "ferry::interpolation",
            Code::ItemOutsideForEach => "ferry::item_outside_for_each",
            Code::Jsonpath => "ferry::jsonpath",
            Code::KeyNotField => "ferry::key_not_field",
            Code::KeyWithoutValue => "ferry::key_without_value",
            Code::MissingEnv => "ferry::missing_env",
            Code::MissingFile => "ferry::missing_file",
            Code::MissingId => "ferry::missing_id",
            Code::MissingKey => "ferry::missing_key",
            Code::MissingKeyField => "ferry::missing_key_field",
            Code::MissingParam => "ferry::missing_param",
            Code::NoSinks => "ferry::no_sinks",
            Code::NotAvailableYet => "ferry::not_available_yet",
            Code::NotIncremental => "ferry::not_incremental",
            Code::NotTriggerable => "ferry::not_triggerable",
            Code::OnlineField => "ferry::online_field",
            Code::OnlineValue => "ferry::online_value",
            Code::OutOfRange => "ferry::out_of_range",
            Code::PublishSobject => "ferry::publish_sobject",
            Code::SearchBy => "ferry::search_by",
            Code::ShadowedField => "ferry::shadowed_field",
            Code::TemplateSyntax => "ferry::template_syntax",
            Code::TriggerForStream => "ferry::trigger_for_stream",
            Code::UnknownConnection => "ferry::unknown_connection",
            Code::UnknownEvent => "ferry::unknown_event",
            Code::UnknownField => "ferry::unknown_field",
            Code::UnknownFilter => "ferry::unknown_filter",
            Code::UnknownKey => "ferry::unknown_key",
            Code::UnknownLookup => "ferry::unknown_lookup",
            Code::UnknownName => "ferry::unknown_name",
            Code::UnknownParam => "ferry::unknown_param",
            Code::UnknownReference => "ferry::unknown_reference",
            Code::UnknownSetting => "ferry::unknown_setting",
            Code::UnknownSink => "ferry::unknown_sink",
            Code::UnknownStream => "ferry::unknown_stream",
            Code::UnknownValue => "ferry::unknown_value",
            Code::Unreadable => "ferry::unreadable",
            Code::WrongAuthOption => "ferry::wrong_auth_option",
            Code::WrongAuthType => "ferry::wrong_auth_type",
            Code::WrongConnectionKind => "ferry::wrong_connection_kind",
            Code::WrongKindOption => "ferry::wrong_kind_option",
            Code::WrongType => "ferry::wrong_type",
            Code::YamlSyntax => "ferry::yaml_syntax",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as shown to the user (relative to where ferry was pointed at).
    pub display: String,
    pub path: PathBuf,
    pub text: Arc<str>,
    /// The text as diagnostics quote it: secrets written inline replaced by `*`, byte for
    /// byte, so offsets into `text` hold in it.
    pub shown: Arc<str>,
}

impl SourceFile {
    pub fn new(path: &Path, display: String, text: String) -> Self {
        let shown = mask_secrets(&text);
        SourceFile {
            display,
            path: path.to_path_buf(),
            text: text.into(),
            shown: shown.into(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    /// Byte offset of a 1-based line and column (in characters).
    pub fn offset_of(&self, line: usize, column: usize) -> usize {
        let mut start = 0;
        for _ in 1..line.max(1) {
            match self.text[start..].find('\n') {
                Some(i) => start += i + 1,
                None => return self.text.len(),
            }
        }
        let line_text = self.line_text_at(start);
        let mut off = start;
        for (n, ch) in line_text.chars().enumerate() {
            if n + 1 >= column {
                break;
            }
            off += ch.len_utf8();
        }
        off
    }

    fn line_text_at(&self, start: usize) -> &str {
        let rest = &self.text[start..];
        &rest[..rest.find('\n').unwrap_or(rest.len())]
    }

    /// The text of a 1-based line, without its newline.
    pub fn line(&self, line: usize) -> &str {
        self.text
            .split('\n')
            .nth(line.saturating_sub(1))
            .unwrap_or("")
    }
}

/// Keys whose values are secrets wherever they appear in ferry's files.
pub const SECRET_KEYS: &[&str] = &[
    "client_secret",
    "private_key",
    "refresh_token",
    "webhook_secret",
    "api_token",
    "password",
    "secret",
    "token",
    "access_token",
];

/// `text` with the value of every secret key written inline replaced by `*` (one per byte,
/// so every offset stays valid): block (`key: value`, `key: |` and the lines under it) and
/// flow (`{ key: value, ... }`) mappings alike. References (`${ENV}`, `${file:...}`) are
/// kept: they name where a secret is, not the secret.
pub fn mask_secrets(text: &str) -> String {
    let mut out = text.as_bytes().to_vec();
    let mut offset = 0;
    // Indentation of a `key: |` block whose lines are being masked.
    let mut block: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let trimmed = body.trim_start();
        let indent = body.len() - trimmed.len();
        if let Some(parent) = block {
            if trimmed.is_empty() || indent > parent {
                mask(&mut out, offset + indent, offset + body.len());
                offset += line.len();
                continue;
            }
            block = None;
        }
        for (start, end, is_block) in secret_values(body) {
            if is_block {
                block = Some(indent);
            } else {
                mask(&mut out, offset + start, offset + end);
            }
        }
        offset += line.len();
    }
    // Only ASCII `*` replaced whole UTF-8 sequences, so the bytes are still UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| text.to_string())
}

fn mask(out: &mut [u8], start: usize, end: usize) {
    for b in out.iter_mut().take(end).skip(start) {
        *b = b'*';
    }
}

/// Byte ranges of the secret values on one line, and whether a value is a block scalar
/// (`|`, `>`) that continues on the lines below.
fn secret_values(line: &str) -> Vec<(usize, usize, bool)> {
    let mut found = Vec::new();
    let bytes = line.as_bytes();
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(i) = line[from..].find(key) {
            let at = from + i;
            from = at + key.len();
            let before_ok =
                at == 0 || matches!(bytes[at - 1], b' ' | b'{' | b',' | b'-' | b'"' | b'\'');
            let after = line[from..].trim_start_matches(['"', '\'']);
            let Some(value) = after.strip_prefix(':') else {
                continue;
            };
            if !before_ok {
                continue;
            }
            let value_start = line.len() - value.len();
            let lead = value.len() - value.trim_start().len();
            let start = value_start + lead;
            let flow = line[..at].contains('{');
            let rest = &line[start..];
            let mut end = start;
            let mut quote: Option<char> = None;
            for (j, c) in rest.char_indices() {
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if j == 0 && (c == '"' || c == '\'') => quote = Some(c),
                    None if flow && (c == ',' || c == '}') => break,
                    None if c == '#' && rest[..j].ends_with(' ') => break,
                    None => {}
                }
                end = start + j + c.len_utf8();
            }
            let value = line[start..end].trim_end();
            let end = start + value.len();
            let unquoted = value.trim_matches(['"', '\'']);
            if unquoted.is_empty() || unquoted.starts_with("${") {
                continue;
            }
            if matches!(unquoted.chars().next(), Some('|' | '>')) && !flow {
                found.push((start, end, true));
                continue;
            }
            found.push((start, end, false));
        }
    }
    found
}

pub(crate) fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod mask_tests {
    use super::mask_secrets;

    #[test]
    fn inline_secrets_are_masked_and_references_kept() {
        let text = "auth:\n  client_id: cid\n  client_secret: \"s3cr3t\" # note\n  refresh_token: ${TOKEN}\n\
                    x: { client_secret: abc, a: b }\n  private_key: |\n    -----BEGIN-----\n    QUJD\n  after: 1\n\
                    my_secret_name: shown\n";
        let m = mask_secrets(text);
        assert_eq!(m.len(), text.len());
        for secret in ["s3cr3t", "abc", "BEGIN", "QUJD"] {
            assert!(!m.contains(secret), "{secret} shown:\n{m}");
        }
        for kept in ["cid", "${TOKEN}", "# note", "a: b", "after: 1", "shown"] {
            assert!(m.contains(kept), "{kept} hidden:\n{m}");
        }
        assert!(m.contains("client_secret: ********"), "{m}");
        assert_eq!(m.lines().count(), text.lines().count());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in one file.
#[derive(Clone)]
pub struct Problem {
    pub severity: Severity,
    /// A stable identifier of the problem class (`ferry::unknown_key`).
    pub code: Code,
    pub message: String,
    /// The file as shown to the user.
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Byte range of the offending text in the file.
    pub offset: usize,
    pub len: usize,
    pub label: Option<String>,
    pub help: Option<String>,
    source: Option<NamedSource<Arc<str>>>,
}

impl fmt::Debug for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {:?} [{}] {}",
            self.file, self.line, self.column, self.severity, self.code, self.message
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.source.as_ref()?;
        Some(Box::new(std::iter::once(
            LabeledSpan::new_primary_with_span(self.label.clone(), (self.offset, self.len)),
        )))
    }
}

impl Problem {
    /// A problem at a byte range of a file.
    pub fn at(
        file: &SourceFile,
        code: Code,
        offset: usize,
        len: usize,
        message: impl Into<String>,
    ) -> Problem {
        let offset = floor_char_boundary(&file.text, offset.min(file.text.len()));
        let len = len.min(file.text.len() - offset);
        let (line, column) = file.line_col(offset);
        Problem {
            severity: Severity::Error,
            code,
            message: message.into(),
            file: file.display.clone(),
            line,
            column,
            offset,
            len,
            label: None,
            help: None,
            source: Some(NamedSource::new(file.display.clone(), file.shown.clone())),
        }
    }

    /// A problem at a node's position; the caret covers the node's first line.
    pub fn at_pos(file: &SourceFile, code: Code, pos: Pos, message: impl Into<String>) -> Problem {
        let offset = if pos.is_known() {
            file.offset_of(pos.line, pos.column)
        } else {
            0
        };
        let rest = &file.text[offset.min(file.text.len())..];
        let line_len = rest.find('\n').unwrap_or(rest.len());
        let len = if pos.len > 0 {
            pos.len.min(line_len)
        } else {
            line_len
        };
        Problem::at(file, code, offset, len, message)
    }

    /// A problem with no position in any file (a file that cannot be read).
    pub fn without_source(file: &str, code: Code, message: impl Into<String>) -> Problem {
        Problem {
            severity: Severity::Error,
            code,
            message: message.into(),
            file: file.to_string(),
            line: 0,
            column: 0,
            offset: 0,
            len: 0,
            label: None,
            help: None,
            source: None,
        }
    }

    pub fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// `file:line:column: message`, for one-line logs.
    pub fn short(&self) -> String {
        format!(
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }

    /// Renders this problem as miette's graphical report, without colour.
    pub fn render(&self) -> String {
        self.render_with(false)
    }

    /// Renders this problem as miette's graphical report; colour for terminals.
    pub fn render_with(&self, color: bool) -> String {
        let mut out = String::new();
        let theme = if color {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        let handler = miette::GraphicalReportHandler::new_themed(theme)
            .with_links(false)
            .with_width(100);
        if handler.render_report(&mut out, self).is_err() {
            out = self.short();
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "offset": self.offset,
            "length": self.len,
            "label": self.label,
            "help": self.help,
        })
    }
}

/// Every problem found in a project, errors and warnings, sorted by file and position.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    pub problems: Vec<Problem>,
}

impl Diagnostics {
    pub fn push(&mut self, p: Problem) {
        self.problems.push(p);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.problems.extend(other.problems);
    }

    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(Problem::is_error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.is_error())
    }

    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// Sorts by file, then position, and drops exact duplicates.
    pub fn sort(&mut self) {
        self.problems.sort_by(|a, b| {
            (&a.file, a.line, a.column, a.severity, &a.message)
                .cmp(&(&b.file, b.line, b.column, b.severity, &b.message))
        });
        self.problems.dedup_by(|a, b| {
            a.file == b.file && a.line == b.line && a.column == b.column && a.message == b.message
        });
    }

    /// All problems rendered one after another, then a count; no colour.
    pub fn render(&self) -> String {
        self.render_with(false)
    }

    pub fn render_with(&self, color: bool) -> String {
        let mut out = String::new();
        for p in &self.problems {
            out.push_str(&p.render_with(color));
            out.push('\n');
        }
        let errors = self.errors().count();
        let warnings = self.warnings().count();
        if errors > 0 || warnings > 0 {
            out.push_str(&format!(
                "{} {}, {} {}\n",
                errors,
                if errors == 1 { "error" } else { "errors" },
                warnings,
                if warnings == 1 { "warning" } else { "warnings" }
            ));
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(self.problems.iter().map(Problem::to_json).collect())
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors: Vec<_> = self.errors().collect();
        match errors.as_slice() {
            [] => write!(f, "no errors"),
            [one] => write!(f, "{}", one.short()),
            [first, rest @ ..] => write!(f, "{} (and {} more)", first.short(), rest.len()),
        }
    }
}

impl std::error::Error for Diagnostics {}

/// "did you mean `x`?" for a misspelt name among candidates.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        if c == name {
            continue;
        }
        let score = strsim::jaro_winkler(&name.to_ascii_lowercase(), &c.to_ascii_lowercase());
        if score >= 0.8 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, c));
        }
    }
    best.map(|(_, c)| format!("did you mean `{c}`?"))
}
