//! Loading the XDP program, attaching it, and the generation switch.
//!
//! A new policy is installed in the inactive slot of every policy map, then one write to
//! `LZ_GEN` makes it active. The program reads `LZ_GEN` once per packet, so no packet sees a
//! mix.
//!
//! Installs are incremental. The old generation stays in its slot after the flip, and the
//! loader remembers what each slot holds (its *shadow*, the [`MapContents`] last written
//! there), so the next install into that slot writes only the entries that differ: a
//! one-device change costs a handful of map updates, not a rewrite of 100,000 rules. A slot
//! whose contents are not known (maps adopted from pins after a restart, an install that
//! failed halfway) is read back from the kernel first, and the delta is taken against that.
//! A slot is written only once a grace period has passed since the flip that retired it, so
//! a packet that read the old slot just before the flip still finds its entries.
//!
//! After a flip the daemon has the retired slot brought up to the new generation on a
//! background thread ([`Datapath::sync_retired`]): otherwise it would hold the generation
//! before last, and a one-device edit following a whole-policy change would rewrite the
//! whole policy. Entries are written in batches (see [`super::batch`]).
//!
//! Here: loading, pinning and attaching, the slots and the generation switch, device state.
//! `slots`: writing a generation into a slot (deltas, batched and single writes, reading a
//! slot back). `reader`: the typed map accessors and [`DatapathReader`]. `legacy`: the
//! layouts of older ABIs, read once when upgrading.

use std::{os::fd::AsFd, sync::Arc};
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, PerCpuArray},
    programs::{TestRun, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfLoader, Pod,
};
use lazaret_abi::*;

use super::{batch, error::DatapathError, MapContents};
pub use crate::policy::twin::FlowTable;

/// How long to wait after a generation flip before writing into the retired slot. XDP runs
/// to completion in microseconds; this is three orders of magnitude more.
const GRACE: Duration = Duration::from_millis(20);

/// Where and how to load the program.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Pin every map by name in this bpffs directory, adopting maps already pinned there.
    pub pin_dir: Option<PathBuf>,
}

/// XDP attach mode requested for an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic (skb) mode.
    Auto,
    Native,
    Skb,
}

/// Summed per-CPU counters of one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceCounterTotals {
    pub allowed_packets: u64,
    pub allowed_bytes: u64,
    pub denied_packets: u64,
    pub denied_bytes: u64,
    pub last_seen_ns: u64,
}

/// The loaded XDP program and its maps.
pub struct Datapath {
    ebpf: Ebpf,
    /// What each slot of the per-slot maps holds, when known (see the module docs).
    shadow: [Option<MapContents>; 2],
    /// When the last flip happened: the retired slot is not written before `GRACE` after it.
    flipped_at: Option<Instant>,
    /// lazaret's program, or a benchmark's (baseline, floor).
    program: &'static str,
    /// A retired slot being brought up to date (see [`Datapath::sync_retired`]).
    syncing: Option<Sync>,
    /// The next generation being written to the inactive slot (see [`Datapath::stage`]).
    staging: Option<Staging>,
    /// Each device's cell in `LZ_DEV_COUNT` and `LZ_DEV_STATE` (see `cells`).
    cells: cells::Cells,
    /// The state last given to each device (written into its cell when it gets one).
    states: std::collections::HashMap<u64, DevState>,
    /// Cells given to a device whose counters no committed install has zeroed yet (the
    /// install that gave them failed or was abandoned): zeroed again by the next one, so a
    /// cell never shows its previous device's counts.
    uncleared: Vec<u16>,
    /// A test's request that the next zeroing of counter cells fail.
    #[cfg(feature = "fault-injection")]
    fail_next_clear: bool,
}

/// What the slot a [`Datapath::stage`] writes holds before: known, or what a sync of it
/// still running will leave.
enum Held {
    Known(MapContents),
    AfterSync(Sync),
}

/// A [`Datapath::stage`] in progress: its thread returns what the slot then holds.
struct Staging {
    slot: u8,
    thread: std::thread::JoinHandle<Result<Staged, DatapathError>>,
}

/// What an install thread did with the inactive slot.
enum Staged {
    /// The slot holds these contents.
    Written(MapContents),
    /// The background sync of this slot failed before the install could start from it: its
    /// contents are unknown, so [`Datapath::commit`] reads it back and writes these.
    NotWritten(MapContents),
}

/// A [`Datapath::sync_retired`] in progress: its thread returns what the slot then holds.
struct Sync {
    slot: u8,
    thread: std::thread::JoinHandle<Result<MapContents, DatapathError>>,
    /// The thread's kernel id once it runs (0 before).
    tid: Arc<std::sync::atomic::AtomicI32>,
}

impl Drop for Datapath {
    /// A sync still writing must not outlive its datapath: a datapath adopting the same
    /// pinned maps next would read the slot back while it changes.
    fn drop(&mut self) {
        if let Some(s) = self.staging.take() {
            let _ = s.thread.join();
        }
        self.finish_sync();
    }
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath").finish_non_exhaustive()
    }
}

impl Datapath {
    /// Loads lazaret's XDP program (verifier included) without attaching it.
    pub fn load(opts: &LoadOptions) -> Result<Self, DatapathError> {
        Self::load_object(super::PROGRAM, PROGRAM_NAME, opts)
    }

    /// Loads the baseline program benchmarks compare against.
    pub fn load_baseline() -> Result<Self, DatapathError> {
        Self::load_object(super::BASELINE, "lazaret_baseline", &LoadOptions::default())
    }

