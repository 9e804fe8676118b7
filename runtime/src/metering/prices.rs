//! The price table: what a token costs per model, versioned.
//!
//! clawrun ships a table (`prices.json` beside this file) and an operator
//! can replace it with `prices.json` in the data directory. Each usage record
//! stores its cost estimate and the table version used, so a changed price
//! never rewrites the cost of past calls.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::providers::Usage;

/// File name of the operator's price table in the data directory.
pub const PRICES_FILE: &str = "prices.json";

const SHIPPED: &str = include_str!("prices.json");

/// Highest cost recorded for one call: a billion dollars, in micros.
const MAX_COST_MICROS: f64 = 1e15;

/// Highest price accepted, per million tokens.
pub const MAX_PRICE: f64 = 1_000_000.0;

/// Prices of one model in currency units per million tokens.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
pub struct ModelPrice {
    /// Plain (uncached) input.
    pub input: f64,
    /// Output, reasoning included.
    pub output: f64,
    /// Input read from the prompt cache.
    pub cache_read: f64,
    /// Input written to the prompt cache.
    pub cache_write: f64,
}

/// A versioned price table.
#[derive(Debug, Clone, Deserialize)]
pub struct PriceTable {
    /// Version stamped on every record priced with this table.
    pub version: String,
    /// Prices by model name; a model matches its longest entry that is a
    /// prefix of it (`gpt-4o-mini-2024-07-18` uses `gpt-4o-mini`).
    pub models: BTreeMap<String, ModelPrice>,
}

/// A price table that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("price table {path}: {reason}: fix or remove the file")]
pub struct PriceTableError {
    path: String,
    reason: String,
}

impl PriceTable {
    /// The table shipped with this build.
    pub fn shipped() -> Self {
        serde_json::from_str(SHIPPED).expect("the shipped price table is valid JSON")
    }

    /// The operator's table from `data_dir`, or the shipped one.
    ///
    /// # Errors
    ///
    /// When the operator's file exists but is not a valid table.
    pub fn load(data_dir: &Path) -> Result<Self, PriceTableError> {
        let path = data_dir.join(PRICES_FILE);
        let err = |reason: String| PriceTableError {
            path: path.display().to_string(),
            reason,
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let table: Self = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
                if table.version.trim().is_empty() {
                    return Err(err("`version` is empty".into()));
                }
                // A million dollars per million tokens is far above any real
                // price, and keeps every sum of costs in range.
                let bad = table.models.iter().find(|(_, p)| {
                    [p.input, p.output, p.cache_read, p.cache_write]
                        .iter()
                        .any(|v| !v.is_finite() || !(0.0..=MAX_PRICE).contains(v))
                });
                if let Some((model, _)) = bad {
                    return Err(err(format!(
                        "prices of `{model}` must be numbers from 0 to {MAX_PRICE}"
                    )));
                }
                Ok(table)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::shipped()),
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// The price of `model`, by longest matching prefix.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        self.models
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, price)| price)
    }

    /// The cost of `usage` on `model` in millionths of the currency unit,
    /// or `None` when the table has no price for the model.
    pub fn cost_micros(&self, model: &str, usage: &Usage) -> Option<i64> {
        let p = self.price(model)?;
        let plain = usage
            .input_tokens
            .saturating_sub(usage.cache_read_tokens)
            .saturating_sub(usage.cache_write_tokens);
        // Prices are per million tokens and the result is in millionths:
        // tokens * price is exactly the cost in micro-units.
        let micros = plain as f64 * p.input
            + usage.cache_read_tokens as f64 * p.cache_read
            + usage.cache_write_tokens as f64 * p.cache_write
            + usage.output_tokens as f64 * p.output;
        // Bounded so that sums over many records stay within an i64.
        Some(micros.round().min(MAX_COST_MICROS) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_parses_and_matches_dated_model_names() {
        let table = PriceTable::shipped();
        assert_eq!(table.version, "2026-12-01");
        assert_eq!(
            table.price("gpt-4o-mini-2024-07-18"),
            table.models.get("gpt-4o-mini")
        );
        assert_eq!(table.price("gpt-4o-2024-08-06"), table.models.get("gpt-4o"));
        assert!(table.price("unknown-model").is_none());
    }

    #[test]
    fn cost_prices_each_token_kind_apart() {
        let table = PriceTable::shipped();
        // Anthropic-style: 1,000 plain input, 2,000 cache read, 500 cache
        // write (all inside input_tokens), 300 output, on claude-sonnet-4.
        let usage = Usage {
            input_tokens: 3_500,
            output_tokens: 300,
            cache_read_tokens: 2_000,
            cache_write_tokens: 500,
            reasoning_tokens: 0,
        };
        let expected = 1_000.0 * 3.00 + 2_000.0 * 0.30 + 500.0 * 3.75 + 300.0 * 15.00;
        assert_eq!(
            table.cost_micros("claude-sonnet-4-20250514", &usage),
            Some(expected as i64)
        );
        assert_eq!(table.cost_micros("mystery", &usage), None);
    }

    #[test]
    fn an_operator_table_replaces_the_shipped_one_and_is_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            PriceTable::load(dir.path()).expect("shipped").version,
            "2026-12-01"
        );
        std::fs::write(dir.path().join(PRICES_FILE), r#"{"version":"ops-1","models":{"m":{"input":1,"output":2,"cache_read":0,"cache_write":0}}}"#)
            .expect("writes");
        let table = PriceTable::load(dir.path()).expect("loads");
        assert_eq!(table.version, "ops-1");
        assert!(table.price("gpt-4o").is_none());
        std::fs::write(dir.path().join(PRICES_FILE), r#"{"version":"x","models":{"m":{"input":-1,"output":2,"cache_read":0,"cache_write":0}}}"#)
            .expect("writes");
        assert!(
            PriceTable::load(dir.path())
                .expect_err("negative")
                .to_string()
                .contains("must be numbers from 0")
        );
        std::fs::write(dir.path().join(PRICES_FILE), "{").expect("writes");
        assert!(PriceTable::load(dir.path()).is_err());
    }
}
