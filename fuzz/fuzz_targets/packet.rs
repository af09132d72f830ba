//! Fuzz target: frames through the host twin and, when run as root, the real XDP program
//! (BPF_PROG_TEST_RUN), verdicts compared. See `lazaret::fuzzing::PacketHarness`.
#![no_main]

use std::{path::Path, sync::Mutex};

use lazaret::fuzzing::PacketHarness;

static HARNESS: Mutex<Option<PacketHarness>> = Mutex::new(None);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut h = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    let h = h.get_or_insert_with(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let with_xdp = std::env::var_os("LAZARET_FUZZ_NO_XDP").is_none();
        let h = PacketHarness::new(&dir, with_xdp);
        eprintln!(
            "packet target: host twin{}",
            if h.xdp_loaded() {
                " and the XDP program (BPF_PROG_TEST_RUN)"
            } else {
                " only (XDP not loaded: not root?)"
            }
        );
        h
    });
    h.run(data);
});