    /// The floor program (for benchmarks): [`Self::load_baseline`] plus a flow-table lookup.
    pub fn load_floor() -> Result<Self, DatapathError> {
        Self::load_object(super::FLOOR, "lazaret_floor", &LoadOptions::default())
    }

    /// The denial floor (for benchmarks): the floor's parse and flow-table miss, one more
    /// hash lookup, drop.
    pub fn load_floor_deny() -> Result<Self, DatapathError> {
        Self::load_object(super::FLOOR, "lazaret_floor_deny", &LoadOptions::default())
    }

    /// The duties floor (for benchmarks): the floor plus the per-packet checks and counts
    /// of a confirmed flow (see `gateway-ebpf/src/floor.rs`).
    pub fn load_floor_duties() -> Result<Self, DatapathError> {
        Self::load_object(
            super::FLOOR,
            "lazaret_floor_duties",
            &LoadOptions::default(),
        )
    }

    /// The duties floor of a device's refused flow (for benchmarks).
    pub fn load_floor_duties_deny() -> Result<Self, DatapathError> {
        Self::load_object(
            super::FLOOR,
            "lazaret_floor_duties_deny",
            &LoadOptions::default(),
        )
    }

    /// The duties floor of a device's allowed new flow (for benchmarks).
    pub fn load_floor_duties_open() -> Result<Self, DatapathError> {
        Self::load_object(
            super::FLOOR,
            "lazaret_floor_duties_open",
            &LoadOptions::default(),
        )
    }

    /// The duties floor of an unknown source's frame (for benchmarks).
    pub fn load_floor_duties_unknown() -> Result<Self, DatapathError> {
        Self::load_object(
            super::FLOOR,
            "lazaret_floor_duties_unknown",
            &LoadOptions::default(),
        )
    }

    /// The empty program (for benchmarks): passes every frame.
    pub fn load_empty() -> Result<Self, DatapathError> {
        Self::load_object(super::BASELINE, "lazaret_empty", &LoadOptions::default())
    }

    /// The drop-all program (for benchmarks): drops every frame and counts it in the
    /// per-CPU array `LZ_DROPPED` (read it with [`Self::dropped`]).
    pub fn load_drop() -> Result<Self, DatapathError> {
        Self::load_object(super::BASELINE, "lazaret_drop", &LoadOptions::default())
    }

    /// Frames the drop-all program ([`Self::load_drop`]) dropped, over every CPU.
    pub fn dropped(&mut self) -> Result<u64, DatapathError> {
        Ok(per_cpu_sums(&mut self.ebpf, "LZ_DROPPED", 1)?
            .first()
            .copied()
            .unwrap_or(0))
    }

    /// The loaded program's size after the verifier (xlated) and as machine code (JIT), in
    /// bytes.
    pub fn program_sizes(&mut self) -> Result<(u32, u32), DatapathError> {
        let info = self.program_mut()?.info()?;
        Ok((info.size_translated().unwrap_or(0), info.size_jitted()))
    }

    /// How many instructions the verifier explored to accept the loaded program (its
    /// limit is 1,000,000: every branch added to the packet path multiplies the states it
    /// walks). 0 when the kernel does not say.
    pub fn verified_instructions(&mut self) -> Result<u32, DatapathError> {
        Ok(self
            .program_mut()?
            .info()?
            .verified_instruction_count()
            .unwrap_or(0))
    }

