//! Writing a generation into a slot: the slot's maps, the delta against what the slot holds,
//! batched or single writes, and reading a slot back.

use super::*;

/// The maps one slot's generation lives in, besides `LZ_GEN`.
pub(super) struct SlotMaps<'a> {
    site: &'a mut Map,
    devices: &'a mut Map,
    dev_cell: &'a mut Map,
    dev_mac: &'a mut Map,
    dev_ip4: &'a mut Map,
    dev_ip6: &'a mut Map,
    addr_bits: &'a mut Map,
    peer4: &'a mut Map,
    peer6: &'a mut Map,
    ports: &'a mut Map,
    peer4_host: &'a mut Map,
    peer6_host: &'a mut Map,
    ports_exact: &'a mut Map,
}

impl<'a> SlotMaps<'a> {
    pub(super) fn of(
        maps: impl IntoIterator<Item = (&'a str, &'a mut Map)>,
    ) -> Result<Self, DatapathError> {
        let mut maps: std::collections::BTreeMap<&str, &mut Map> = maps.into_iter().collect();
        let mut take =
            |name: &'static str| maps.remove(name).ok_or(DatapathError::MissingMap(name));
        Ok(SlotMaps {
            site: take(MAP_SITE)?,
            devices: take(MAP_DEVICES)?,
            dev_cell: take(MAP_DEV_CELL)?,
            dev_mac: take(MAP_DEV_MAC)?,
            dev_ip4: take(MAP_DEV_IP4)?,
            dev_ip6: take(MAP_DEV_IP6)?,
            addr_bits: take(MAP_DEV_ADDR_BITS)?,
            peer4: take(MAP_PEER4)?,
            peer6: take(MAP_PEER6)?,
            ports: take(MAP_PORTS)?,
            peer4_host: take(MAP_PEER4_HOST)?,
            peer6_host: take(MAP_PEER6_HOST)?,
            ports_exact: take(MAP_PORTS_EXACT)?,
        })
    }
}

