//! Which cell of `LZ_DEV_COUNT`, `LZ_DEV_STATE` and `LZ_DEV_EVBUCKET` is each device's.
//!
//! The program reads a device's runtime state (quarantine, epoch) and counts its packets in
//! two arrays at the cell its record names (`Device::cell`): array lookups the verifier
//! inlines, where hashes by id cost two hash lookups per packet. A cell must not move
//! while the device is judged, or counts would pass from one device to another across a
//! reload and a quarantine could be read from another device's cell. So cells are
//! assigned here, not by the compiler: a device keeps its cell while its record is in
//! either slot; a cell whose device has left both is free again. A cell given to a device
//! is first zeroed in `LZ_DEV_COUNT` and `LZ_DEV_EVBUCKET` (a full event budget) and set
//! in `LZ_DEV_STATE` to the state the controller
//! last gave that device (see `Datapath::set_device_state`), before any record naming it
//! is written. (A packet still judged by the generation before last in the grace period
//! after a flip could count into a cell just given away: a stray count; its verdict was
//! the old generation's, read before.)
//!
//! After a restart the cells are read back from the records pinned in `LZ_DEVICES`.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
};

use lazaret_abi::{Device, COUNTER_SLOTS};

use super::MapContents;
use crate::dataplane::xdp::DatapathError;

/// Cells by device id, shared with the readers that translate ids to cells.
pub(crate) type Shared = Arc<Mutex<HashMap<u64, u16>>>;

#[derive(Default)]
pub(crate) struct Cells {
    by_id: Shared,
    free: Vec<u16>,
    /// The next never-used cell.
    next: u32,
    /// The devices whose records each slot holds, as far as known.
    slot_ids: [HashSet<u64>; 2],
}

impl Cells {
    /// Cells as the records pinned in both slots name them.
    pub(crate) fn adopt(records: impl IntoIterator<Item = (u8, Device)>) -> Cells {
        let mut c = Cells::default();
        let mut used = HashSet::new();
        {
            let mut by_id = c.by_id.lock().unwrap_or_else(PoisonError::into_inner);
            for (slot, d) in records {
                by_id.insert(d.id, d.cell);
                used.insert(d.cell);
                if let Some(ids) = c.slot_ids.get_mut(usize::from(slot & 1)) {
                    ids.insert(d.id);
                }
            }
        }
        c.next = used.iter().max().map_or(0, |m| u32::from(*m) + 1);
        c.free = (0..c.next)
            .filter_map(|i| u16::try_from(i).ok())
            .filter(|i| !used.contains(i))
            .collect();
        c
    }

    /// Every (device id, cell).
    pub(crate) fn all(&self) -> Vec<(u64, u16)> {
        lock(&self.by_id).iter().map(|(id, c)| (*id, *c)).collect()
    }

    pub(crate) fn shared(&self) -> Shared {
        self.by_id.clone()
    }

    pub(crate) fn cell(&self, id: u64) -> Option<u16> {
        lock(&self.by_id).get(&id).copied()
    }

    /// Gives every device of `contents` its cell (the one it has, or a free one) and stamps
    /// the records. The devices kept are those of `contents` and of the other slot (which
    /// packets are judged by until the flip); every other cell is freed. Returns the
    /// (device, cell) given out now, which the caller readies before the slot is written.
    pub(crate) fn assign(
        &mut self,
        contents: &mut MapContents,
    ) -> Result<Vec<(u64, u16)>, DatapathError> {
        let slot = usize::from(contents.slot & 1);
        let ids: HashSet<u64> = contents.devices.iter().map(|(_, d)| d.id).collect();
        let mut by_id = lock(&self.by_id);
        let other = &self.slot_ids[1 - slot];
        let leaving: Vec<u64> = by_id
            .keys()
            .filter(|id| !ids.contains(id) && !other.contains(id))
            .copied()
            .collect();
        for id in leaving {
            if let Some(cell) = by_id.remove(&id) {
                self.free.push(cell);
            }
        }
        let mut fresh = Vec::new();
        for id in &ids {
            if by_id.contains_key(id) {
                continue;
            }
            let cell = match self.free.pop() {
                Some(cell) => cell,
                None if self.next < COUNTER_SLOTS => {
                    let cell = u16::try_from(self.next).map_err(|_| exhausted())?;
                    self.next += 1;
                    cell
                }
                None => return Err(exhausted()),
            };
            by_id.insert(*id, cell);
            fresh.push((*id, cell));
        }
        stamp_with(&by_id, contents)?;
        drop(by_id);
        self.slot_ids[slot] = ids;
        Ok(fresh)
    }

    /// Records that `slot` is being brought to the other slot's devices (the retired
    /// slot's sync): their cells are assigned already.
    pub(crate) fn mirror(&mut self, slot: u8) {
        let slot = usize::from(slot & 1);
        self.slot_ids[slot] = self.slot_ids[1 - slot].clone();
    }
}