    fn load_object(
        object: &[u8],
        program: &'static str,
        opts: &LoadOptions,
    ) -> Result<Self, DatapathError> {
        let mut loader = EbpfLoader::new();
        let pins: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => PINNED_MAPS.iter().map(|m| (*m, dir.join(m))).collect(),
            None => Vec::new(),
        };
        // Maps created now are empty, so both slots are known; adopted maps are not.
        let adopting = pins.iter().any(|(_, path)| path.exists());
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(object)?;
        let prog: &mut Xdp = ebpf
            .program_mut(program)
            .ok_or(DatapathError::MissingProgram(program))?
            .try_into()?;
        prog.load()?;
        // Cells as the pinned records name them, and the states in them (lazaret's program
        // only: the bench programs have no device maps).
        let cells = match (adopting, ebpf.map_mut(MAP_DEVICES)) {
            (true, Some(map)) => {
                let devices: HashMap<_, DevKey, Device> =
                    HashMap::try_from(map).map_err(DatapathError::map(MAP_DEVICES))?;
                cells::Cells::adopt(
                    devices
                        .iter()
                        .filter_map(Result::ok)
                        .map(|(k, d)| (k.slot, d)),
                )
            }
            _ => cells::Cells::default(),
        };
        let mut states = std::collections::HashMap::new();
        if let (true, Some(map)) = (adopting, ebpf.map_mut(MAP_DEV_STATE)) {
            let array: Array<_, DevState> =
                Array::try_from(map).map_err(DatapathError::map(MAP_DEV_STATE))?;
            for (id, cell) in cells.all() {
                let st = array
                    .get(&u32::from(cell), 0)
                    .map_err(DatapathError::map(MAP_DEV_STATE))?;
                states.insert(id, st);
            }
        }
        if adopting && ebpf.map(MAP_DEV_ADDR_BITS).is_some() {
            slots::or_adopted_addr_bits(&mut ebpf)?;
        }
        let empty = |slot| {
            (!adopting).then(|| MapContents {
                slot,
                ..MapContents::default()
            })
        };
        Ok(Datapath {
            ebpf,
            shadow: [empty(0), empty(1)],
            flipped_at: None,
            program,
            syncing: None,
            staging: None,
            cells,
            states,
            uncleared: Vec::new(),
            #[cfg(feature = "fault-injection")]
            fail_next_clear: false,
        })
    }

    /// The loaded XDP program (to attach it through pinned links).
    pub fn program_mut(&mut self) -> Result<&mut Xdp, DatapathError> {
        let name = self.program;
        Ok(self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()?)
    }

    /// Attaches to an interface; returns the mode actually used.
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<AttachMode, DatapathError> {
        let prog = self.program_mut()?;
        match mode {
            AttachMode::Native => {
                prog.attach(ifname, XdpMode::Driver)?;
                Ok(AttachMode::Native)
            }
            AttachMode::Skb => {
                prog.attach(ifname, XdpMode::Skb)?;
                Ok(AttachMode::Skb)
            }
            AttachMode::Auto => match prog.attach(ifname, XdpMode::Driver) {
                Ok(_) => Ok(AttachMode::Native),
                Err(native) => {
                    tracing::warn!(interface = ifname, error = %native, "native XDP unavailable, falling back to skb mode");
                    prog.attach(ifname, XdpMode::Skb)?;
                    Ok(AttachMode::Skb)
                }
            },
        }
    }

    /// Declares which side an interface faces (untagged frames untagged, bound as itself).
    pub fn set_interface(&mut self, ifindex: u32, side: u8) -> Result<(), DatapathError> {
        self.set_interface_config(ifindex, IfaceConfig::new(side))
    }

    /// Declares an interface's side, the VLAN of its untagged frames and what devices behind
    /// it bind to.
    pub fn set_interface_config(
        &mut self,
        ifindex: u32,
        config: IfaceConfig,
    ) -> Result<(), DatapathError> {
        if ifindex < IFACE_DIRECT {
            let mut map: Array<_, IfaceConfig> = typed(&mut self.ebpf, MAP_IFACE)?;
            map.set(ifindex, config, 0)
                .map_err(DatapathError::map(MAP_IFACE))
        } else {
            let mut map: HashMap<_, u32, IfaceConfig> = typed(&mut self.ebpf, MAP_IFACE_HIGH)?;
            map.insert(ifindex, config, 0)
                .map_err(DatapathError::map(MAP_IFACE_HIGH))
        }
    }

    /// The slot packets are judged by now.
    pub fn active_slot(&mut self) -> Result<u8, DatapathError> {
        let map: Array<_, u32> = typed(&mut self.ebpf, MAP_GEN)?;
        Ok((map.get(&0, 0).map_err(DatapathError::map(MAP_GEN))? & 1) as u8)
    }

    /// The slot the next generation must be compiled for.
    pub fn next_slot(&mut self) -> Result<u8, DatapathError> {
        Ok(1 - self.active_slot()?)
    }

    /// Site settings of the active generation (generation 0: nothing installed yet).
    pub fn active_site(&mut self) -> Result<SiteConfig, DatapathError> {
        let slot = self.active_slot()?;
        let map: Array<_, SiteConfig> = typed(&mut self.ebpf, MAP_SITE)?;
        map.get(&u32::from(slot), 0)
            .map_err(DatapathError::map(MAP_SITE))
    }

    /// Installs a complete generation: bring the inactive slot to `contents`, flip. Only the
    /// entries that differ from what the slot holds are written (see the module docs).
    /// `contents` must have been built for [`Self::next_slot`]. On error before the flip the
    /// active generation is untouched and keeps enforcing.
    pub fn install(&mut self, contents: &MapContents) -> Result<(), DatapathError> {
        self.stage(contents.clone(), Box::new(|| {}))?;
        self.commit()
    }

    /// The first half of [`Self::install`], off the caller's thread: the inactive slot is
    /// brought to `contents` on a thread of its own (through duplicated map handles; the
    /// active slot, which packets read, is never written), and `done` is called there when
    /// it is written, or failed. Nothing changes for packets until [`Self::commit`]. A big
    /// generation takes about half a second to write; the daemon's loop keeps reading
    /// events and answering meanwhile.
    pub fn stage(
        &mut self,
        mut contents: MapContents,
        done: Box<dyn FnOnce() + Send>,
    ) -> Result<(), DatapathError> {
        if let Some(s) = self.staging.take() {
            // Never two writers of one slot: an earlier stage nobody committed is finished.
            let _ = s.thread.join();
            self.shadow[usize::from(s.slot)] = None;
        }
        let old = self.active_slot()?;
        let new = 1 - old;
        if contents.slot != new {
            return Err(DatapathError::WrongSlot {
                built_for: contents.slot,
                inactive: new,
            });
        }
        // Counter cells: given (and cleared of a departed device's counts) before any record
        // naming them is written.
        let fresh = self.cells.assign(&mut contents)?;
        // Counters to zero are listed before the writes below can fail: a cell given now
        // is not fresh to the next install.
        self.uncleared.extend(fresh.iter().map(|(_, cell)| *cell));
        self.uncleared.sort_unstable();
        self.uncleared.dedup();
        self.set_fresh_states(&fresh)?;
        // (A packet of the retired slot in the grace period after the flip may still spend
        // a token of a bucket just emptied: a stray event at most, as for counters.)
        self.clear_fresh_buckets(&fresh)?;
        let counters = self.counters_to_clear()?;
        // A sync of this slot still running (whole policies back to back) is waited for on
        // the install thread, not here: the caller's loop must not stall on it.
        let syncing = self.syncing.take().filter(|s| s.slot == new);
        if let Some(s) = &syncing {
            restore_priority(s.tid.load(std::sync::atomic::Ordering::Relaxed));
        }
        self.finish_sync();
        // Until the slot is fully written its contents are unknown: an error leaves it to
        // be read back by the next install. Unknown contents (maps adopted from pins, an
        // interrupted install) are read from the kernel, so leftovers are removed too.
        let held = match (syncing, self.shadow[usize::from(new)].take()) {
            (Some(sync), _) => Held::AfterSync(sync),
            (None, Some(held)) => Held::Known(held),
            (None, None) => Held::Known(self.read_slot(new)?),
        };
        let mut maps = OwnedSlotMaps::dup(&self.ebpf)?;
        // Packets that read the retired slot just before the last flip may still run.
        let not_before = self.flipped_at.map(|at| at + GRACE);
        let thread = std::thread::Builder::new()
            .name("lazaret-install".into())
            .spawn(move || {
                let written = (|| {
                    // The fresh cells' counters, zeroed before any record names them.
                    if let Some((map, cells, fail)) = counters {
                        if fail {
                            return Err(DatapathError::Link(
                                "zeroing counter cells failed (injected by a test)".into(),
                            ));
                        }
                        clear_counters(map, &cells)?;
                    }
                    let held = match held {
                        Held::Known(held) => held,
                        Held::AfterSync(sync) => match sync.thread.join() {
                            Ok(Ok(held)) => held,
                            // Reading the slot back needs the program's own map handles:
                            // `commit` does it, on its thread, rather than fail this install.
                            _ => return Ok(Staged::NotWritten(contents)),
                        },
                    };
                    if let Some(at) = not_before {
                        std::thread::sleep(at.saturating_duration_since(Instant::now()));
                    }
                    write_slot(maps.borrow()?, &held, &contents)?;
                    Ok(Staged::Written(contents))
                })();
                done();
                written
            })
            .map_err(|e| DatapathError::Link(format!("starting the install thread: {e}")))?;
        self.staging = Some(Staging { slot: new, thread });
        Ok(())
    }

    /// Whether a [`Self::stage`] is in progress (committed or not).
    pub fn staging(&self) -> bool {
        self.staging.is_some()
    }

    /// The second half of [`Self::install`]: waits for the staged slot to be written, then
    /// the switch. If the write failed, the active generation is untouched.
    pub fn commit(&mut self) -> Result<(), DatapathError> {
        let Some(staged) = self.staging.take() else {
            return Err(DatapathError::Link("nothing staged to commit".into()));
        };
        let staged_result = staged
            .thread
            .join()
            .map_err(|_| DatapathError::Link("the install thread panicked".into()))??;
        if self.active_slot()? == staged.slot {
            return Err(DatapathError::WrongSlot {
                built_for: staged.slot,
                inactive: 1 - staged.slot,
            });
        }
        let contents = match staged_result {
            Staged::Written(contents) => contents,
            Staged::NotWritten(contents) => {
                // Rare (the background sync failed): the whole write happens here, on the
                // caller's thread, rather than this install failing.
                tracing::warn!(
                    slot = staged.slot,
                    "the retired slot's sync failed: reading it back and writing the new generation now"
                );
                if let Some(at) = self.flipped_at.map(|at| at + GRACE) {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                }
                let held = self.read_slot(staged.slot)?;
                let mut maps = OwnedSlotMaps::dup(&self.ebpf)?;
                write_slot(maps.borrow()?, &held, &contents)?;
                contents
            }
        };
        self.shadow[usize::from(staged.slot)] = Some(contents);
        // The switch: one 4-byte array write.
        let mut gen: Array<_, u32> = typed(&mut self.ebpf, MAP_GEN)?;
        gen.set(0, u32::from(staged.slot), 0)
            .map_err(DatapathError::map(MAP_GEN))?;
        self.flipped_at = Some(Instant::now());
        // The staged install zeroed every cell in the list before writing a record.
        self.uncleared.clear();
        Ok(())
    }

    /// Brings the slot the last [`Self::install`] retired up to the generation it made
    /// active, on a background thread, so that the next install writes only what that
    /// generation changes. Without this the retired slot holds the generation before last,
    /// and a one-device edit right after a whole-policy change rewrites the whole policy.
    ///
    /// `contents_for(slot)` builds the active generation's contents for the retired slot;
    /// it runs on the thread too. The thread waits out the grace period after the flip and
    /// runs at a lower priority than the daemon. The next install (or [`Self::read_slot`])
    /// waits for it to finish; if it failed, the slot's contents are read back from the
    /// kernel then, as after any interrupted write.
    pub fn sync_retired<F>(&mut self, contents_for: F) -> Result<(), DatapathError>
    where
        F: FnOnce(u8) -> Option<MapContents> + Send + 'static,
    {
        self.finish_sync();
        let retired = 1 - self.active_slot()?;
        let Some(held) = self.shadow[usize::from(retired)].take() else {
            // Unknown contents: the next install reads them back anyway.
            return Ok(());
        };
        let maps = match OwnedSlotMaps::dup(&self.ebpf) {
            Ok(maps) => maps,
            Err(e) => {
                self.shadow[usize::from(retired)] = Some(held);
                return Err(e);
            }
        };
        let not_before = self.flipped_at.map(|at| at + GRACE);
        self.cells.mirror(retired);
        let cells = self.cells.shared();
        let thread_tid = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let tid = thread_tid.clone();
        let thread = std::thread::Builder::new()
            .name("lazaret-sync".into())
            .spawn(move || {
                tid.store(lower_priority(), std::sync::atomic::Ordering::Relaxed);
                if let Some(at) = not_before {
                    std::thread::sleep(at.saturating_duration_since(Instant::now()));
                }
                let Some(mut want) = contents_for(retired) else {
                    return Ok(held);
                };
                cells::stamp(&cells, &mut want)?;
                if want.slot != retired {
                    // Never the active slot, whatever the caller built.
                    return Err(DatapathError::WrongSlot {
                        built_for: want.slot,
                        inactive: retired,
                    });
                }
                let mut maps = maps;
                write_slot(maps.borrow()?, &held, &want)?;
                Ok(want)
            })
            .map_err(|e| DatapathError::Link(format!("starting the slot sync thread: {e}")))?;
        self.syncing = Some(Sync {
            slot: retired,
            thread,
            tid: thread_tid,
        });
        Ok(())
    }

    /// Waits for a [`Self::sync_retired`] in progress and records what the slot holds.
    fn finish_sync(&mut self) {
        let Some(sync) = self.syncing.take() else {
            return;
        };
        // Someone waits for it now: back to the daemon's priority (best effort: raising a
        // priority needs CAP_SYS_NICE, which the systemd unit does not grant).
        if !sync.thread.is_finished() {
            restore_priority(sync.tid.load(std::sync::atomic::Ordering::Relaxed));
        }
        self.shadow[usize::from(sync.slot)] = match sync.thread.join() {
            Ok(Ok(held)) => Some(held),
            Ok(Err(e)) => {
                tracing::warn!(slot = sync.slot, error = %e, "bringing the retired slot up to date failed; the next install reads it back");
                None
            }
            Err(_) => {
                tracing::warn!(
                    slot = sync.slot,
                    "the slot sync thread panicked; the next install reads the slot back"
                );
                None
            }
        };
    }

    /// Sets a device's runtime state (epoch, quarantine). Takes effect on the next packet.
    pub fn set_device_state(&mut self, id: u64, state: DevState) -> Result<(), DatapathError> {
        // Kept for the device's next cell, and written into its cell now if it has one (a
        // device in neither slot has none: its state waits here).
        self.states.insert(id, state);
        let Some(cell) = self.cells.cell(id) else {
            return Ok(());
        };
        let mut map: Array<_, DevState> = typed(&mut self.ebpf, MAP_DEV_STATE)?;
        map.set(u32::from(cell), state, 0)
            .map_err(DatapathError::map(MAP_DEV_STATE))
    }

    /// A device's runtime state (default if never set).
    pub fn device_state(&mut self, id: u64) -> Result<DevState, DatapathError> {
        let Some(cell) = self.cells.cell(id) else {
            return Ok(self.states.get(&id).copied().unwrap_or_default());
        };
        let map: Array<_, DevState> = typed(&mut self.ebpf, MAP_DEV_STATE)?;
        map.get(&u32::from(cell), 0)
            .map_err(DatapathError::map(MAP_DEV_STATE))
    }

    /// Replaces the gateway's own addresses ([`MAP_LOCAL`]) with `addrs`: what is gone is
    /// removed after what is new is added, so an address kept is never missing. Returns
    /// whether anything changed.
    pub fn set_local_addrs(
        &mut self,
        addrs: &std::collections::BTreeSet<std::net::IpAddr>,
    ) -> Result<bool, DatapathError> {
        let mut map: HashMap<_, LocalKey, u32> = typed(&mut self.ebpf, MAP_LOCAL)?;
        let want: std::collections::BTreeSet<LocalKey> = addrs.iter().map(local_key).collect();
        let have: std::collections::BTreeSet<LocalKey> =
            map.keys().filter_map(Result::ok).collect();
        if want == have {
            return Ok(false);
        }
        for k in want.difference(&have) {
            map.insert(k, 0, 0).map_err(DatapathError::map(MAP_LOCAL))?;
        }
        for k in have.difference(&want) {
            let _ = map.remove(k);
        }
        Ok(true)
    }

    /// The gateway's own addresses as the datapath holds them.
    pub fn local_addrs(
        &mut self,
    ) -> Result<std::collections::BTreeSet<std::net::IpAddr>, DatapathError> {
        let map: HashMap<_, LocalKey, u32> = typed(&mut self.ebpf, MAP_LOCAL)?;
        Ok(map
            .keys()
            .filter_map(Result::ok)
            .map(|k| local_addr(&k))
            .collect())
    }

    /// The bridge-port pins (MAC → the port it was first seen on), see lazaret_abi, *Bridge
    /// ports*.
    pub fn port_pins(&mut self) -> Result<Vec<([u8; 6], PortPin)>, DatapathError> {
        let map: HashMap<_, PinKey, PortPin> = typed(&mut self.ebpf, MAP_PORT_PIN)?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.mac, v))
            .collect())
    }

    /// Pins `mac` to the port `ifindex` (a pin restored from the state directory after a
    /// reboot); an existing pin is replaced.
    pub fn set_port_pin(&mut self, mac: [u8; 6], pin: PortPin) -> Result<(), DatapathError> {
        let mut map: HashMap<_, PinKey, PortPin> = typed(&mut self.ebpf, MAP_PORT_PIN)?;
        map.insert(PinKey { mac, _pad: [0; 2] }, pin, 0)
            .map_err(DatapathError::map(MAP_PORT_PIN))
    }

    /// Releases the pin of `mac`: the next port it is seen on pins it again. Whether there
    /// was one.
    pub fn release_port_pin(&mut self, mac: [u8; 6]) -> Result<bool, DatapathError> {
        let mut map: HashMap<_, PinKey, PortPin> = typed(&mut self.ebpf, MAP_PORT_PIN)?;
        match map.remove(&PinKey { mac, _pad: [0; 2] }) {
            Ok(()) => Ok(true),
            Err(e) if not_there(&e) => Ok(false),
            Err(e) => Err(DatapathError::map(MAP_PORT_PIN)(e)),
        }
    }

    /// Forgets the addresses `mac` owns by first use (a person's release: the address
    /// moved to another device); how many.
    pub fn release_owned_addresses(&mut self, mac: [u8; 6]) -> Result<usize, DatapathError> {
        let mut map: HashMap<_, LlKey, LlOwner> = typed(&mut self.ebpf, MAP_LL_OWNER)?;
        let keys: Vec<LlKey> = map
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, o)| o.mac == mac)
            .map(|(k, _)| k)
            .collect();
        let mut n = 0;
        for k in keys {
            match map.remove(&k) {
                Ok(()) => n += 1,
                Err(e) if not_there(&e) => {}
                Err(e) => return Err(DatapathError::map(MAP_LL_OWNER)(e)),
            }
        }
        Ok(n)
    }

    /// The owners of addresses by first use the datapath has recorded (address, MAC, last
    /// use in the datapath clock, `FlowValue::last_seen_ns`): IPv4 ones from their
    /// IPv4-mapped keys ([`owner_key`]).
    pub fn address_owners(&mut self) -> Result<Vec<(std::net::IpAddr, LlOwner)>, DatapathError> {
        let map: HashMap<_, LlKey, LlOwner> = typed(&mut self.ebpf, MAP_LL_OWNER)?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (std::net::Ipv6Addr::from(k.addr).to_canonical(), v))
            .collect())
    }

    /// Packets by reason and side, summed over CPUs; indexed by [`stats_index`].
    pub fn stats(&mut self) -> Result<Vec<u64>, DatapathError> {
        per_cpu_sums(&mut self.ebpf, MAP_STATS, STATS_LEN)
    }

    /// Event counters (sent, rate limited, ring buffer full), indexed by `EV_STAT_*`.
    pub fn event_stats(&mut self) -> Result<Vec<u64>, DatapathError> {
        per_cpu_sums(&mut self.ebpf, MAP_EV_STATS, EV_STATS_LEN)
    }

    /// Hits of one rule in one slot.
    pub fn rule_hits(&mut self, slot: u8, rule: u32) -> Result<u64, DatapathError> {
        let map: PerCpuArray<_, u64> = typed(&mut self.ebpf, MAP_RULE_HITS)?;
        let values = map
            .get(&rule_hit_index(slot, rule), 0)
            .map_err(DatapathError::map(MAP_RULE_HITS))?;
        Ok(values.iter().sum())
    }

    /// Counters of one device, summed over CPUs (zero if it never sent a packet).
    pub fn device_counters(&mut self, id: u64) -> Result<DeviceCounterTotals, DatapathError> {
        match self.cells.cell(id) {
            Some(cell) => device_counters(&mut self.ebpf, cell),
            None => Ok(DeviceCounterTotals::default()),
        }
    }

    /// Writes into cells just given to devices the state the controller last gave each
    /// (or none). On the caller's thread, in order with [`Self::set_device_state`]: a
    /// state set meanwhile is never overwritten by an older one.
    fn set_fresh_states(&mut self, cells: &[(u64, u16)]) -> Result<(), DatapathError> {
        let values: Vec<DevState> = cells
            .iter()
            .map(|(id, _)| self.states.get(id).copied().unwrap_or_default())
            .collect();
        self.write_cells(MAP_DEV_STATE, cells, &values)
    }

    /// Empties the event and claim buckets of cells just given to devices: a device never
    /// inherits the budget a previous owner of its cell spent. (A zeroed bucket is full.)
    fn clear_fresh_buckets(&mut self, cells: &[(u64, u16)]) -> Result<(), DatapathError> {
        let zeros = vec![TokenBucket::default(); cells.len()];
        self.write_cells(MAP_DEV_EV_BUCKET, cells, &zeros)?;
        self.write_cells(MAP_DEV_CLAIM, cells, &zeros)
    }

    /// Writes `values` at `cells` of the array `name`, in one batched write where the
    /// kernel has them.
    fn write_cells<V: aya::Pod>(
        &mut self,
        name: &'static str,
        cells: &[(u64, u16)],
        values: &[V],
    ) -> Result<(), DatapathError> {
        if cells.is_empty() {
            return Ok(());
        }
        let keys: Vec<u32> = cells.iter().map(|(_, c)| u32::from(*c)).collect();
        if let Some(Map::Array(data)) = self.ebpf.map(name) {
            match batch::update(data.fd().as_fd(), &keys, values) {
                Ok(()) => return Ok(()),
                Err(batch::BatchError::Failed(source)) => {
                    return Err(DatapathError::Batch { map: name, source })
                }
                Err(batch::BatchError::Unsupported) => {}
            }
        }
        let mut map: Array<_, V> = typed(&mut self.ebpf, name)?;
        for (k, v) in keys.iter().zip(values) {
            map.set(*k, *v, 0).map_err(DatapathError::map(name))?;
        }
        Ok(())
    }

    /// A handle of `LZ_DEV_COUNT` and the cells to zero in it (`uncleared`), for the install
    /// thread (one write per cell and CPU set: off the caller's loop); and whether a test
    /// asked that zeroing to fail.
    fn counters_to_clear(&mut self) -> Result<Option<(Map, Vec<u16>, bool)>, DatapathError> {
        if self.uncleared.is_empty() {
            return Ok(None);
        }
        let Some(Map::PerCpuArray(data)) = self.ebpf.map(MAP_DEV_COUNT) else {
            return Err(DatapathError::MissingMap(MAP_DEV_COUNT));
        };
        let (_, map) = dup_map(MAP_DEV_COUNT, data)?;
        #[cfg(feature = "fault-injection")]
        let fail = std::mem::take(&mut self.fail_next_clear);
        #[cfg(not(feature = "fault-injection"))]
        let fail = false;
        Ok(Some((map, self.uncleared.clone(), fail)))
    }

    /// Makes the next install's zeroing of counter cells fail (that install fails).
    #[cfg(feature = "fault-injection")]
    pub fn fail_next_counter_clear(&mut self) {
        self.fail_next_clear = true;
    }

    /// Every tracked flow with the table it is in (an iteration of both LRU flow tables: for
    /// the control API and tests, not for hot paths). A flow being promoted at that moment
    /// may be listed twice, once per table.
    pub fn flows(&mut self) -> Result<Vec<(FlowTable, FlowKey, FlowValue)>, DatapathError> {
        read_flows(&mut self.ebpf)
    }

    /// Reads back every entry one slot holds in the per-slot maps, sorted like
    /// [`MapContents`] (`ifaces` is left empty: that map is not per slot). For tests and
    /// diagnostics: it walks every map.
    pub fn read_slot(&mut self, slot: u8) -> Result<MapContents, DatapathError> {
        self.finish_sync();
        let site: Array<_, SiteConfig> = typed(&mut self.ebpf, MAP_SITE)?;
        let site = site
            .get(&u32::from(slot), 0)
            .map_err(DatapathError::map(MAP_SITE))?;
        let e = &mut self.ebpf;
        let mut c = MapContents {
            slot,
            site,
            ifaces: Vec::new(),
            dev_mac: read_where(e, MAP_DEV_MAC, |k: &MacKey| k.slot == slot)?,
            dev_ip4: read_where(e, MAP_DEV_IP4, |k: &Ip4Key| k.slot == slot)?,
            dev_ip6: read_where(e, MAP_DEV_IP6, |k: &Ip6Key| k.slot == slot)?,
            devices: read_where(e, MAP_DEVICES, |k: &DevKey| k.slot == slot)?,
            peer4: Arc::new(read_split_where(
                e,
                (MAP_PEER4, MAP_PEER4_HOST),
                PEER_KEY_FIXED_BITS + 32,
                |k: &PeerKey4| k.slot == slot,
            )?),
            peer6: Arc::new(read_split_where(
                e,
                (MAP_PEER6, MAP_PEER6_HOST),
                PEER_KEY_FIXED_BITS + 128,
                |k: &PeerKey6| k.slot == slot,
            )?),
            ports: Arc::new(read_split_where(
                e,
                (MAP_PORTS, MAP_PORTS_EXACT),
                PORT_KEY_FULL_BITS,
                |k: &PortKey| k.slot == slot,
            )?),
        };
        c.sort();
        Ok(c)
    }

    /// Entries in use and capacity of the maps whose pressure matters, for metrics. Per-slot
    /// maps count both generations against twice the per-slot capacity.
    pub fn map_usage(&mut self) -> Result<Vec<(&'static str, u64, u64)>, DatapathError> {
        map_usage(&mut self.ebpf)
    }

    /// Runs the program once on a frame (BPF_PROG_TEST_RUN); returns the XDP action.
    /// The ingress interface is the namespace's loopback (ifindex 1).
    pub fn test_run(&mut self, frame: &[u8]) -> Result<u32, DatapathError> {
        Ok(self.test_run_repeat(frame, 1)?.0)
    }

    /// [`Self::test_run`] with the frame arriving on `ifindex`, an interface of the calling
    /// thread's network namespace (the kernel refuses one that does not exist there).
    pub fn test_run_on(&mut self, frame: &[u8], ifindex: u32) -> Result<u32, DatapathError> {
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex (u32 each); the kernel wants data and data_meta 0 and data_end the
        // frame's length.
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let mut ctx = Vec::with_capacity(24);
        for field in [0, len, 0, ifindex, 0, 0u32] {
            ctx.extend_from_slice(&field.to_ne_bytes());
        }
        let prog = self.program_mut()?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..TestRunOptions::default()
        };
        Ok(prog.test_run(opts)?.return_value)
    }

    /// Runs the program `repeat` times on a frame; returns the action and the kernel's mean
    /// duration per run.
    pub fn test_run_repeat(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), DatapathError> {
        let prog = self.program_mut()?;
        let opts = TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        };
        let r = prog.test_run(opts)?;
        Ok((r.return_value, r.duration))
    }

    /// Reads the packet counters of a datapath whose maps are pinned in `dir` (another
    /// process's), summed over CPUs and indexed by [`stats_index`].
    pub fn pinned_stats(dir: &std::path::Path) -> Result<Vec<u64>, DatapathError> {
        let path = dir.join(MAP_STATS);
        let data = MapData::from_pin(&path).map_err(DatapathError::map(MAP_STATS))?;
        let map: PerCpuArray<_, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(DatapathError::map(MAP_STATS))?;
        (0..STATS_LEN)
            .map(|i| {
                map.get(&i, 0)
                    .map(|v| v.iter().sum())
                    .map_err(DatapathError::map(MAP_STATS))
            })
            .collect()
    }

    /// The highest generation recorded in the site map pinned in `dir` (another, possibly
    /// older, datapath's), if it can be read with this ABI's layout.
    pub fn pinned_generation(dir: &std::path::Path) -> Option<u64> {
        let data = MapData::from_pin(dir.join(MAP_SITE)).ok()?;
        let map: Array<_, SiteConfig> = Array::try_from(Map::Array(data)).ok()?;
        (0..2)
            .filter_map(|i| map.get(&i, 0).ok())
            .map(|s| s.generation)
            .max()
    }

    /// Copies the flows of a datapath pinned in `dir` into this one: each table into the
    /// same table when it has this ABI's layout (aya checks the sizes), or a single flow
    /// table of ABI 2 into the new table (see `legacy::FlowValueV2`). Echo flows of ABI 10
    /// and earlier are keyed anew (`legacy::directed_echo_key`). Flows keep their old
    /// generation stamps, so each is re-judged under the current policy on its next
    /// packet. Returns how many were copied.
    pub fn migrate_flows(&mut self, dir: &std::path::Path) -> Result<usize, DatapathError> {
        // A directory not named by its version is taken as this ABI's (its layout was).
        let undirected_echo =
            super::attach::abi_of(dir).is_some_and(|v| v <= legacy::LAST_UNDIRECTED_ECHO);
        let mut copied = 0;
        for table in FlowTable::ALL {
            let mut flows = match read_pinned_flows(dir, table.map()) {
                Some(f) => f,
                None if table == FlowTable::New => legacy::read_v2_flows(dir).unwrap_or_default(),
                None => Vec::new(),
            };
            if undirected_echo {
                flows = flows
                    .into_iter()
                    .map(|(k, v)| (legacy::directed_echo_key(&k, &v), v))
                    .collect();
            }
            let mut new: HashMap<_, FlowKey, FlowValue> = typed(&mut self.ebpf, table.map())?;
            for (k, v) in &flows {
                new.insert(k, v, 0)
                    .map_err(DatapathError::map(table.map()))?;
            }
            copied += flows.len();
        }
        Ok(copied)
    }

    /// Direct access to the loaded object, for the daemon's event reader and tests.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// Zeroes counter cells on every CPU.
