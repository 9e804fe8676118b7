//! Prometheus metrics, named after the OpenTelemetry GenAI client metrics.
//!
//! - `gen_ai_client_token_usage` (histogram, tokens per call), labelled
//!   `gen_ai_provider_name`, `gen_ai_request_model`, `gen_ai_agent_name`
//!   (the claw) and `gen_ai_token_type` (`input` or `output`);
//! - `gen_ai_client_operation_duration_seconds` (histogram, time spent on
//!   the provider), with the same labels but the token type, plus
//!   `error_type` for calls that failed.
//!
//! They are computed from the ledger at each scrape, so they count the calls
//! of every process sharing the data directory, and survive restarts. Bucket
//! bounds are the ones the GenAI conventions recommend.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::db::MetricSample;

const TOKEN_BOUNDS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];
const DURATION_BOUNDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len()];
        }
        for (bucket, bound) in self.buckets.iter_mut().zip(bounds) {
            if value <= *bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        for (bucket, bound) in self.buckets.iter().zip(bounds) {
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {bucket}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

/// A label value in the exposition format's escaping.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics of `samples` (one per provider call) in the Prometheus text
/// format.
pub fn render(samples: &[MetricSample]) -> String {
    let mut tokens: BTreeMap<String, Histogram> = BTreeMap::new();
    let mut durations: BTreeMap<String, Histogram> = BTreeMap::new();
    for s in samples {
        let base = format!(
            "gen_ai_provider_name=\"{}\",gen_ai_request_model=\"{}\",gen_ai_agent_name=\"{}\"",
            label(&s.provider),
            label(&s.model),
            label(&s.claw)
        );
        if s.source != "none" {
            for (kind, value) in [("input", s.input_tokens), ("output", s.output_tokens)] {
                tokens
                    .entry(format!("{base},gen_ai_token_type=\"{kind}\""))
                    .or_default()
                    .observe(&TOKEN_BOUNDS, value as f64);
            }
        }
        let labels = if s.outcome == "ok" {
            base
        } else {
            format!("{base},error_type=\"{}\"", label(&s.outcome))
        };
        durations
            .entry(labels)
            .or_default()
            .observe(&DURATION_BOUNDS, s.latency_ms as f64 / 1000.0);
    }
    let mut out = String::new();
    out.push_str("# HELP gen_ai_client_token_usage Tokens used per model call (input includes cache, output includes reasoning).\n");
    out.push_str("# TYPE gen_ai_client_token_usage histogram\n");
    for (labels, h) in &tokens {
        h.write(&mut out, "gen_ai_client_token_usage", labels, &TOKEN_BOUNDS);
    }
    out.push_str("# HELP gen_ai_client_operation_duration_seconds Time spent on the provider per model call.\n");
    out.push_str("# TYPE gen_ai_client_operation_duration_seconds histogram\n");
    for (labels, h) in &durations {
        h.write(
            &mut out,
            "gen_ai_client_operation_duration_seconds",
            labels,
            &DURATION_BOUNDS,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labelled() {
        let sample = |input, output, latency_ms, outcome: &str| MetricSample {
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            claw: "hello".into(),
            input_tokens: input,
            output_tokens: output,
            latency_ms,
            outcome: outcome.into(),
            source: if outcome == "ok" {
                "reported".into()
            } else {
                "none".into()
            },
        };
        let text = render(&[
            sample(10, 3, 5, "ok"),
            sample(100, 30, 300, "ok"),
            sample(0, 0, 50, "server_error"),
        ]);
        let input = "gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o-mini\",gen_ai_agent_name=\"hello\",gen_ai_token_type=\"input\"";
        assert!(
            text.contains(&format!(
                "gen_ai_client_token_usage_bucket{{{input},le=\"16\"}} 1\n"
            )),
            "{text}"
        );
        assert!(text.contains(&format!(
            "gen_ai_client_token_usage_bucket{{{input},le=\"256\"}} 2\n"
        )));
        assert!(text.contains(&format!("gen_ai_client_token_usage_sum{{{input}}} 110\n")));
        assert!(text.contains(&format!("gen_ai_client_token_usage_count{{{input}}} 2\n")));
        assert!(text.contains("error_type=\"server_error\",le=\"0.08\"} 1\n"));
        assert!(text.contains("# TYPE gen_ai_client_operation_duration_seconds histogram"));
    }
}
