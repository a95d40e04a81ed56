//! Seat maps: a CSV of `section,row,seat,x,y` lines that places every seat in the scene. An
//! import is all or nothing: every bad line is reported, and nothing is imported if any is bad.

use serde::Serialize;
use utoipa::ToSchema;

use crate::text::{Rule, TextError};

/// One seat and where it is in the scene.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Seat {
    pub section: String,
    pub row: String,
    pub seat: String,
    pub x: f64,
    pub y: f64,
}

/// What is wrong with one line (1-based line number).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Most seats one map may have (a very large stadium has about 150 000).
pub const MAX_SEATS: usize = 200_000;

/// Most characters in a section, row or seat label.
pub const MAX_SEAT_PART_CHARS: usize = 32;

/// A seat's part (`field` is `section`, `row` or `seat`) as people type it: trimmed,
/// case-insensitive, 1 to [`MAX_SEAT_PART_CHARS`] characters of one line.
pub fn normalise(field: &'static str, part: &str) -> Result<String, TextError> {
    Ok(Rule::name(field, MAX_SEAT_PART_CHARS)
        .clean(part)?
        .to_uppercase())
}

/// The field separator of a seat map: `;` when its first line has more of them than commas
/// (a spreadsheet in a locale whose decimal mark is the comma writes these), else `,`.
fn separator(text: &str) -> u8 {
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let count = |c: char| first.chars().filter(|&x| x == c).count();
    if count(';') > count(',') {
        b';'
    } else {
        b','
    }
}

/// Parses a seat map (UTF-8, with or without the byte-order mark a spreadsheet's "CSV UTF-8"
/// puts first; comma- or semicolon-separated; quoted fields as RFC 4180 has them) within a
/// `width` × `height` scene. A first line naming the columns is skipped; blank lines are
/// ignored.
pub fn parse(csv_bytes: &[u8], width: f64, height: f64) -> Result<Vec<Seat>, Vec<LineError>> {
    let Ok(text) = std::str::from_utf8(csv_bytes) else {
        return Err(vec![LineError {
            line: 0,
            message: "the seat map is not UTF-8 text (save it as CSV UTF-8)".into(),
        }]);
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let delimiter = separator(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(text.as_bytes());
    let mut seats = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::HashMap::new();
    let mut first = true;
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                errors.push(LineError {
                    line,
                    message: "this line cannot be read as CSV".into(),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line() as usize);
        let f: Vec<&str> = record.iter().collect();
        if f.iter().all(|v| v.trim().is_empty()) {
            continue;
        }
        let is_first = std::mem::take(&mut first);
        let mut err = |message: String| errors.push(LineError { line, message });
        if is_first
            && f.first()
                .is_some_and(|h| h.trim().eq_ignore_ascii_case("section"))
        {
            continue;
        }
        if record.iter().any(|v| v.contains('\n')) {
            err("a quote opened on this line is never closed".into());
            continue;
        }
        if f.len() != 5 {
            err(format!(
                "expected 5 fields (section,row,seat,x,y), found {}",
                f.len()
            ));
            continue;
        }
        let parts = (
            normalise("section", f[0]),
            normalise("row", f[1]),
            normalise("seat", f[2]),
        );
        let (section, row, seat) = match parts {
            (Ok(section), Ok(row), Ok(seat)) => (section, row, seat),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                err(e.to_string());
                continue;
            }
        };
        // a decimal comma only where fields are separated by semicolons (in a comma-separated
        // file "1,234" is a thousands separator, not 1.234)
        let number = |v: &str| {
            let v = v.trim();
            if delimiter == b';' {
                v.replace(',', ".").parse::<f64>()
            } else {
                v.parse::<f64>()
            }
        };
        let (x, y) = match (number(f[3]), number(f[4])) {
            (Ok(x), Ok(y)) if x.is_finite() && y.is_finite() => (x, y),
            _ => {
                err(format!(
                    "x and y must be numbers, got '{}' and '{}'",
                    f[3].trim(),
                    f[4].trim()
                ));
                continue;
            }
        };
        if !((0.0..=width).contains(&x) && (0.0..=height).contains(&y)) {
            err(format!(
                "({x}, {y}) is outside the scene (0..{width} × 0..{height})"
            ));
            continue;
        }
        let key = (section.clone(), row.clone(), seat.clone());
        if let Some(first) = seen.insert(key, line) {
            err(format!(
                "section {section} row {row} seat {seat} is already on line {first}"
            ));
            continue;
        }
        seats.push(Seat {
            section,
            row,
            seat,
            x,
            y,
        });
    }
    if seats.len() > MAX_SEATS {
        errors.push(LineError {
            line: 0,
            message: format!("at most {MAX_SEATS} seats per map"),
        });
    }
    if errors.is_empty() {
        Ok(seats)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_header_quotes_and_blank_lines() {
        let csv = "section,row,seat,x,y\nA,1,1,0.5,0.5\n\n\"North, upper\",2,\"14\",10,20\n";
        let seats = parse(csv.as_bytes(), 100.0, 50.0).unwrap();
        assert_eq!(seats.len(), 2);
        assert_eq!(seats[1].section, "NORTH, UPPER");
        assert_eq!((seats[1].x, seats[1].y), (10.0, 20.0));
    }

    #[test]
    fn reports_every_bad_line_and_imports_nothing() {
        let csv = "A,1,1,0,0\nA,1,2,abc,0\nA,1\nA,1,1,5,5\nB,1,1,500,1\n\"A,1,1,1,1\n";
        let errors = parse(csv.as_bytes(), 100.0, 50.0).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert!(errors[2].message.contains("already on line 1"));
    }

    #[test]
    fn a_spreadsheets_csv_utf8_with_its_byte_order_mark_and_semicolons_is_read() {
        let excel =
            "\u{feff}Section;Row;Seat;X;Y\r\n\"Tribüne Nord\";1;\"12\";10,5;20\r\nA;2;3;1;2\r\n";
        let seats = parse(excel.as_bytes(), 100.0, 50.0).unwrap();
        assert_eq!(seats.len(), 2, "{seats:?}");
        assert_eq!(seats[0].section, "TRIBÜNE NORD");
        assert_eq!((seats[0].x, seats[0].y), (10.5, 20.0));
        let commas = "\u{feff}section,row,seat,x,y\r\n\"North, upper\",1,1,5,5\r\n";
        assert_eq!(
            parse(commas.as_bytes(), 100.0, 50.0).unwrap()[0].section,
            "NORTH, UPPER"
        );
        let latin1 = b"A,1,1,1,1\n\xe9,1,2,1,1\n";
        assert_eq!(parse(latin1, 100.0, 50.0).unwrap_err()[0].line, 0);
    }
}
