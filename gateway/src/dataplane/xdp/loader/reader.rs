//! Reading the maps: the typed accessors the loader and [`DatapathReader`] share (through
//! [`MapSource`]), counters summed over CPUs, and map usage.

use super::*;

/// Where maps are found by name: the loaded object, or a [`DatapathReader`]'s handles.
pub(super) trait MapSource {
    fn find(&mut self, name: &'static str) -> Option<&mut Map>;
}

impl MapSource for Ebpf {
    fn find(&mut self, name: &'static str) -> Option<&mut Map> {
        self.map_mut(name)
    }
}

/// Maps by name: the handles a [`DatapathReader`] or [`FlowTables`] holds.
pub(super) struct Maps(Vec<(&'static str, Map)>);

impl MapSource for Maps {
    fn find(&mut self, name: &'static str) -> Option<&mut Map> {
        self.0.iter_mut().find(|(n, _)| *n == name).map(|(_, m)| m)
    }
}

pub(super) fn map_mut<'a, S: MapSource>(
    src: &'a mut S,
    name: &'static str,
) -> Result<&'a mut Map, DatapathError> {
    src.find(name).ok_or(DatapathError::MissingMap(name))
}

/// A typed view of a map by name.
pub(super) fn typed<'a, T, S: MapSource>(
    src: &'a mut S,
    name: &'static str,
) -> Result<T, DatapathError>
where
    T: TryFrom<&'a mut Map, Error = aya::maps::MapError>,
{
    T::try_from(map_mut(src, name)?).map_err(DatapathError::map(name))
}

pub(super) fn count_keys<K: Pod, V: Pod, S: MapSource>(
    ebpf: &mut S,
    name: &'static str,
) -> Result<u64, DatapathError> {
    let map: HashMap<&mut MapData, K, V> = typed(ebpf, name)?;
    Ok(map.keys().filter(Result::is_ok).count() as u64)
}

/// Counters of the device counted in `cell`, summed over CPUs.
pub(super) fn device_counters<S: MapSource>(
    src: &mut S,
    cell: u16,
) -> Result<DeviceCounterTotals, DatapathError> {
    let map: PerCpuArray<_, DevCounters> = typed(src, MAP_DEV_COUNT)?;
    let values = map
        .get(&u32::from(cell), 0)
        .map_err(DatapathError::map(MAP_DEV_COUNT))?;
    let mut t = DeviceCounterTotals::default();
    for c in values.iter() {
        t.allowed_packets += c.allowed_packets;
        t.allowed_bytes += c.allowed_bytes;
        t.denied_packets += c.denied_packets;
        t.denied_bytes += c.denied_bytes;
        t.last_seen_ns = t.last_seen_ns.max(c.last_seen_ns);
    }
    Ok(t)
}

/// Entries in use and capacity of the maps whose pressure matters, for metrics. Per-slot
/// maps count both generations against twice the per-slot capacity.
pub(super) fn map_usage<S: MapSource>(
    src: &mut S,
) -> Result<Vec<(&'static str, u64, u64)>, DatapathError> {
    Ok(vec![
        (
            MAP_FLOWS,
            count_keys::<FlowKey, FlowValue, _>(src, MAP_FLOWS)?,
            u64::from(MAX_FLOWS),
        ),
        (
            MAP_EST_FLOWS,
            count_keys::<FlowKey, FlowValue, _>(src, MAP_EST_FLOWS)?,
            u64::from(MAX_EST_FLOWS),
        ),
        (
            MAP_DEVICES,
            count_keys::<DevKey, Device, _>(src, MAP_DEVICES)?,
            2 * u64::from(MAX_DEVICES),
        ),
        (
            MAP_DEV_IP4,
            count_keys::<Ip4Key, Device, _>(src, MAP_DEV_IP4)?,
            2 * u64::from(MAX_DEVICE_ADDRS),
        ),
        (
            MAP_DEV_IP6,
            count_keys::<Ip6Key, Device, _>(src, MAP_DEV_IP6)?,
            2 * u64::from(MAX_DEVICE_ADDRS),
        ),
        (
            MAP_FRAGS,
            count_keys::<FragKey, FragValue, _>(src, MAP_FRAGS)?,
            u64::from(MAX_FRAGS),
        ),
    ])
}

/// Duplicated handles of the maps the daemon reads for its metrics, so the reads (a big
/// policy's map entries counted one key at a time, every device's counters) happen on a
/// thread of their own instead of the daemon's loop.
pub struct DatapathReader {
    maps: Maps,
    /// The devices' cells (state and counters), as the datapath assigns them.
    cells: super::cells::Shared,
}

/// The maps a [`DatapathReader`] holds.
pub(super) const READER_MAPS: [&str; 9] = [
    MAP_STATS,
    MAP_EV_STATS,
    MAP_DEV_COUNT,
    MAP_FLOWS,
    MAP_EST_FLOWS,
    MAP_DEVICES,
    MAP_DEV_IP4,
    MAP_DEV_IP6,
    MAP_FRAGS,
];

