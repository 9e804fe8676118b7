//! Sanitising provider text before a claw or a log sees it.
//!
//! Some providers quote the key, or part of it, in their error messages. The
//! text is matched on its skeleton: its characters without whitespace,
//! control and invisible formatting characters, so a key spread out with
//! spaces, zero-width characters or control bytes is still found. Every run
//! of the skeleton that shares eight or more consecutive characters with the
//! key is replaced by `[redacted]` in the output.

use std::collections::HashSet;

use crate::vault::ProviderSecret;

/// Longest provider error text passed on, in characters.
pub const MAX_ERROR_TEXT: usize = 300;

/// Consecutive characters of the key that count as a leak.
const WINDOW: usize = 8;

/// Characters left out of the output and of the skeleton: control
/// characters, and the invisible formatting characters that can hide
/// between a key's characters.
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{00ad}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
}

/// Replaces every verbatim occurrence of the key in a successful reply: a
/// provider (or a base URL pointing elsewhere) that echoes the key must not
/// hand it to the guest or to the ledger. Unlike [`sanitise`] this keeps
/// the text otherwise intact.
pub fn scrub(text: &mut String, secret: &ProviderSecret) {
    let key = secret.expose();
    if !key.is_empty() && text.contains(key) {
        *text = text.replace(key, "[redacted]");
    }
}

/// [`scrub`] for text that arrives in pieces: a key split across two
/// deltas is still caught, because the last `key length - 1` bytes are held
/// back until more text (or the end) shows they do not start a key.
#[derive(Debug, Default)]
pub struct StreamScrubber {
    pending: String,
}

impl StreamScrubber {
    /// Adds `delta` and returns the text that can be released.
    pub fn push(&mut self, delta: &str, secret: &ProviderSecret) -> String {
        self.pending.push_str(delta);
        scrub(&mut self.pending, secret);
        let keep = secret.expose().len().saturating_sub(1);
        if self.pending.len() <= keep {
            return String::new();
        }
        let mut cut = self.pending.len() - keep;
        while !self.pending.is_char_boundary(cut) {
            cut -= 1;
        }
        let held = self.pending.split_off(cut);
        std::mem::replace(&mut self.pending, held)
    }

    /// The text still held back, at the end of the stream.
    pub fn flush(&mut self, secret: &ProviderSecret) -> String {
        scrub(&mut self.pending, secret);
        std::mem::take(&mut self.pending)
    }
}

/// Makes provider text safe to hand to a claw or a log: key material
/// redacted, invisible characters dropped, length bounded.
pub fn sanitise(text: &str, secret: &ProviderSecret) -> String {
    // Matching ignores case: some providers print the key upper-cased.
    let key: Vec<char> = secret
        .expose()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let visible: Vec<char> = text.chars().filter(|&c| !invisible(c)).collect();
    // Positions (in `visible`) of the skeleton's characters.
    let skeleton: Vec<usize> = (0..visible.len())
        .filter(|&i| !visible[i].is_whitespace())
        .collect();
    let mut redacted = vec![false; visible.len()];
    let window = WINDOW.min(key.len());
    if window > 0 {
        let windows: HashSet<&[char]> = key.windows(window).collect();
        let chars: Vec<char> = skeleton
            .iter()
            .map(|&i| visible[i].to_ascii_lowercase())
            .collect();
        for start in 0..chars.len().saturating_sub(window - 1) {
            if windows.contains(&chars[start..start + window]) {
                let (from, to) = (skeleton[start], skeleton[start + window - 1]);
                redacted[from..=to].iter_mut().for_each(|r| *r = true);
            }
        }
    }
    let mut out = String::new();
    let mut in_run = false;
    for (c, hidden) in visible.iter().zip(&redacted) {
        match (*hidden, in_run) {
            (true, false) => out.push_str("[redacted]"),
            (true, true) => {}
            (false, _) => out.push(*c),
        }
        in_run = *hidden;
    }
    if out.chars().count() > MAX_ERROR_TEXT {
        out = out.chars().take(MAX_ERROR_TEXT).collect::<String>() + "…";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX";

    fn clean(text: &str) -> String {
        sanitise(text, &ProviderSecret::new(KEY.into()))
    }

    #[test]
    fn whole_and_partial_keys_are_redacted() {
        let out = clean(
            "Incorrect API key provided: sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX. Also ***MNOPQRSTUV***",
        );
        assert_eq!(
            out,
            "Incorrect API key provided: [redacted]. Also ***[redacted]***"
        );
    }

    #[test]
    fn keys_spread_out_with_invisible_or_blank_characters_are_redacted() {
        let spread = |sep: &str| {
            KEY.chars()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(sep)
        };
        for sep in ["\u{1}", "\u{200b}", " ", "\u{feff}", "\t"] {
            let out = clean(&format!("bad key: {}", spread(sep)));
            assert!(
                !out.contains("ABCD") && !out.contains("A B C"),
                "{sep:?}: {out}"
            );
            assert!(out.starts_with("bad key: [redacted]"), "{sep:?}: {out}");
        }
    }

    #[test]
    fn ordinary_text_is_kept_and_control_characters_dropped() {
        assert_eq!(
            clean("rate limit reached for gpt-4o"),
            "rate limit reached for gpt-4o"
        );
        assert_eq!(clean("a\u{1b}[31mred"), "a[31mred");
        let long = clean(&"x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_ERROR_TEXT + 1);
    }

    #[test]
    fn case_does_not_hide_a_key() {
        let out = clean(&format!("KEY {}", KEY.to_uppercase()));
        assert_eq!(out, "KEY [redacted]");
    }

    #[test]
    fn a_key_split_across_stream_deltas_is_scrubbed() {
        let secret = ProviderSecret::new(KEY.into());
        let text = format!("before {KEY} middle {KEY} é after");
        for size in 1..=text.len() {
            let mut scrubber = StreamScrubber::default();
            let mut out = String::new();
            let mut rest = text.as_str();
            while !rest.is_empty() {
                let mut cut = size.min(rest.len());
                while !rest.is_char_boundary(cut) {
                    cut += 1;
                }
                out.push_str(&scrubber.push(&rest[..cut], &secret));
                rest = &rest[cut..];
            }
            out.push_str(&scrubber.flush(&secret));
            assert_eq!(
                out, "before [redacted] middle [redacted] é after",
                "pieces of {size}"
            );
        }
    }

    #[test]
    fn short_keys_are_matched_whole() {
        let out = sanitise(
            "the key abc123 is wrong",
            &ProviderSecret::new("abc123".into()),
        );
        assert_eq!(out, "the key [redacted] is wrong");
    }
}
