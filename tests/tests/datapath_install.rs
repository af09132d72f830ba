//! The incremental generation install: whatever a slot held before, after an install the
//! active slot holds exactly the new map contents, read back from the kernel — on fresh
//! maps, on a slot written two generations ago, on pinned maps adopted with leftovers, and
//! for a device edit patched into the previous compile (whose rule-derived lists the
//! loader skips as the very ones the slot holds), and after the retired slot was brought up
//! to the active generation in the background, or after that background sync failed.

use std::{collections::BTreeMap, path::Path};

use lazaret::{
    dataplane::xdp::{Datapath, LoadOptions, MapContents},
    policy::{
        self,
        incremental::{How, Reloader},
        Compiled,
    },
};
use lazaret_abi::{AddrBits, MAP_DEV_ADDR_BITS};
use lazaret_tests::netns::{BpfMount, TempDir};

fn example() -> Compiled {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    policy::load_and_compile(&dir)
        .expect("the example policy compiles")
        .1
}

fn contents_for(compiled: &Compiled, slot: u8, generation: u64) -> MapContents {
    let ifindexes: BTreeMap<String, u32> = compiled
        .interfaces
        .iter()
        .map(|i| (i.name.clone(), 1))
        .collect();
    compiled
        .map_contents(slot, generation, &ifindexes)
        .expect("map contents")
}

/// Three different generations of one site: the example policy, the same with every third
/// port entry gone and one device moved to another policy, and the same with its peers
/// re-classed — so installs remove, add and change entries in every per-slot map kind.
fn variant(c: &MapContents, which: usize) -> MapContents {
    let mut c = c.clone();
    match which {
        0 => {}
        1 => {
            let mut i = 0;
            std::sync::Arc::make_mut(&mut c.ports).retain(|_| {
                i += 1;
                i % 3 != 0
            });
            if let Some(id) = c.devices.first().map(|(_, d)| d.id) {
                c.edit_device(id, |d| d.policy = d.restrict_policy);
            }
            c.dev_mac.pop();
        }
        _ => {
            for (_, _, v) in std::sync::Arc::make_mut(&mut c.peer4).iter_mut().step_by(2) {
                v.class = v.class.wrapping_add(1);
            }
            std::sync::Arc::make_mut(&mut c.peer6).clear();
            c.dev_ip4.truncate(c.dev_ip4.len() / 2);
        }
    }
    c
}

/// What the kernel must hold for `c` (the interface map is not per slot), counter cells
/// aside (see `cells`).
fn per_slot(c: &MapContents) -> MapContents {
    without_cells(&MapContents {
        ifaces: Vec::new(),
        ..c.clone()
    })
}

/// `c` with every record's counter cell cleared: the loader assigns the cells (the
/// compiler leaves them 0), so they are checked apart, by `cells`.
fn without_cells(c: &MapContents) -> MapContents {
    let mut c = c.clone();
    let ids: Vec<u64> = c.devices.iter().map(|(_, d)| d.id).collect();
    for id in ids {
        c.edit_device(id, |d| d.cell = 0);
    }
    c
}

/// A slot read back: every record of a device names the same counter cell, and no two
/// devices share one. Returns the slot without its cells, to compare.
fn cells(held: MapContents) -> MapContents {
    let mut by_id = std::collections::HashMap::new();
    let records = held.dev_mac.iter().map(|(_, d)| d);
    let records = records.chain(held.dev_ip4.iter().map(|(_, d)| d));
    let records = records.chain(held.dev_ip6.iter().map(|(_, d)| d));
    for d in records.chain(held.devices.iter().map(|(_, d)| d)) {
        let cell = *by_id.entry(d.id).or_insert(d.cell);
        assert_eq!(cell, d.cell, "device {:#x} names two counter cells", d.id);
    }
    let distinct: std::collections::HashSet<u16> = by_id.values().copied().collect();
    assert_eq!(
        distinct.len(),
        by_id.len(),
        "two devices share a counter cell"
    );
    without_cells(&held)
}

fn install_and_check(dp: &mut Datapath, compiled: &Compiled, generation: u64, which: usize) {
    let slot = dp.next_slot().expect("slot");
    let want = variant(&contents_for(compiled, slot, generation), which);
    dp.install(&want).expect("install");
    assert_eq!(dp.active_slot().expect("slot"), slot);
    let held = cells(dp.read_slot(slot).expect("read back"));
    assert!(
        held == per_slot(&want),
        "generation {generation} (variant {which}) in slot {slot} differs from what was installed"
    );
    bits_hold_every_address(dp);
}