impl DatapathReader {
    /// Packet counters by reason and side (see [`Datapath::stats`]).
    pub fn stats(&mut self) -> Result<Vec<u64>, DatapathError> {
        per_cpu_sums(&mut self.maps, MAP_STATS, STATS_LEN)
    }

    /// See [`Datapath::event_stats`].
    pub fn event_stats(&mut self) -> Result<Vec<u64>, DatapathError> {
        per_cpu_sums(&mut self.maps, MAP_EV_STATS, EV_STATS_LEN)
    }

    /// See [`Datapath::device_counters`].
    pub fn device_counters(&mut self, id: u64) -> Result<DeviceCounterTotals, DatapathError> {
        let cell = self
            .cells
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .copied();
        match cell {
            Some(cell) => device_counters(&mut self.maps, cell),
            None => Ok(DeviceCounterTotals::default()),
        }
    }

    /// See [`Datapath::map_usage`].
    pub fn map_usage(&mut self) -> Result<Vec<(&'static str, u64, u64)>, DatapathError> {
        map_usage(&mut self.maps)
    }
}

impl Datapath {
    /// A [`DatapathReader`] of this datapath's maps.
    pub fn reader(&self) -> Result<DatapathReader, DatapathError> {
        Ok(DatapathReader {
            maps: Maps(self.dup_maps(&READER_MAPS)?),
            cells: self.cells.shared(),
        })
    }

    /// The two flow tables' [`FlowTables`].
    pub fn flow_tables(&self) -> Result<FlowTables, DatapathError> {
        Ok(FlowTables {
            maps: Maps(self.dup_maps(&[MAP_EST_FLOWS, MAP_FLOWS])?),
        })
    }

    fn dup_maps(&self, names: &[&'static str]) -> Result<Vec<(&'static str, Map)>, DatapathError> {
        names
            .iter()
            .map(|&name| {
                let Some(
                    Map::Array(data)
                    | Map::HashMap(data)
                    | Map::LpmTrie(data)
                    | Map::LruHashMap(data)
                    | Map::PerCpuArray(data)
                    | Map::PerCpuHashMap(data),
                ) = self.ebpf.map(name)
                else {
                    return Err(DatapathError::MissingMap(name));
                };
                dup_map(name, data)
            })
            .collect()
    }
}

/// Handles of the two flow tables for the pair's flow replication, which reads and writes
/// them on a thread of its own (`daemon::flowsync`): every flow, and the flows the other
/// member hands over.
pub struct FlowTables {
    maps: Maps,
}

impl FlowTables {
    /// Every flow, with its table (see [`Datapath::flows`]).
    pub fn read(&mut self) -> Result<Vec<(FlowTable, FlowKey, FlowValue)>, DatapathError> {
        read_flows(&mut self.maps)
    }

    /// Writes `value` under `key` in `table`, over an entry that may be there.
    pub fn write(
        &mut self,
        table: FlowTable,
        key: &FlowKey,
        value: &FlowValue,
    ) -> Result<(), DatapathError> {
        let mut map: HashMap<_, FlowKey, FlowValue> = typed(&mut self.maps, table.map())?;
        map.insert(key, value, 0)
            .map_err(DatapathError::map(table.map()))
    }
}

/// Every flow of both tables, with its table.
pub(super) fn read_flows<S: MapSource>(
    src: &mut S,
) -> Result<Vec<(FlowTable, FlowKey, FlowValue)>, DatapathError> {
    let mut out = Vec::new();
    for table in FlowTable::ALL {
        let map: HashMap<_, FlowKey, FlowValue> = typed(src, table.map())?;
        out.extend(
            map.iter()
                .filter_map(Result::ok)
                .map(|(k, v)| (table, k, v)),
        );
    }
    Ok(out)
}

/// A second handle of one map (its own file descriptor), usable from another thread.
pub(super) fn dup_map(
    name: &'static str,
    data: &MapData,
) -> Result<(&'static str, Map), DatapathError> {
    let fd = data.fd().as_fd().try_clone_to_owned().map_err(|io_error| {
        DatapathError::map(name)(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
            call: "fcntl(F_DUPFD_CLOEXEC)",
            io_error,
        }))
    })?;
    let data = MapData::from_fd(fd).map_err(DatapathError::map(name))?;
    Ok((
        name,
        Map::from_map_data(data).map_err(DatapathError::map(name))?,
    ))
}

pub(super) fn per_cpu_sums<S: MapSource>(
    ebpf: &mut S,
    name: &'static str,
    len: u32,
) -> Result<Vec<u64>, DatapathError> {
    let map: PerCpuArray<_, u64> = typed(ebpf, name)?;
    (0..len)
        .map(|i| {
            map.get(&i, 0)
                .map(|v| v.iter().sum())
                .map_err(DatapathError::map(name))
        })
        .collect()
}