/// A second handle on each of a slot's maps (duplicated fds), for a thread of its own.
pub(super) struct OwnedSlotMaps(Vec<(&'static str, Map)>);

impl OwnedSlotMaps {
    /// Duplicates the handles of the object's plain maps (the slot's are among them;
    /// [`SlotMaps::of`] picks those).
    pub(super) fn dup(ebpf: &Ebpf) -> Result<Self, DatapathError> {
        PINNED_MAPS
            .iter()
            .filter_map(|&name| match ebpf.map(name)? {
                Map::Array(d) | Map::HashMap(d) | Map::LpmTrie(d) => Some(dup_map(name, d)),
                _ => None,
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub(super) fn borrow(&mut self) -> Result<SlotMaps<'_>, DatapathError> {
        SlotMaps::of(self.0.iter_mut().map(|(n, m)| (*n, m)))
    }
}

/// Makes the calling thread yield to the daemon's: a background slot sync must not slow a
/// reload or a quarantine down. Best effort (an error leaves the default priority).
/// Returns the thread's id.
pub(super) fn lower_priority() -> i32 {
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
        tid
    }
}

/// Puts thread `tid` (of this process, still running) back to the default priority; 0: the
/// thread has not started, nothing to do.
pub(super) fn restore_priority(tid: i32) {
    if tid > 0 {
        // SAFETY: a plain syscall; a thread that has exited meanwhile makes it fail (ESRCH).
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 0);
        }
    }
}

/// Brings a slot holding `held` to `want`: removes the keys `want` lacks, writes the
/// entries that are new or changed, and the slot's site settings. The port map holds most
/// entries (every rule's port blocks), so it is written on a second thread while the
/// others are written here.
pub(super) fn write_slot(
    m: SlotMaps<'_>,
    held: &MapContents,
    want: &MapContents,
) -> Result<(), DatapathError> {
    let ports = Split {
        trie: (m.ports, MAP_PORTS),
        hash: (m.ports_exact, MAP_PORTS_EXACT),
        full: PORT_KEY_FULL_BITS,
    };
    let peer4 = Split {
        trie: (m.peer4, MAP_PEER4),
        hash: (m.peer4_host, MAP_PEER4_HOST),
        full: PEER_KEY_FIXED_BITS + 32,
    };
    let peer6 = Split {
        trie: (m.peer6, MAP_PEER6),
        hash: (m.peer6_host, MAP_PEER6_HOST),
        full: PEER_KEY_FIXED_BITS + 128,
    };
    std::thread::scope(|s| {
        let big = s.spawn(|| ports.apply(&held.ports, &want.ports));
        // One delta of the records serves both maps that hold them (by id, by cell).
        let devices = delta(&held.devices, &want.devices);
        let rest = apply_cell_delta(m.dev_cell, want.slot, &held.devices, &devices)
            .and_then(|()| write_delta(m.devices, MAP_DEVICES, &devices))
            .and_then(|()| apply_delta(m.dev_mac, MAP_DEV_MAC, &held.dev_mac, &want.dev_mac))
            .and_then(|()| apply_delta(m.dev_ip4, MAP_DEV_IP4, &held.dev_ip4, &want.dev_ip4))
            .and_then(|()| apply_delta(m.dev_ip6, MAP_DEV_IP6, &held.dev_ip6, &want.dev_ip6))
            .and_then(|()| peer4.apply(&held.peer4, &want.peer4))
            .and_then(|()| peer6.apply(&held.peer6, &want.peer6));
        let big = big
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        rest.and(big)
    })?;
    // Whole, not a delta: 32 KiB in one write, and the slot's bits match its addresses
    // even after an earlier write of the slot failed half-way.
    let mut bits: Array<_, AddrBits> =
        Array::try_from(m.addr_bits).map_err(DatapathError::map(MAP_DEV_ADDR_BITS))?;
    bits.set(u32::from(want.slot), addr_bits(want), 0)
        .map_err(DatapathError::map(MAP_DEV_ADDR_BITS))?;
    let mut site: Array<_, SiteConfig> =
        Array::try_from(m.site).map_err(DatapathError::map(MAP_SITE))?;
    site.set(u32::from(want.slot), want.site, 0)
        .map_err(DatapathError::map(MAP_SITE))
}

/// The slot's [`AddrBits`]: a bit for each address of its identity maps.
pub(super) fn addr_bits(c: &MapContents) -> Box<AddrBits> {
    let mut bits = Box::<AddrBits>::default();
    let v4 = c.dev_ip4.iter().map(|(k, _)| AddrBits::v4(k.addr));
    bits.extend(v4.chain(c.dev_ip6.iter().map(|(k, _)| AddrBits::v6(k.addr))));
    bits
}

/// On adopting pinned maps: sets, in each slot's address bits, the bits of the addresses
/// its identity maps hold. OR-ed in, never cleared, so a program still attached keeps
/// every bit it relied on, and a bits pin written by another build, or lost (aya then
/// creates the map empty), leaves no adopted address without its bit in the maps this
/// daemon's program reads. (A lost pin cannot be mended for the program still attached
/// until this one replaces it: that one reads its own, orphaned, map.) The next write of
/// each slot makes its bits exact. A key that cannot be read fails the load: a short list
/// would leave bits clear.
pub(super) fn or_adopted_addr_bits(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let v4: Vec<Ip4Key> = all_keys::<Ip4Key, Device>(ebpf, MAP_DEV_IP4)?;
    let v6: Vec<Ip6Key> = all_keys::<Ip6Key, Device>(ebpf, MAP_DEV_IP6)?;
    let mut map: Array<&mut MapData, AddrBits> = typed(ebpf, MAP_DEV_ADDR_BITS)?;
    for slot in 0..2u8 {
        let mut bits = Box::new(
            map.get(&u32::from(slot), 0)
                .map_err(DatapathError::map(MAP_DEV_ADDR_BITS))?,
        );
        bits.extend(
            v4.iter()
                .filter(|k| k.slot == slot)
                .map(|k| AddrBits::v4(k.addr))
                .chain(
                    v6.iter()
                        .filter(|k| k.slot == slot)
                        .map(|k| AddrBits::v6(k.addr)),
                ),
        );
        map.set(u32::from(slot), bits, 0)
            .map_err(DatapathError::map(MAP_DEV_ADDR_BITS))?;
    }
    Ok(())
}

/// Every key of hash map `name`, or the error of the first that cannot be read.
fn all_keys<K: Pod, V: Pod>(ebpf: &mut Ebpf, name: &'static str) -> Result<Vec<K>, DatapathError> {
    let map: HashMap<&mut MapData, K, V> = typed(ebpf, name)?;
    map.keys()
        .map(|k| k.map_err(DatapathError::map(name)))
        .collect()
}

/// The difference between two lists sorted by key: keys only in `held`, and entries of
/// `want` that `held` lacks or holds with another value.
pub(super) fn delta<'a, K: Ord + Copy, V: PartialEq>(
    held: &'a [(K, V)],
    want: &'a [(K, V)],
) -> (Vec<K>, Vec<&'a (K, V)>) {
    let (mut gone, mut write) = (Vec::new(), Vec::new());
    let (mut h, mut w) = (held.iter().peekable(), want.iter().peekable());
    loop {
        match (h.peek(), w.peek()) {
            (None, None) => break,
            (Some(old), None) => {
                gone.push(old.0);
                h.next();
            }
            (None, Some(new)) => {
                write.push(*new);
                w.next();
            }
            (Some(old), Some(new)) => match old.0.cmp(&new.0) {
                std::cmp::Ordering::Less => {
                    gone.push(old.0);
                    h.next();
                }
                std::cmp::Ordering::Greater => {
                    write.push(*new);
                    w.next();
                }
                std::cmp::Ordering::Equal => {
                    if old.1 != new.1 {
                        write.push(*new);
                    }
                    h.next();
                    w.next();
                }
            },
        }
    }
    (gone, write)
}