fn clear_counters(mut map: Map, cells: &[u16]) -> Result<(), DatapathError> {
    let cpus =
        aya::util::nr_cpus().map_err(|(what, e)| DatapathError::Link(format!("{what}: {e}")))?;
    let mut map: PerCpuArray<_, DevCounters> =
        PerCpuArray::try_from(&mut map).map_err(DatapathError::map(MAP_DEV_COUNT))?;
    for cell in cells {
        let zero = aya::maps::PerCpuValues::try_from(vec![DevCounters::default(); cpus])
            .map_err(|e| DatapathError::Link(format!("{MAP_DEV_COUNT}: {e}")))?;
        map.set(u32::from(*cell), zero, 0)
            .map_err(DatapathError::map(MAP_DEV_COUNT))?;
    }
    Ok(())
}

/// Maps pinned when a pin directory is given: all of them, so a restarted daemon adopts
/// flows, counters, quarantine state and both generations.
const PINNED_MAPS: &[&str] = &[
    MAP_GEN,
    MAP_SITE,
    MAP_IFACE,
    MAP_IFACE_HIGH,
    MAP_DEV_MAC,
    MAP_DEV_IP4,
    MAP_DEV_IP6,
    MAP_DEV_ADDR_BITS,
    MAP_DEVICES,
    MAP_DEV_CELL,
    MAP_DEV_STATE,
    MAP_PEER4,
    MAP_PEER6,
    MAP_PORTS,
    MAP_PEER4_HOST,
    MAP_PEER6_HOST,
    MAP_PORTS_EXACT,
    MAP_FLOWS,
    MAP_EST_FLOWS,
    MAP_PROMOTE,
    MAP_FRAGS,
    MAP_STATS,
    MAP_DEV_COUNT,
    MAP_RULE_HITS,
    MAP_EVENTS,
    MAP_EV_BUCKET,
    MAP_DEV_EV_BUCKET,
    MAP_EV_UNKNOWN,
    MAP_EV_STATS,
    MAP_LOCAL,
    MAP_LL_OWNER,
    MAP_PROBED,
    MAP_DEV_CLAIM,
    MAP_PORT_PIN,
];

