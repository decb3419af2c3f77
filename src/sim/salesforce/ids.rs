//! Salesforce record ids: a 3-character key prefix, an org-unique body, and the 3-character
//! checksum that makes the 18-character form safe for case-insensitive systems.

const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The 3-character checksum for a 15-character id: one character per 5-character chunk,
/// whose bits say which positions hold an uppercase letter.
pub fn checksum(id15: &str) -> String {
    let bytes = id15.as_bytes();
    let mut out = String::with_capacity(3);
    for chunk in 0..3 {
        let mut bits = 0usize;
        for i in 0..5 {
            if let Some(c) = bytes.get(chunk * 5 + i)
                && c.is_ascii_uppercase()
            {
                bits |= 1 << i;
            }
        }
        out.push(SUFFIX_ALPHABET[bits] as char);
    }
    out
}

/// The 18-character form of a 15- or 18-character id.
pub fn to18(id: &str) -> String {
    if id.len() == 15 {
        format!("{id}{}", checksum(id))
    } else {
        id.to_string()
    }
}

/// Whether two ids name the same record (15- and 18-character forms compare equal; the
/// first 15 characters are case-sensitive).
pub fn same_id(a: &str, b: &str) -> bool {
    let a15 = a.get(..15).unwrap_or(a);
    let b15 = b.get(..15).unwrap_or(b);
    (a.len() == 15 || a.len() == 18) && (b.len() == 15 || b.len() == 18) && a15 == b15
}

/// Builds the 18-character id of the `n`th record with this key prefix. The pod and
/// reserved characters ("Ak" + "0") mimic what real orgs hand out.
pub fn make_id(prefix: &str, n: u64) -> String {
    let mut body = [b'0'; 9];
    let mut v = n;
    for slot in body.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    let id15 = format!("{prefix}Ak0{}", String::from_utf8_lossy(&body));
    to18(&id15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_documented_example() {
        assert_eq!(to18("001D000000IqhSL"), "001D000000IqhSLIAZ");
    }

    #[test]
    fn made_ids_are_18_chars_with_prefix() {
        let id = make_id("00U", 12345);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("00U"));
        assert!(same_id(&id, &id[..15]));
        assert!(!same_id(&id, &make_id("00U", 12346)));
    }
}