pub(super) fn apply_delta<K: Pod + Ord, V: Pod + PartialEq>(
    map: &mut Map,
    name: &'static str,
    held: &[(K, V)],
    want: &[(K, V)],
) -> Result<(), DatapathError> {
    write_delta(map, name, &delta(held, want))
}

/// Writes a [`delta`] into a hash map: its keys gone removed, its entries written.
fn write_delta<K: Pod, V: Pod>(
    map: &mut Map,
    name: &'static str,
    (gone, write): &(Vec<K>, Vec<&(K, V)>),
) -> Result<(), DatapathError> {
    let (keys, values): (Vec<K>, Vec<V>) = write.iter().map(|e| **e).unzip();
    write_entries::<HashMap<&mut MapData, K, V>, _, _>(map, name, gone, &keys, &values)
}

/// Brings a slot's records by cell ([`MAP_DEV_CELL`]) from `held` (the slot's records by
/// id, sorted, cells assigned) by the records' `delta`: zeroes the cells of records gone,
/// unless a new record takes the cell, and writes the records new or changed. A device
/// keeps its cell while it is in either slot (see `cells`), so a changed record is at its
/// old cell. Each index is written once, so one batch says everything.
pub(super) fn apply_cell_delta(
    map: &mut Map,
    slot: u8,
    held: &[(DevKey, Device)],
    (gone, write): &(Vec<DevKey>, Vec<&(DevKey, Device)>),
) -> Result<(), DatapathError> {
    let taken: std::collections::HashSet<u16> = write.iter().map(|(_, d)| d.cell).collect();
    let freed: std::collections::BTreeSet<u16> = gone
        .iter()
        .filter_map(|k| held.binary_search_by_key(k, |(k, _)| *k).ok())
        .map(|i| held[i].1.cell)
        .filter(|c| !taken.contains(c))
        .collect();
    let (mut keys, mut values): (Vec<u32>, Vec<Device>) = freed
        .into_iter()
        .map(|c| (dev_cell_index(slot, c), Device::default()))
        .unzip();
    for (_, d) in write {
        keys.push(dev_cell_index(slot, d.cell));
        values.push(*d);
    }
    write_array(map, MAP_DEV_CELL, &keys, &values)
}

