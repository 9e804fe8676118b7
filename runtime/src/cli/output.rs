//! Tables and JSON for the terminal.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::db::{ClawRow, KeyRow};

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

/// A timestamp as RFC 3339 (UTC, seconds).
pub fn time(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// An estimated cost in millionths of the price table's currency (USD
/// unless the operator's table says otherwise), or `-` when unpriced.
pub fn cost(micros: Option<i64>) -> String {
    micros.map_or_else(|| "-".into(), |m| format!("${:.6}", m as f64 / 1e6))
}

/// A key as listed: everything but the secret and its ciphertext.
pub fn key_json(k: &KeyRow) -> Value {
    json!({
        "name": k.name,
        "id": k.id,
        "provider": k.provider,
        "base_url": k.base_url,
        "path": k.api_path,
        "auth_header": k.auth_header,
        "auth_scheme": k.auth_scheme,
        "hint": k.hint,
        "fingerprint": k.fingerprint,
        "version": k.version,
        "state": k.state.as_str(),
        "created_at": time(k.created_at_ms),
        "rotated_at": k.rotated_at_ms.map(time),
        "revoked_at": k.revoked_at_ms.map(time),
    })
}

/// The key table.
pub fn keys_table(rows: &[KeyRow]) -> Table {
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
            k.state.as_str().into(),
            time(k.created_at_ms),
            k.rotated_at_ms.map(time).unwrap_or_else(|| "-".into()),
            k.revoked_at_ms.map(time).unwrap_or_else(|| "-".into()),
        ]);
    }
    table
}

/// A claw as listed.
pub fn claw_json(c: &ClawRow) -> Value {
    json!({
        "name": c.name,
        "id": c.id,
        "digest": c.digest,
        "size": c.size,
        "key": c.key_name,
        "model": c.model,
        "created_at": time(c.created_at_ms),
        "updated_at": time(c.updated_at_ms),
    })
}

/// The claw table.
pub fn claws_table(rows: &[ClawRow]) -> Table {
    let mut table = Table::new(&["NAME", "KEY", "MODEL", "SIZE", "DIGEST", "UPDATED"]);
    for c in rows {
        table.row(vec![
            c.name.clone(),
            c.key_name.clone().unwrap_or_else(|| "-".into()),
            c.model.clone().unwrap_or_else(|| "-".into()),
            c.size.to_string(),
            c.digest[..16.min(c.digest.len())].to_owned(),
            time(c.updated_at_ms),
        ]);
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
