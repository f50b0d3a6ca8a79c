//! The ACL users docs/operating.md documents, read from that file, so the
//! rules an operator copies are the rules the tests run under.

const OPERATING: &str = include_str!("../../docs/operating.md");

/// Splits shell text the way `sh` would for the docs' blocks: words,
/// single-quoted strings, backslash-newline continuations.
fn shell_words(text: &str) -> Vec<String> {
    let text = text.replace("\\\n", " ");
    let (mut words, mut word, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(word);
    }
    words
}

/// The `ACL SETUSER <user> ...` arguments docs/operating.md gives for
/// `user`, with its password placeholder replaced by `password`.
pub fn documented_rules(user: &str, password: &str) -> Vec<String> {
    let needle = format!("redis-cli ACL SETUSER {user} ");
    let start = OPERATING
        .find(&needle)
        .unwrap_or_else(|| panic!("docs/operating.md has no `{needle}`"));
    let block = &OPERATING[start..];
    let block = &block[..block.find("```").expect("the block ends")];
    let words = shell_words(block);
    assert_eq!(words[..3], ["redis-cli", "ACL", "SETUSER"]);
    words[1..]
        .iter()
        .map(|w| {
            if w.starts_with('>') {
                format!(">{password}")
            } else {
                w.clone()
            }
        })
        .collect()
}