/// The [`MAP_LOCAL`] key of an address.
pub(super) fn local_key(a: &std::net::IpAddr) -> LocalKey {
    let mut addr = [0u8; 16];
    let family = match a {
        std::net::IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            FAMILY_V4
        }
        std::net::IpAddr::V6(v6) => {
            addr = v6.octets();
            FAMILY_V6
        }
    };
    LocalKey {
        family,
        _pad: [0; 3],
        addr,
    }
}

fn local_addr(k: &LocalKey) -> std::net::IpAddr {
    if k.family == FAMILY_V4 {
        std::net::IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])
    } else {
        std::net::IpAddr::from(k.addr)
    }
}

/// The flows of the table `name` pinned in `dir`, if it has this ABI's layout.
fn read_pinned_flows(dir: &std::path::Path, name: &str) -> Option<Vec<(FlowKey, FlowValue)>> {
    let data = MapData::from_pin(dir.join(name)).ok()?;
    let old = HashMap::<_, FlowKey, FlowValue>::try_from(Map::LruHashMap(data)).ok()?;
    Some(old.iter().filter_map(Result::ok).collect())
}

mod cells;
pub(crate) mod legacy;
mod reader;
mod slots;

use reader::*;
pub use reader::{DatapathReader, FlowTables};
use slots::*;
