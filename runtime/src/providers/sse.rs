//! An incremental parser of server-sent events (the WHATWG `text/event-stream`
//! format), which every provider's streaming API speaks.
//!
//! Bytes go in as the network delivers them, split anywhere; whole events
//! come out. Lines end in LF, CRLF or a lone CR (a CR at the end of one chunk
//! and an LF at the start of the next are one line end). Lines starting with
//! `:` are comments (providers send them as keep-alives); `id` and `retry`
//! are read and ignored; `data` lines are joined with LF; a blank line ends
//! an event. Invalid UTF-8 is replaced, never a panic. An event cut off by
//! the end of the stream, without its blank line, is not emitted: the
//! caller learns from [`SseParser::finish`] that bytes were left over.
//!
//! The parser holds at most one unfinished line and one unfinished event;
//! the caller bounds those by capping the bytes it feeds.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event` field, when one was given (providers that send none use
    /// the default type, `message`).
    pub event: Option<String>,
    /// The `data` lines, joined with LF.
    pub data: String,
}

/// The parser's state between chunks.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    /// The last byte fed was a CR, so an LF starting the next chunk belongs
    /// to the same line end.
    after_cr: bool,
    /// The stream's first line, whose byte-order mark is dropped, is still
    /// to come.
    at_start: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self {
            at_start: true,
            ..Self::default()
        }
    }

    /// Feeds the next bytes of the stream and returns the events they
    /// complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_ended(&line) {
                        events.push(event);
                    }
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
        events
    }

    /// Whether the stream stopped in the middle of an event: bytes of an
    /// unfinished line or event were fed but never dispatched.
    pub fn finish(&self) -> bool {
        !self.line.is_empty() || self.data.is_some() || self.event.is_some()
    }

    fn line_ended(&mut self, raw: &[u8]) -> Option<SseEvent> {
        let mut line = raw;
        if std::mem::take(&mut self.at_start) {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            // An event with no data lines is not dispatched (the standard's
            // rule), whatever fields it had.
            return data.map(|data| SseEvent { event, data });
        }
        if line[0] == b':' {
            return None;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            b"event" => self.event = Some(value.into_owned()),
            // `id` and `retry` matter to browsers reconnecting, not to a
            // client that never resumes a model's stream; unknown fields are
            // ignored as the standard says.
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        chunks.iter().flat_map(|c| p.feed(c)).collect()
    }

    fn data(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(Into::into),
            data: data.into(),
        }
    }

    #[test]
    fn events_with_types_and_multiline_data() {
        let events =
            parse_all(&[b"event: message_start\ndata: {\"a\":1}\n\ndata: one\ndata: two\n\n"]);
        assert_eq!(
            events,
            vec![
                data(Some("message_start"), "{\"a\":1}"),
                data(None, "one\ntwo")
            ]
        );
    }

    #[test]
    fn every_line_ending_and_every_split_gives_the_same_events() {
        let lf = b"event: ping\ndata: {}\n\n: keep-alive\ndata: x\n\ndata: [DONE]\n\n";
        let expected = vec![
            data(Some("ping"), "{}"),
            data(None, "x"),
            data(None, "[DONE]"),
        ];
        let crlf: Vec<u8> = String::from_utf8_lossy(lf)
            .replace('\n', "\r\n")
            .into_bytes();
        let cr: Vec<u8> = String::from_utf8_lossy(lf).replace('\n', "\r").into_bytes();
        for text in [lf.to_vec(), crlf, cr] {
            for split in 0..=text.len() {
                let (a, b) = text.split_at(split);
                assert_eq!(parse_all(&[a, b]), expected, "split at {split}");
            }
            let bytes: Vec<&[u8]> = text.chunks(1).collect();
            assert_eq!(parse_all(&bytes), expected);
        }
    }

    #[test]
    fn comments_bom_and_fields_without_space_or_value() {
        let events =
            parse_all(&[b"\xEF\xBB\xBF:hello\ndata:tight\nid: 7\nretry: 10\nfoo\n\ndata\n\n"]);
        assert_eq!(events, vec![data(None, "tight"), data(None, "")]);
    }

    #[test]
    fn a_truncated_event_is_not_emitted_and_is_reported() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: {\"partial\":").is_empty());
        assert!(p.finish());
        let mut p = SseParser::new();
        assert_eq!(p.feed(b"data: 1\n\n").len(), 1);
        assert!(!p.finish());
        // Data lines without the blank line that ends the event.
        assert!(p.feed(b"data: 2\n").is_empty());
        assert!(p.finish());
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let events = parse_all(&[b"data: \xff\xfe ok\n\n"]);
        assert_eq!(events, vec![data(None, "\u{fffd}\u{fffd} ok")]);
    }

    mod never_panics {
        use super::super::SseParser;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any bytes, cut into any chunks, parse without panicking, and
            /// the events do not depend on where the cuts fell.
            #[test]
            fn on_any_bytes_and_any_chunking(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
            ) {
                let mut whole = SseParser::new();
                let expected = whole.feed(&bytes);
                let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
                at.sort_unstable();
                let mut p = SseParser::new();
                let mut got = Vec::new();
                let mut from = 0;
                for to in at.into_iter().chain([bytes.len()]) {
                    got.extend(p.feed(&bytes[from..to]));
                    from = to;
                }
                prop_assert_eq!(got, expected);
                prop_assert_eq!(p.finish(), whole.finish());
            }

            /// Streams built from SSE-looking pieces, the likeliest shapes
            /// of a broken provider stream.
            #[test]
            fn on_sse_shaped_garbage(
                pieces in proptest::collection::vec(
                    prop_oneof![
                        Just(&b"data: "[..]), Just(&b"event: "[..]), Just(&b"\r\n"[..]),
                        Just(&b"\n"[..]), Just(&b"\r"[..]), Just(&b":"[..]),
                        Just(&b"[DONE]"[..]), Just(&b"{\"choices\":["[..]), Just(&b"\xEF\xBB\xBF"[..]),
                        Just(&b"\xff"[..]),
                    ],
                    0..64,
                ),
            ) {
                let bytes: Vec<u8> = pieces.concat();
                let mut p = SseParser::new();
                for chunk in bytes.chunks(3) {
                    for e in p.feed(chunk) {
                        prop_assert!(!e.data.contains('\r'));
                    }
                }
                let _ = p.finish();
            }
        }
    }
}
