//! Tables and JSON for the terminal.

use crate::api::views::{ClawView, KeyView, LimitView};

/// A plain text table with left-aligned columns.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            rows: vec![headers.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row. Control characters in cells (names and labels can come
    /// from a guest) are shown escaped, never sent to the terminal.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| printable(c)).collect());
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        let columns = self.rows[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| format!("{cell:<width$}", width = widths[c]))
                .collect();
            println!("{}", line.join("  ").trim_end());
        }
    }
}

/// `text` with control characters escaped (`\u{1b}`), so that text from a
/// guest or a provider cannot drive the terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Prints pretty JSON to stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub use crate::api::views::time;

/// An estimated cost in millionths of the price table's currency (USD
/// unless the operator's table says otherwise), or `-` when unpriced.
pub fn cost(micros: Option<i64>) -> String {
    micros.map_or_else(|| "-".into(), |m| format!("${:.6}", m as f64 / 1e6))
}

/// The key table.
pub fn keys_table(rows: &[KeyView]) -> Table {
    let mut table = Table::new(&[
        "NAME",
        "PROVIDER",
        "HINT",
        "FINGERPRINT",
        "VERSION",
        "STATE",
        "CREATED",
        "ROTATED",
        "REVOKED",
    ]);
    for k in rows {
        table.row(vec![
            k.name.clone(),
            k.provider.clone(),
            k.hint.clone(),
            k.fingerprint.clone(),
            k.version.to_string(),
            k.state.clone(),
            k.created_at.clone(),
            k.rotated_at.clone().unwrap_or_else(|| "-".into()),
            k.revoked_at.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table
}

/// The claw table.
pub fn claws_table(rows: &[ClawView]) -> Table {
    let mut table = Table::new(&[
        "NAME", "KEY", "MODEL", "SIZE", "DIGEST", "UPDATED", "LIMITS",
    ]);
    for c in rows {
        table.row(vec![
            c.name.clone(),
            c.key.clone().unwrap_or_else(|| "-".into()),
            c.model.clone().unwrap_or_else(|| "-".into()),
            c.size.to_string(),
            c.digest[..16.min(c.digest.len())].to_owned(),
            c.updated_at.clone(),
            overrides_summary(&c.limits),
        ]);
    }
    table
}

/// The limits a claw sets itself, as `name=value,...`, or `default`.
fn overrides_summary(limits: &[LimitView]) -> String {
    let set: Vec<String> = limits
        .iter()
        .filter(|l| l.from == "claw")
        .map(|l| format!("{}={}", l.name, l.value))
        .collect();
    if set.is_empty() {
        "default".into()
    } else {
        set.join(",")
    }
}

/// A claw's run limits: each value and where it comes from.
pub fn limits_table(limits: &[LimitView]) -> Table {
    let mut table = Table::new(&["LIMIT", "VALUE", "FROM"]);
    for l in limits {
        table.row(vec![l.name.clone(), l.value.to_string(), l.from.clone()]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_for_the_terminal() {
        assert_eq!(printable("\u{1b}[2Jowned\u{7}"), "\\u{1b}[2Jowned\\u{7}");
        assert_eq!(printable("plain text\nline two"), "plain text\nline two");
    }
}
