//! iCalendar (RFC 5545) for the calendar's shows: a venue's or an organizer's, to subscribe to
//! from any calendar application.

use chrono::{DateTime, Utc};

use crate::store::calendar::Listing;

/// A whole `VCALENDAR` with one `VEVENT` per show.
pub fn calendar(title: &str, shows: &[Listing], now: DateTime<Utc>) -> String {
    let mut out = String::new();
    line(&mut out, "BEGIN:VCALENDAR");
    line(&mut out, "VERSION:2.0");
    line(&mut out, "PRODID:-//C3S//Show calendar//EN");
    line(&mut out, "CALSCALE:GREGORIAN");
    line(&mut out, "METHOD:PUBLISH");
    line(&mut out, &format!("X-WR-CALNAME:{}", escape(title)));
    for show in shows {
        line(&mut out, "BEGIN:VEVENT");
        line(&mut out, &format!("UID:{}@c3s", show.scene_id));
        line(&mut out, &format!("DTSTAMP:{}", stamp(now)));
        line(&mut out, &format!("DTSTART:{}", stamp(show.starts_at)));
        if let Some(end) = show.ends_at {
            line(&mut out, &format!("DTEND:{}", stamp(end)));
        }
        line(&mut out, &format!("SUMMARY:{}", escape(&show.name)));
        if !show.description.is_empty() {
            line(
                &mut out,
                &format!("DESCRIPTION:{}", escape(&show.description)),
            );
        }
        let location = if show.venue_address.is_empty() {
            show.venue_name.clone()
        } else {
            format!("{}, {}", show.venue_name, show.venue_address)
        };
        line(&mut out, &format!("LOCATION:{}", escape(&location)));
        line(&mut out, &format!("GEO:{:.6};{:.6}", show.lat, show.lon));
        if show.status == "ended" {
            line(&mut out, "STATUS:CONFIRMED");
        }
        line(&mut out, "END:VEVENT");
    }
    line(&mut out, "END:VCALENDAR");
    out
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// TEXT values: backslash, semicolon, comma and newline escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Writes a content line folded at 75 octets (continuations start with a space), ending CRLF.
fn line(out: &mut String, content: &str) {
    let mut width = 0;
    for c in content.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_long_lines_folded_on_character_boundaries() {
        assert_eq!(escape("a,b;c\\d\ne"), "a\\,b\\;c\\\\d\\ne");
        let mut out = String::new();
        let long = format!("SUMMARY:{}", "é".repeat(60));
        line(&mut out, &long);
        for l in out.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(l.len() <= 75, "{} octets", l.len());
        }
        let unfolded = out.replace("\r\n ", "");
        assert_eq!(unfolded.trim_end(), long);
    }
}
