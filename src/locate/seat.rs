//! Seat maps: a CSV of `section,row,seat,x,y` lines that places every seat in the scene. An
//! import is all or nothing: every bad line is reported, and nothing is imported if any is bad.

use serde::Serialize;
use utoipa::ToSchema;

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

/// A seat's parts as people type them: trimmed, case-insensitive.
pub fn normalise(part: &str) -> String {
    part.trim().to_uppercase()
}

/// Splits one CSV line into fields ("quoted, fields" and "" escapes supported).
fn fields(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (',', false) => out.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    if quoted {
        return Err("an opening quote is never closed");
    }
    out.push(field);
    Ok(out)
}

/// Parses a seat map within a `width` × `height` scene. A first line naming the columns is
/// skipped; blank lines are ignored.
pub fn parse(csv: &str, width: f64, height: f64) -> Result<Vec<Seat>, Vec<LineError>> {
    let mut seats = Vec::new();
    let mut errors = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (i, raw) in csv.lines().enumerate() {
        let line = i + 1;
        let text = raw.trim();
        if text.is_empty() {
            continue;
        }
        let mut err = |message: String| errors.push(LineError { line, message });
        let f = match fields(text) {
            Ok(f) => f,
            Err(e) => {
                err(e.into());
                continue;
            }
        };
        if line == 1
            && f.first()
                .is_some_and(|h| h.trim().eq_ignore_ascii_case("section"))
        {
            continue;
        }
        if f.len() != 5 {
            err(format!(
                "expected 5 fields (section,row,seat,x,y), found {}",
                f.len()
            ));
            continue;
        }
        let (section, row, seat) = (normalise(&f[0]), normalise(&f[1]), normalise(&f[2]));
        if section.is_empty() || row.is_empty() || seat.is_empty() {
            err("section, row and seat must not be empty".into());
            continue;
        }
        let (x, y) = match (f[3].trim().parse::<f64>(), f[4].trim().parse::<f64>()) {
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
        let seats = parse(csv, 100.0, 50.0).unwrap();
        assert_eq!(seats.len(), 2);
        assert_eq!(seats[1].section, "NORTH, UPPER");
        assert_eq!((seats[1].x, seats[1].y), (10.0, 20.0));
    }

    #[test]
    fn reports_every_bad_line_and_imports_nothing() {
        let csv = "A,1,1,0,0\nA,1,2,abc,0\nA,1\nA,1,1,5,5\nB,1,1,500,1\n\"A,1,1,1,1\n";
        let errors = parse(csv, 100.0, 50.0).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6]);
        assert!(errors[2].message.contains("already on line 1"));
    }
}
