//! Label keys and label selectors (`team=ops`, `team!=ops`, `team`, `!team`), written the way
//! kubectl writes them.

/// Whether `key` may name a label: 1 to 63 characters of letters, digits, `-`, `_`, `.`, `/`.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 63
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// What a selector asks of one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// `key=value`: the task has the label with this value.
    Equals(String, String),
    /// `key!=value`: the task has not this label with this value (or has not the label).
    NotEquals(String, String),
    /// `key`: the task has the label, whatever its value.
    Exists(String),
    /// `!key`: the task has not the label.
    Absent(String),
}

impl Selector {
    /// Parses one selector; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let selector = if let Some(key) = text.strip_prefix('!') {
            Selector::Absent(key.to_owned())
        } else if let Some((key, value)) = text.split_once("!=") {
            Selector::NotEquals(key.to_owned(), value.to_owned())
        } else if let Some((key, value)) = text.split_once('=') {
            // `key==value` is kubectl's spelling of `key=value` too.
            let value = value.strip_prefix('=').unwrap_or(value);
            Selector::Equals(key.to_owned(), value.to_owned())
        } else {
            Selector::Exists(text.to_owned())
        };
        if !valid_key(selector.key()) {
            return Err(format!(
                "label selector '{text}': the key must be 1 to 63 characters of letters, digits, '-', '_', '.' or '/' (write key=value, key!=value, key or !key)"
            ));
        }
        Ok(selector)
    }

    pub fn key(&self) -> &str {
        match self {
            Selector::Equals(key, _)
            | Selector::NotEquals(key, _)
            | Selector::Exists(key)
            | Selector::Absent(key) => key,
        }
    }

    /// The value it compares with, if any.
    pub fn value(&self) -> Option<&str> {
        match self {
            Selector::Equals(_, value) | Selector::NotEquals(_, value) => Some(value),
            Selector::Exists(_) | Selector::Absent(_) => None,
        }
    }

    /// Whether a matching task has a label row this selector names (`key=value`, `key`), as
    /// opposed to lacking one (`key!=value`, `!key`).
    pub fn wants_row(&self) -> bool {
        matches!(self, Selector::Equals(..) | Selector::Exists(_))
    }
}

#[cfg(test)]
mod tests {
    use super::Selector;

    #[test]
    fn selectors_parse_like_kubectl() {
        let cases = [
            ("team=ops", Selector::Equals("team".into(), "ops".into())),
            ("team==ops", Selector::Equals("team".into(), "ops".into())),
            ("team=", Selector::Equals("team".into(), "".into())),
            ("team=a=b", Selector::Equals("team".into(), "a=b".into())),
            (
                "team!=ops",
                Selector::NotEquals("team".into(), "ops".into()),
            ),
            ("team", Selector::Exists("team".into())),
            ("!team", Selector::Absent("team".into())),
            (
                "app.io/tier=web",
                Selector::Equals("app.io/tier".into(), "web".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Selector::parse(text).as_ref(), Ok(&want), "{text}");
        }
    }

    #[test]
    fn bad_keys_are_refused_with_the_selector_named() {
        for text in [
            "",
            "=ops",
            "!",
            "bad key=x",
            "!=x",
            "t\u{1b}=x",
            &"k".repeat(64),
        ] {
            let error = Selector::parse(text).expect_err(text);
            assert!(error.contains(&format!("'{text}'")), "{error}");
        }
    }
}
