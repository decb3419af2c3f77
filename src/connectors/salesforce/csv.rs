//! The CSV dialect Bulk API 2.0 speaks: comma-separated, LF line endings, fields quoted
//! with `"` and quotes doubled. Small enough to keep in-crate.

/// Writes one row, quoting every field that needs it.
pub fn write_row(out: &mut String, fields: &[&str]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\n', '\r']) || f.starts_with(' ') || f.ends_with(' ') {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push('\n');
}

/// Parses a whole CSV document into rows of fields.
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => in_quotes = true,
            ',' => row.push(std::mem::take(&mut field)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                any = false;
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quoted field".into());
    }
    if any {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_quotes_commas_and_newlines() {
        let mut s = String::new();
        write_row(&mut s, &["a", "b,c", "say \"hi\"", "two\nlines", ""]);
        write_row(&mut s, &["x", "", "", "", "#N/A"]);
        let rows = parse(&s).unwrap();
        assert_eq!(rows[0], vec!["a", "b,c", "say \"hi\"", "two\nlines", ""]);
        assert_eq!(rows[1], vec!["x", "", "", "", "#N/A"]);
        assert_eq!(rows.len(), 2);
    }
}
