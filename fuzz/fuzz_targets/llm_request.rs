//! A guest's `llm-call` request built from arbitrary bytes: checked and
//! converted without panicking, and within the value size limit.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clawrun::fuzzing::llm_request(data));
