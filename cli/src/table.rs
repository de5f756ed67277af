//! Plain-text tables for the CLI's listings.

/// Columns padded to their widest cell, two spaces apart; columns of
/// numbers (`-` standing for none) right-aligned, the rest left-aligned.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    let mut numbers = vec![true; headers.len()];
    let mut any_number = vec![false; headers.len()];
    for row in rows {
        assert_eq!(row.len(), headers.len(), "every row has every column");
        for (column, cell) in row.iter().enumerate() {
            widths[column] = widths[column].max(cell.len());
            let number = cell.parse::<i64>().is_ok();
            numbers[column] &= number || cell == "-";
            any_number[column] |= number;
        }
    }
    let numeric: Vec<bool> = numbers
        .iter()
        .zip(&any_number)
        .map(|(a, b)| *a && *b)
        .collect();
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .zip(&numeric)
            .map(|((cell, &width), &numeric)| {
                if numeric {
                    format!("{cell:>width$}")
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["orders".to_owned(), "12".to_owned()],
            vec!["a".to_owned(), "3".to_owned()],
        ];
        assert_eq!(
            table(&["TOPIC", "PARTITIONS"], &rows),
            "TOPIC   PARTITIONS\norders          12\na                3\n"
        );
        assert_eq!(table(&["TOPIC"], &[]), "TOPIC\n");
    }
}
