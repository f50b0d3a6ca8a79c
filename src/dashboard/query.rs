//! Lenient parsing of query strings and `application/x-www-form-urlencoded`
//! bodies: malformed input gives missing or odd values, never an error page
//! from the framework and never a panic.

/// The decoded `name=value` pairs of a query string or form body.
pub fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut it = p.splitn(2, |b| *b == b'=');
            let name = decode(it.next().unwrap_or_default());
            let value = decode(it.next().unwrap_or_default());
            (name, value)
        })
        .collect()
}

/// The first value of `name`.
pub fn get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Every value of `name`, in order.
pub fn all(pairs: &[(String, String)], name: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// A query string's pairs (`None`: no query).
pub fn of(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|r| pairs(r.as_bytes())).unwrap_or_default()
}

/// `+` as space and `%XX` decoded; a bad escape stays as written; invalid
/// UTF-8 is replaced.
fn decode(text: &[u8]) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_leniently() {
        let p = pairs(b"a=1+2&id=x%3Ay&id=z&bad=%zz%&&=v&flag");
        assert_eq!(get(&p, "a"), Some("1 2"));
        assert_eq!(all(&p, "id"), vec!["x:y", "z"]);
        assert_eq!(get(&p, "bad"), Some("%zz%"));
        assert_eq!(get(&p, "flag"), Some(""));
        assert_eq!(get(&p, "nope"), None);
        assert_eq!(pairs(b"%FF=%C3").len(), 1);
    }
}