/// Writes `values` at `keys` (distinct indexes) of an array: batched where the kernel has
/// it, else one call per entry.
fn write_array<V: Pod>(
    map: &mut Map,
    name: &'static str,
    keys: &[u32],
    values: &[V],
) -> Result<(), DatapathError> {
    if keys.is_empty() {
        return Ok(());
    }
    let Map::Array(data) = &*map else {
        return Err(DatapathError::MissingMap(name));
    };
    match batch::update(data.fd().as_fd(), keys, values) {
        Ok(()) => return Ok(()),
        Err(batch::BatchError::Failed(source)) => {
            return Err(DatapathError::Batch { map: name, source })
        }
        Err(batch::BatchError::Unsupported) => {}
    }
    let mut array: Array<&mut MapData, V> =
        Array::try_from(map).map_err(DatapathError::map(name))?;
    for (k, v) in keys.iter().zip(values) {
        array.set(*k, *v, 0).map_err(DatapathError::map(name))?;
    }
    Ok(())
}

/// [`apply_delta`] for LPM entries `(prefix length, key, value)`, sorted by (key, length).
pub(super) fn apply_lpm_delta<K: Pod + Ord, V: Pod + PartialEq>(
    map: &mut Map,
    name: &'static str,
    held: &Arc<Vec<(u32, K, V)>>,
    want: &Arc<Vec<(u32, K, V)>>,
) -> Result<(), DatapathError> {
    // The very list the slot holds (a generation patched from the same compile): nothing
    // to compare or write.
    if Arc::ptr_eq(held, want) {
        return Ok(());
    }
    let keyed = |l: &[(u32, K, V)]| -> Vec<((K, u32), V)> {
        l.iter().map(|(len, k, v)| ((*k, *len), *v)).collect()
    };
    let (held, want) = (keyed(held), keyed(want));
    let (gone, write) = delta(&held, &want);
    let gone: Vec<Key<K>> = gone.into_iter().map(|(k, len)| Key::new(len, k)).collect();
    let (keys, values): (Vec<Key<K>>, Vec<V>) = write
        .into_iter()
        .map(|((k, len), v)| (Key::new(*len, *k), *v))
        .unzip();
    write_entries::<LpmTrie<&mut MapData, K, V>, _, _>(map, name, &gone, &keys, &values)
}

/// Entries `(prefix length, key, value)` of a longest-prefix map, as [`MapContents`] holds them.
pub(super) type LpmList<K, V> = Arc<Vec<(u32, K, V)>>;

/// A longest-prefix list stored as two maps: its `full`-length entries in a hash, the rest
/// in a trie (lazaret_abi, *Exact entries in hashes*).
pub(super) struct Split<'a> {
    trie: (&'a mut Map, &'static str),
    hash: (&'a mut Map, &'static str),
    full: u32,
}

impl Split<'_> {
    /// [`apply_lpm_delta`] over the pair: each map gets the delta of its part of the lists.
    pub(super) fn apply<K: Pod + Ord, V: Pod + PartialEq>(
        self,
        held: &Arc<Vec<(u32, K, V)>>,
        want: &Arc<Vec<(u32, K, V)>>,
    ) -> Result<(), DatapathError> {
        // The very list the slot holds: nothing to split, compare or write.
        if Arc::ptr_eq(held, want) {
            return Ok(());
        }
        let full = self.full;
        // Both parts keep the list's order: by key (exact), by (key, length) (the rest).
        let split = |l: &[(u32, K, V)]| -> (Vec<(K, V)>, LpmList<K, V>) {
            let (exact, rest): (Vec<_>, Vec<_>) = l.iter().partition(|e| e.0 == full);
            (
                exact.into_iter().map(|&(_, k, v)| (k, v)).collect(),
                Arc::new(rest.into_iter().copied().collect()),
            )
        };
        let (held_exact, held_rest) = split(held);
        let (want_exact, want_rest) = split(want);
        apply_delta(self.hash.0, self.hash.1, &held_exact, &want_exact)?;
        apply_lpm_delta(self.trie.0, self.trie.1, &held_rest, &want_rest)
    }
}

/// A typed map that takes single removals and writes: the fallback of [`write_entries`].
pub(super) trait SingleWrites<'a, K, V>: Sized {
    fn open(map: &'a mut Map) -> Result<Self, aya::maps::MapError>;
    fn remove_one(&mut self, k: &K) -> Result<(), aya::maps::MapError>;
    fn insert_one(&mut self, k: &K, v: &V) -> Result<(), aya::maps::MapError>;
}