/// Stamps the cells of `by_id` on every record of `contents`; a device without one is an
/// error (the caller assigns first).
pub(crate) fn stamp(shared: &Shared, contents: &mut MapContents) -> Result<(), DatapathError> {
    stamp_with(&lock(shared), contents)
}

fn stamp_with(by_id: &HashMap<u64, u16>, contents: &mut MapContents) -> Result<(), DatapathError> {
    let records = contents.dev_mac.iter_mut().map(|(_, d)| d);
    let records = records.chain(contents.dev_ip4.iter_mut().map(|(_, d)| d));
    let records = records.chain(contents.dev_ip6.iter_mut().map(|(_, d)| d));
    for d in records.chain(contents.devices.iter_mut().map(|(_, d)| d)) {
        d.cell = *by_id
            .get(&d.id)
            .ok_or_else(|| DatapathError::Link(format!("device {:#x} has no cell", d.id)))?;
    }
    Ok(())
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, HashMap<u64, u16>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

fn exhausted() -> DatapathError {
    DatapathError::Link(format!(
        "no free device cell: the two generations hold more than {COUNTER_SLOTS} devices"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazaret_abi::DevKey;

    fn contents(slot: u8, ids: &[u64]) -> MapContents {
        MapContents {
            slot,
            devices: ids
                .iter()
                .map(|&id| {
                    let key = DevKey {
                        slot,
                        _pad: [0; 7],
                        id,
                    };
                    (
                        key,
                        Device {
                            id,
                            ..Device::default()
                        },
                    )
                })
                .collect(),
            ..MapContents::default()
        }
    }

    fn cells_of(c: &MapContents) -> HashMap<u64, u16> {
        c.devices.iter().map(|(_, d)| (d.id, d.cell)).collect()
    }

    #[test]
    fn a_device_keeps_its_cell_across_generations_and_a_freed_cell_is_reused_once_gone(
    ) -> Result<(), DatapathError> {
        let mut cells = Cells::default();
        let mut g1 = contents(1, &[10, 20, 30]);
        assert_eq!(cells.assign(&mut g1)?.len(), 3);
        let first = cells_of(&g1);
        // Generation 2 drops 20 and adds 40: 20 is still in slot 1 (active), so it keeps its
        // cell, and 40 gets a new one.
        let mut g2 = contents(0, &[10, 30, 40]);
        let fresh = cells.assign(&mut g2)?;
        assert_eq!(fresh.len(), 1);
        assert_eq!(cells_of(&g2)[&10], first[&10]);
        assert_eq!(cells_of(&g2)[&30], first[&30]);
        assert!(!first.values().any(|c| *c == cells_of(&g2)[&40]));
        // Generation 3 (slot 1 again) adds 50: 20 is in neither slot now, its cell is free
        // and given to 50, reported fresh (to be zeroed).
        let mut g3 = contents(1, &[10, 30, 40, 50]);
        let fresh = cells.assign(&mut g3)?;
        assert_eq!(fresh, vec![(50, first[&20])]);
        assert_eq!(cells_of(&g3)[&50], first[&20]);
        assert_eq!(cells.cell(20), None);
        Ok(())
    }

    #[test]
    fn cells_are_read_back_from_the_pinned_records() -> Result<(), DatapathError> {
        let mut cells = Cells::default();
        let mut g1 = contents(1, &[10, 20]);
        cells.assign(&mut g1)?;
        let mut g2 = contents(0, &[10, 30]);
        cells.assign(&mut g2)?;
        let records = g1
            .devices
            .iter()
            .chain(&g2.devices)
            .map(|(k, d)| (k.slot, *d));
        let mut again = Cells::adopt(records);
        for id in [10, 20, 30] {
            assert_eq!(again.cell(id), cells.cell(id), "device {id}");
        }
        // A new device after the restart gets a cell no pinned record uses.
        let mut g3 = contents(1, &[10, 30, 40]);
        again.assign(&mut g3)?;
        let taken: HashSet<u16> = [10, 30].iter().filter_map(|id| again.cell(*id)).collect();
        assert!(!taken.contains(&cells_of(&g3)[&40]));
        Ok(())
    }

    #[test]
    fn every_record_of_a_device_is_stamped_with_its_cell() -> Result<(), DatapathError> {
        let mut cells = Cells::default();
        let mut c = contents(1, &[10]);
        c.dev_ip4.push((
            lazaret_abi::Ip4Key {
                slot: 1,
                _pad: [0; 3],
                addr: [10, 0, 0, 1],
            },
            Device {
                id: 10,
                ..Device::default()
            },
        ));
        cells.assign(&mut c)?;
        assert_eq!(c.dev_ip4[0].1.cell, c.devices[0].1.cell);
        let mut unknown = contents(0, &[99]);
        assert!(stamp(&cells.shared(), &mut unknown).is_err());
        Ok(())
    }
}
