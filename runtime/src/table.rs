//! Plain-text tables, as `peapod ps`, `peapod top` and the bench print them.

/// Renders rows as columns padded to their widest cell (the first row is the header), one line
/// each, without trailing blanks.
pub fn render<R: AsRef<[String]>>(rows: &[R]) -> String {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.as_ref().get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let rows = [
            vec!["NAME".to_string(), "IP".into(), "AGE".into()],
            vec!["a-long-name".into(), "10.0.0.2".into(), "5s".into()],
            vec!["b".into(), "-".into(), String::new()],
        ];
        assert_eq!(
            super::render(&rows),
            "NAME         IP        AGE\na-long-name  10.0.0.2  5s\nb            -\n"
        );
    }
}
