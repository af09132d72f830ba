//! Fuzz target: see `lazaret::fuzzing::config` for the property checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lazaret::fuzzing::config(data));
