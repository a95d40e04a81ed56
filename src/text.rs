//! Text a client sends, checked once at the edge by one rule per field.
//!
//! PostgreSQL refuses a NUL byte in `text` (and a request that reached it would answer 500);
//! other control characters and bidirectional overrides break the operator's pages, the
//! iCalendar feeds and the logs. Every name, description, label and query a client sends goes
//! through a [`Rule`]: trimmed, its length counted in characters, control characters refused
//! (line breaks and tabs only where the field is multi-line). A refusal is a 422 naming the
//! field, never a 500.

/// Why a text was refused; `field` names it as the API does.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct TextError {
    pub field: &'static str,
    pub problem: String,
}

/// What one field accepts.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// The field's name in the API, for the message.
    pub field: &'static str,
    /// At least this many characters after trimming (0: may be empty).
    pub min_chars: usize,
    /// At most this many characters after trimming.
    pub max_chars: usize,
    /// Whether `\n`, `\r` and `\t` are allowed (descriptions), or not (names, labels).
    pub multiline: bool,
}

impl Rule {
    /// A one-line text of 1 to `max_chars` characters (a name).
    pub const fn name(field: &'static str, max_chars: usize) -> Rule {
        Rule {
            field,
            min_chars: 1,
            max_chars,
            multiline: false,
        }
    }

    /// A one-line text of 0 to `max_chars` characters (a label, an address, a query).
    pub const fn line(field: &'static str, max_chars: usize) -> Rule {
        Rule {
            field,
            min_chars: 0,
            max_chars,
            multiline: false,
        }
    }

    /// A text of 0 to `max_chars` characters that may hold line breaks (a description).
    pub const fn prose(field: &'static str, max_chars: usize) -> Rule {
        Rule {
            field,
            min_chars: 0,
            max_chars,
            multiline: true,
        }
    }

    /// The value trimmed, or why it is refused.
    pub fn clean(&self, value: &str) -> Result<String, TextError> {
        let value = value.trim();
        let refuse = |problem: String| TextError {
            field: self.field,
            problem,
        };
        if let Some(c) = value.chars().find(|&c| !self.allows(c)) {
            return Err(refuse(format!(
                "contains the character U+{:04X}, which is not allowed",
                c as u32
            )));
        }
        let count = value.chars().count();
        if count < self.min_chars || count > self.max_chars {
            return Err(refuse(if self.min_chars == 0 {
                format!("is at most {} characters", self.max_chars)
            } else {
                format!("is {} to {} characters", self.min_chars, self.max_chars)
            }));
        }
        Ok(value.to_owned())
    }

    /// [`Rule::clean`] of a value that may be absent (absent is empty).
    pub fn clean_opt(&self, value: Option<&str>) -> Result<String, TextError> {
        self.clean(value.unwrap_or(""))
    }

    fn allows(&self, c: char) -> bool {
        if matches!(c, '\n' | '\r' | '\t') {
            return self.multiline;
        }
        // control characters (NUL included), and the bidirectional overrides and isolates
        // that make a name read differently from what it is
        !(c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAME: Rule = Rule::name("name", 5);
    const ABOUT: Rule = Rule::prose("description", 20);

    #[test]
    fn trims_and_counts_characters_not_bytes() {
        assert_eq!(NAME.clean("  ёжик ").unwrap(), "ёжик");
        assert_eq!(NAME.clean("пятьб").unwrap(), "пятьб");
        assert!(NAME.clean("шесть6").is_err());
        assert!(NAME.clean("   ").is_err(), "a name may not be blank");
        assert_eq!(Rule::line("venue", 5).clean("").unwrap(), "");
    }

    #[test]
    fn refuses_nul_and_control_characters_naming_the_field() {
        let e = NAME.clean("a\u{0}b").unwrap_err();
        assert_eq!(e.field, "name");
        assert!(e.to_string().contains("U+0000"), "{e}");
        for bad in ["a\u{7}", "a\u{1b}[31m", "a\u{7f}", "a\u{85}b", "a\u{202E}b"] {
            assert!(NAME.clean(bad).is_err(), "{bad:?}");
        }
        assert!(NAME.clean("a\nb").is_err(), "a name is one line");
    }

    #[test]
    fn prose_keeps_line_breaks_and_tabs() {
        assert_eq!(
            ABOUT.clean("one\r\ntwo\tthree").unwrap(),
            "one\r\ntwo\tthree"
        );
        assert!(ABOUT.clean("one\u{0}").is_err());
    }
}