impl<'a, K: Pod, V: Pod> SingleWrites<'a, K, V> for HashMap<&'a mut MapData, K, V> {
    fn open(map: &'a mut Map) -> Result<Self, aya::maps::MapError> {
        Self::try_from(map)
    }
    fn remove_one(&mut self, k: &K) -> Result<(), aya::maps::MapError> {
        self.remove(k)
    }
    fn insert_one(&mut self, k: &K, v: &V) -> Result<(), aya::maps::MapError> {
        self.insert(k, v, 0)
    }
}

impl<'a, K: Pod, V: Pod> SingleWrites<'a, Key<K>, V> for LpmTrie<&'a mut MapData, K, V> {
    fn open(map: &'a mut Map) -> Result<Self, aya::maps::MapError> {
        Self::try_from(map)
    }
    fn remove_one(&mut self, k: &Key<K>) -> Result<(), aya::maps::MapError> {
        self.remove(k)
    }
    fn insert_one(&mut self, k: &Key<K>, v: &V) -> Result<(), aya::maps::MapError> {
        self.insert(k, v, 0)
    }
}

/// Whether a removal failed because the key was not there: aya reports a lookup's miss as
/// `KeyNotFound`, but a removal's as the syscall's ENOENT.
pub(super) fn not_there(e: &aya::maps::MapError) -> bool {
    match e {
        aya::maps::MapError::KeyNotFound => true,
        aya::maps::MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Deletes `gone` from `map`, then writes `keys[i] → values[i]`: in batches (see
/// [`batch`]), or one entry per call through `T` where the kernel has no batch operation
/// for the map. Deletes come first so that a full map has room for the writes.
pub(super) fn write_entries<'a, T: SingleWrites<'a, K, V>, K: Pod, V: Pod>(
    map: &'a mut Map,
    name: &'static str,
    gone: &[K],
    keys: &[K],
    values: &[V],
) -> Result<(), DatapathError> {
    let fd = match &*map {
        Map::HashMap(data) | Map::LpmTrie(data) => Some(data.fd().as_fd()),
        _ => None,
    };
    let batched =
        fd.map(|fd| batch::delete(fd, gone).and_then(|()| batch::update(fd, keys, values)));
    match batched {
        Some(Ok(())) => return Ok(()),
        Some(Err(batch::BatchError::Failed(source))) => {
            return Err(DatapathError::Batch { map: name, source })
        }
        // Without batch support, what is left is written one entry per call. Deletes are
        // idempotent, so repeating those already done is harmless.
        None | Some(Err(batch::BatchError::Unsupported)) => {}
    }
    let mut map = T::open(map).map_err(DatapathError::map(name))?;
    for k in gone {
        match map.remove_one(k) {
            Ok(()) => {}
            Err(e) if not_there(&e) => {}
            Err(e) => return Err(DatapathError::map(name)(e)),
        }
    }
    for (k, v) in keys.iter().zip(values) {
        map.insert_one(k, v).map_err(DatapathError::map(name))?;
    }
    Ok(())
}

pub(super) fn read_where<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    pred: impl Fn(&K) -> bool,
) -> Result<Vec<(K, V)>, DatapathError> {
    let map: HashMap<&mut MapData, K, V> = typed(ebpf, name)?;
    let keys: Vec<K> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| pred(k))
        .collect();
    keys.into_iter()
        .map(|k| Ok((k, map.get(&k, 0).map_err(DatapathError::map(name))?)))
        .collect()
}

pub(super) fn read_lpm_where<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    pred: impl Fn(&K) -> bool,
) -> Result<Vec<(u32, K, V)>, DatapathError> {
    let map: LpmTrie<&mut MapData, K, V> = typed(ebpf, name)?;
    let keys: Vec<Key<K>> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| pred(&k.data()))
        .collect();
    keys.into_iter()
        .map(|k| {
            let v = map.get(&k, 0).map_err(DatapathError::map(name))?;
            Ok((k.prefix_len(), k.data(), v))
        })
        .collect()
}

