use lazaret::datapath::{Datapath, LoadOptions};

#[test]
fn program_passes_the_verifier() {
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load");
    let frame = [0u8; 64];
    let action = dp.test_run(&frame).expect("test run");
    assert_eq!(action, 1, "a zero frame has ethertype 0: dropped");
}
