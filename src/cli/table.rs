//! Columns for people: a header, then one line per row, each column as wide as its widest cell.

use serde_json::Value;

/// The longest cell shown; longer text is cut and ends with `…`.
const MAX_CELL_CHARS: usize = 60;

/// `rows` under `headers`, columns two spaces apart, with no trailing spaces.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cells: Vec<Vec<String>> = std::iter::once(headers.iter().map(|h| h.to_string()).collect())
        .chain(
            rows.iter()
                .map(|row| row.iter().map(|cell| cut(cell)).collect()),
        )
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|column| {
            cells
                .iter()
                .map(|row| row.get(column).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect::<Vec<_>>()
            .join("  ");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One line of at most [`MAX_CELL_CHARS`] characters.
fn cut(cell: &str) -> String {
    let line = cell.lines().next().unwrap_or_default();
    if line.chars().count() > MAX_CELL_CHARS || line.len() < cell.trim_end().len() {
        let kept: String = line.chars().take(MAX_CELL_CHARS - 1).collect();
        format!("{kept}…")
    } else {
        line.to_owned()
    }
}

/// `object[key]` as a cell: text as is, `null` or missing as `-`, anything else as JSON.
pub fn cell(object: &Value, key: &str) -> String {
    match &object[key] {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_long_cells_are_cut() {
        let long = "x".repeat(100);
        let rows = vec![
            vec!["1".to_owned(), "OPEN".to_owned()],
            vec!["22".to_owned(), long],
        ];
        let table = render(&["id", "status"], &rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "id  status");
        assert_eq!(lines[1], "1   OPEN");
        assert!(lines[2].ends_with('…'));
        assert_eq!(lines[2].chars().count(), 4 + MAX_CELL_CHARS);
    }

    #[test]
    fn a_multi_line_cell_shows_its_first_line() {
        assert_eq!(cut("disk full\non db-1"), "disk full…");
        assert_eq!(cell(&serde_json::json!({"a": null}), "a"), "-");
    }
}