/// The entries of a [`Split`] pair as one longest-prefix list (unsorted): the trie's, and
/// the hash's at length `full`.
pub(super) fn read_split_where<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    (trie, hash): (&'static str, &'static str),
    full: u32,
    pred: impl Fn(&K) -> bool,
) -> Result<Vec<(u32, K, V)>, DatapathError> {
    let mut all = read_lpm_where(ebpf, trie, &pred)?;
    let exact: Vec<(K, V)> = read_where(ebpf, hash, &pred)?;
    all.extend(exact.into_iter().map(|(k, v)| (full, k, v)));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use aya::maps::IterableMap;

    use super::*;

    /// Applies `held → want` to a fresh LPM trie holding `held` but one entry, through
    /// batches or (as on a kernel without them) single writes; returns what the trie then
    /// holds.
    fn lpm_after(
        held: &[(u32, u32, u32)],
        want: &[(u32, u32, u32)],
        batched: bool,
    ) -> Vec<(u32, u32, u32)> {
        let trie = LpmTrie::<MapData, u32, u32>::create(64, 1).expect("lpm trie (needs CAP_BPF)");
        let mut map = Map::LpmTrie(
            MapData::from_fd(trie.map().fd().as_fd().try_clone_to_owned().expect("dup"))
                .expect("map data"),
        );
        let (empty, held, want) = (
            Arc::new(Vec::new()),
            Arc::new(held.to_vec()),
            Arc::new(want.to_vec()),
        );
        // The map lacks an entry it is said to hold that the delta removes: that removal
        // must be skipped, not fail.
        let gone = held
            .iter()
            .position(|h| !want.iter().any(|w| (w.0, w.1) == (h.0, h.1)))
            .expect("the delta removes an entry");
        let mut filled = held.to_vec();
        filled.remove(gone);
        let filled = Arc::new(filled);
        apply_lpm_delta(&mut map, "test", &empty, &filled).expect("fill");
        batch::PRETEND_UNSUPPORTED.with(|p| p.set(!batched));
        let applied = apply_lpm_delta(&mut map, "test", &held, &want);
        batch::PRETEND_UNSUPPORTED.with(|p| p.set(false));
        applied.expect("apply");
        let mut out: Vec<(u32, u32, u32)> = trie
            .iter()
            .map(|e| e.expect("entry"))
            .map(|(k, v)| (k.prefix_len(), k.data(), v))
            .collect();
        out.sort_by_key(|&(len, k, _)| (k, len));
        out
    }

    #[test]
    fn batched_and_single_writes_leave_the_same_entries() {
        let held = [
            (24, 0x0a00_0000, 1),
            (32, 0x0a00_0001, 2),
            (16, 0x0b00_0000, 3),
        ];
        let want = [
            (24, 0x0a00_0000, 9),
            (32, 0x0a00_0002, 2),
            (8, 0x0c00_0000, 4),
        ];
        let key = |&(len, k, v): &(u32, u32, u32)| (len, u32::to_be(k), v);
        let (mut held, mut want): (Vec<_>, Vec<_>) = (
            held.iter().map(key).collect(),
            want.iter().map(key).collect(),
        );
        // Sorted as MapContents keeps them (by key, then length).
        held.sort_by_key(|&(len, k, _)| (k, len));
        want.sort_by_key(|&(len, k, _)| (k, len));
        assert_eq!(lpm_after(&held, &want, true), want);
        assert_eq!(lpm_after(&held, &want, false), want);
    }

    #[test]
    fn delta_removes_what_is_gone_and_writes_what_is_new_or_changed() {
        let held = [(1, 'a'), (2, 'b'), (4, 'd'), (6, 'f')];
        let want = [(0, 'z'), (2, 'b'), (4, 'D'), (5, 'e')];
        let (gone, write) = delta(&held, &want);
        assert_eq!(gone, vec![1, 6]);
        assert_eq!(write, vec![&(0, 'z'), &(4, 'D'), &(5, 'e')]);
    }

    #[test]
    fn delta_of_equal_lists_is_empty_and_from_nothing_is_everything() {
        let list = [(1, 'a'), (2, 'b')];
        assert_eq!(delta(&list, &list), (vec![], vec![]));
        let (gone, write) = delta(&[], &list);
        assert!(gone.is_empty());
        assert_eq!(write, vec![&(1, 'a'), &(2, 'b')]);
        let (gone, write) = delta(&list, &[]);
        assert_eq!(gone, vec![1, 2]);
        assert!(write.is_empty());
    }
}