/// Each slot's address bits hold every address of its identity maps: the program skips
/// the identity lookup of an address whose bit is clear, so a missing bit would make a
/// device unmanaged.
fn bits_hold_every_address(dp: &mut Datapath) {
    for slot in 0..2u8 {
        let held = dp.read_slot(slot).expect("read back");
        let map = dp.ebpf_mut().map_mut(MAP_DEV_ADDR_BITS).expect("bits");
        let bits: aya::maps::Array<_, AddrBits> = aya::maps::Array::try_from(map).expect("typed");
        let bits = bits.get(&u32::from(slot), 0).expect("slot's bits");
        let v4 = held.dev_ip4.iter().map(|(k, _)| AddrBits::v4(k.addr));
        let v6 = held.dev_ip6.iter().map(|(k, _)| AddrBits::v6(k.addr));
        let addrs: Vec<_> = v4.chain(v6).collect();
        assert!(!addrs.is_empty() || held.devices.is_empty());
        for addr in addrs {
            assert!(bits.may_hold(addr), "slot {slot}: {addr:x?} has no bit");
        }
    }
}

#[test]
fn every_install_leaves_exactly_the_new_generation_in_the_active_slot() {
    let compiled = example();
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load (needs root)");
    // Each slot is written over a different earlier generation, in every order.
    let order = [0, 1, 2, 0, 2, 1, 1, 0, 2, 2, 0];
    for (i, which) in order.into_iter().enumerate() {
        install_and_check(&mut dp, &compiled, i as u64 + 1, which);
    }
    // The retired generation stays whole in the other slot until it is written over.
    let inactive = dp.next_slot().expect("slot");
    let previous = order.len() - 1;
    let want = variant(
        &contents_for(&compiled, inactive, previous as u64),
        order[previous - 1],
    );
    assert!(cells(dp.read_slot(inactive).expect("read back")) == per_slot(&want));
}

#[test]
fn contents_built_for_the_active_slot_are_refused_and_change_nothing() {
    let compiled = example();
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load (needs root)");
    install_and_check(&mut dp, &compiled, 1, 0);
    let active = dp.active_slot().expect("slot");
    let wrong = contents_for(&compiled, active, 2);
    let err = dp
        .install(&wrong)
        .expect_err("the active slot must not be written");
    assert!(err.to_string().contains("inactive slot"), "{err}");
    assert_eq!(dp.active_site().expect("site").generation, 1);
    install_and_check(&mut dp, &compiled, 3, 1);
}

/// The pinned maps of a first daemon that filled both slots with different generations
/// (1 and 2), and the options that adopt them.
struct Pins {
    // Field order matters for drop: the mount goes before its directory.
    bpffs: BpfMount,
    _tmp: TempDir,
    opts: LoadOptions,
}

fn pinned_by_a_first_daemon(compiled: &Compiled) -> Pins {
    let tmp = TempDir::new().expect("tempdir");
    let bpffs = BpfMount::new(&tmp.path).expect("bpffs (needs root)");
    let opts = LoadOptions {
        pin_dir: Some(bpffs.path.clone()),
    };
    let mut dp = Datapath::load(&opts).expect("load");
    install_and_check(&mut dp, compiled, 1, 1);
    install_and_check(&mut dp, compiled, 2, 2);
    Pins {
        bpffs,
        _tmp: tmp,
        opts,
    }
}

#[test]
fn adopted_maps_with_leftovers_hold_exactly_the_new_generation_after_one_install() {
    let compiled = example();
    let pins = pinned_by_a_first_daemon(&compiled);
    // A second daemon adopts the pinned maps: it cannot know what the inactive slot holds,
    // so its first install must read it back rather than write a delta over a guess.
    let mut dp = Datapath::load(&pins.opts).expect("adopt");
    assert_eq!(dp.active_site().expect("site").generation, 2);
    install_and_check(&mut dp, &compiled, 3, 0);
    install_and_check(&mut dp, &compiled, 4, 1);
}

/// A pin of the address bits lost (or left by another build) while the identity maps'
/// pins stay: the next daemon, adopting them, sets the bits of every adopted address
/// before its program can judge a packet by them.
#[test]
fn adopted_slots_get_the_bits_of_their_addresses_even_when_the_bits_pin_is_gone() {
    let compiled = example();
    let pins = pinned_by_a_first_daemon(&compiled);
    std::fs::remove_file(pins.bpffs.path.join(MAP_DEV_ADDR_BITS)).expect("the bits are pinned");
    let mut dp = Datapath::load(&pins.opts).expect("adopt");
    bits_hold_every_address(&mut dp);
}

