//! The SSE parser and every provider's stream decoder on arbitrary bytes,
//! cut at an arbitrary point: nothing may panic, and the parser's events
//! must not depend on the cut.

#![no_main]

use clawrun::providers::sse::SseParser;
use clawrun::providers::{ProviderKind, ProviderStream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let at = usize::from(cut).min(bytes.len());
    let whole = SseParser::new().feed(bytes);
    let mut parser = SseParser::new();
    let mut split = parser.feed(&bytes[..at]);
    split.extend(parser.feed(&bytes[at..]));
    assert_eq!(whole, split);
    for kind in [
        ProviderKind::OpenAi,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::OpenAiCompatible,
    ] {
        let (_, partial, _) = ProviderStream::decode_all(kind, &[&bytes[..at], &bytes[at..]]);
        let _ = partial.completion();
    }
});
