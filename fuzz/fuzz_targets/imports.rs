//! Fuzz target: see `lazaret::fuzzing::imports` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lazaret::fuzzing::imports(data));