#[test]
fn a_patched_device_edit_leaves_exactly_its_generation_in_the_slot() {
    let tmp = TempDir::new().expect("tempdir");
    let dir = tmp.path.join("policies");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    lazaret_tests::copy_tree(&src, &dir).expect("copy the example policy");
    let mut reloader = Reloader::new(&dir);
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load (needs root)");
    let mut generation = 0;
    let mut apply = |reloader: &mut Reloader, dp: &mut Datapath| {
        let (compiled, how) = reloader.load().expect("loads");
        generation += 1;
        let slot = dp.next_slot().expect("slot");
        let want = contents_for(&compiled, slot, generation);
        dp.install(&want).expect("install");
        let held = cells(dp.read_slot(slot).expect("read back"));
        assert!(
            held == per_slot(&want),
            "generation {generation} ({how:?}) differs"
        );
        (how, want)
    };
    // Both slots hold the full compile.
    assert_eq!(apply(&mut reloader, &mut dp).0, How::Full);
    apply(&mut reloader, &mut dp);
    // A pump switched to audit: patched, and only its device entry changes in the slot.
    let pumps = dir.join("devices/pumps.toml");
    let text = std::fs::read_to_string(&pumps).expect("read");
    let edited = text.replacen(
        "id = \"pump-icu-01\"\n",
        "id = \"pump-icu-01\"\nmode = \"audit\"\n",
        1,
    );
    assert_ne!(text, edited, "the example has pump-icu-01");
    std::fs::write(&pumps, edited).expect("write");
    let (how, want) = apply(&mut reloader, &mut dp);
    assert_eq!(how, How::Patched { devices: 1 });
    let audit = lazaret_abi::MODE_AUDIT;
    assert_eq!(
        want.devices.iter().filter(|(_, d)| d.mode == audit).count(),
        contents_for(&policy::load_and_compile(&dir).expect("compiles").1, 0, 1)
            .devices
            .iter()
            .filter(|(_, d)| d.mode == audit)
            .count(),
        "the patch and a full compile agree on the audit devices"
    );
    // And once more, into the other slot (written two generations ago).
    apply(&mut reloader, &mut dp);
}

#[test]
fn a_synced_retired_slot_holds_the_active_generation_and_the_next_install_builds_on_it() {
    let compiled = std::sync::Arc::new(example());
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load (needs root)");
    let order = [1, 0, 2, 2, 1, 0];
    for (i, which) in order.into_iter().enumerate() {
        let generation = i as u64 + 1;
        install_and_check(&mut dp, &compiled, generation, which);
        let c = compiled.clone();
        dp.sync_retired(move |slot| Some(variant(&contents_for(&c, slot, generation), which)))
            .expect("sync starts");
        // Reading waits for the sync: the retired slot now holds this generation too.
        let retired = dp.next_slot().expect("slot");
        let want = variant(&contents_for(&compiled, retired, generation), which);
        assert!(
            cells(dp.read_slot(retired).expect("read back")) == per_slot(&want),
            "generation {generation} (variant {which}) was not synced into slot {retired}"
        );
    }
    // A sync with nothing to build leaves the slot as it was, and known: the next install
    // is still exact.
    let retired = dp.next_slot().expect("slot");
    let before = dp.read_slot(retired).expect("read back");
    dp.sync_retired(|_| None).expect("sync starts");
    assert!(dp.read_slot(retired).expect("read back") == before);
    install_and_check(&mut dp, &compiled, order.len() as u64 + 1, 2);
}

#[test]
fn a_failed_background_sync_does_not_fail_the_next_install() {
    let compiled = example();
    let mut dp = Datapath::load(&LoadOptions::default()).expect("load (needs root)");
    install_and_check(&mut dp, &compiled, 1, 0);
    install_and_check(&mut dp, &compiled, 2, 1);
    // The sync is handed contents built for the active slot: it refuses them and fails,
    // leaving the retired slot's contents unknown to the loader.
    let active = dp.active_slot().expect("slot");
    let wrong = variant(&contents_for(&compiled, active, 2), 1);
    dp.sync_retired(move |_| Some(wrong)).expect("sync starts");
    // The next install starts while that sync is still pending: it reads the slot back
    // and installs, exactly, instead of failing once.
    install_and_check(&mut dp, &compiled, 3, 2);
    install_and_check(&mut dp, &compiled, 4, 0);
}
