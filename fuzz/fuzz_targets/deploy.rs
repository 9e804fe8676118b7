//! Deploy validation on arbitrary bytes: `clawrun claws deploy` must answer,
//! never panic or hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clawrun::fuzzing::deploy(data));
