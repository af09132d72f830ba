//! Reading the datapath's events from its ring buffer.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use aya::maps::{Map, MapData, RingBuf};
use lazaret_abi::{Event, EVENT_VERSION, MAP_EVENTS};

use super::{error::DatapathError, Datapath};

/// The consumer side of `LZ_EVENTS`. Owns the map: only one reader per datapath.
pub struct EventReader {
    ring: RingBuf<MapData>,
    /// Records with an unknown version or size (a newer program than this binary).
    pub skipped: u64,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl Iterator for EventReader {
    type Item = Event;

    /// The next event, if one is waiting. Never blocks; `None` means "none right now".
    fn next(&mut self) -> Option<Event> {
        loop {
            let item = self.ring.next()?;
            if item.len() < std::mem::size_of::<Event>() {
                self.skipped += 1;
                continue;
            }
            // SAFETY: Event is plain old data and the item holds at least that many bytes;
            // read_unaligned makes no alignment assumption about the ring buffer.
            let ev: Event = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            if ev.version != EVENT_VERSION {
                self.skipped += 1;
                continue;
            }
            return Some(ev);
        }
    }
}

impl EventReader {
    /// Drains every waiting event.
    pub fn drain(&mut self) -> Vec<Event> {
        self.by_ref().collect()
    }

    /// The ring buffer's fd, readable when events are waiting (for epoll / AsyncFd).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

impl AsRawFd for EventReader {
    fn as_raw_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}

impl Datapath {
    /// Takes the event ring buffer out of the datapath (once).
    pub fn take_events(&mut self) -> Result<EventReader, DatapathError> {
        let map = self
            .ebpf_mut()
            .take_map(MAP_EVENTS)
            .ok_or(DatapathError::MissingMap(MAP_EVENTS))?;
        let ring = match map {
            Map::RingBuf(data) => RingBuf::try_from(Map::RingBuf(data)),
            other => RingBuf::try_from(other),
        }
        .map_err(DatapathError::map(MAP_EVENTS))?;
        Ok(EventReader { ring, skipped: 0 })
    }
}
