//! Batched map writes: `BPF_MAP_UPDATE_BATCH` and `BPF_MAP_DELETE_BATCH`, one bpf(2) call
//! for thousands of entries.
//!
//! A whole-policy install changes about 650,000 LPM entries (the old policy's deleted, the
//! new one's written). One syscall each spends as much time entering the kernel, looking up
//! the map's fd and allocating the key and value buffers as the trie spends on the entry,
//! so installing one entry per call makes the install about twice as long as it must be.
//! aya 0.14 has no batch API, hence the raw calls here. The kernel runs the same per-entry
//! update or delete for each element (its generic batch helpers), so the semantics are
//! those of single writes: an error stops the batch, and the kernel reports how many
//! entries were done.
//!
//! Kernels or map types without batch support answer `EINVAL` (or `ENOTSUPP`); the caller
//! then writes one entry per call, as before.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use aya::Pod;

/// `enum bpf_cmd` values (include/uapi/linux/bpf.h), stable kernel ABI since 5.6.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// `ENOTSUPP` (kernel-internal, but returned by bpf(2) for unsupported map operations).
const ENOTSUPP: i32 = 524;
/// Entries per call: bounds the time the kernel spends in one call (it reschedules between
/// entries, but the caller cannot be interrupted) and the staging buffers.
const CHUNK: usize = 16_384;

#[cfg(test)]
thread_local! {
    /// Tests of the single-write fallback set this to have every batch refused as
    /// unsupported, as an older kernel would.
    pub(crate) static PRETEND_UNSUPPORTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn pretend_unsupported() -> bool {
    PRETEND_UNSUPPORTED.with(std::cell::Cell::get)
}

#[cfg(not(test))]
fn pretend_unsupported() -> bool {
    false
}

/// The `batch` member of `union bpf_attr`. The kernel zero-fills the rest of the union
/// when the size given is smaller than its own.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Why a batch could not be written.
#[derive(Debug)]
pub(crate) enum BatchError {
    /// This kernel or map type has no batch operation: write one entry at a time.
    Unsupported,
    /// The kernel refused an entry (`io::Error` from bpf(2)).
    Failed(io::Error),
}

/// Calls bpf(2) for one batch; returns how many entries the kernel processed and the
/// error, if any, that stopped it.
fn call(cmd: libc::c_long, attr: &mut BatchAttr) -> (usize, Option<io::Error>) {
    // SAFETY: `attr` is a valid `batch` member of `union bpf_attr` whose `keys` and
    // `values` point to `count` entries of the map's key and value size (the callers
    // build them from slices of exactly that layout); the kernel reads them and writes
    // only `attr.count`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    let err = (ret < 0).then(io::Error::last_os_error);
    (attr.count as usize, err)
}

/// Whether a failed call of `asked` entries means "no batch operation here": `EINVAL` (no
/// such command, before 5.6) or `ENOTSUPP` (none for this map type), refused before the
/// first entry. Such a refusal leaves `count` as it was given (the kernel writes it back
/// only once it has started); an `EINVAL` for the first entry itself reports 0 done, and the
/// single write that follows reports it properly.
fn unsupported(e: &io::Error, done: usize, asked: usize) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | ENOTSUPP)) && (done == 0 || done == asked)
}

/// Writes `keys[i] → values[i]` for every `i` (flags 0: create or replace).
///
/// `K` and `V` must be the map's key and value layout exactly (the kernel copies
/// `key_size`/`value_size` bytes per entry); a mismatch is refused as `EINVAL` only when
/// the sizes differ, so the callers pass the types the map was typed with.
pub(crate) fn update<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), BatchError> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    if pretend_unsupported() && !keys.is_empty() {
        return Err(BatchError::Unsupported);
    }
    for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            values: v.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        match call(BPF_MAP_UPDATE_BATCH, &mut attr) {
            (_, None) => {}
            // Nothing of this chunk was written: the caller can fall back to single writes
            // (rewriting earlier chunks' entries is harmless).
            (done, Some(e)) if unsupported(&e, done, k.len()) => {
                return Err(BatchError::Unsupported)
            }
            (_, Some(e)) => return Err(BatchError::Failed(e)),
        }
    }
    Ok(())
}

/// Deletes every key of `keys`. A key the map does not hold is skipped, as a single delete
/// of a missing key would be harmless: the goal is its absence.
pub(crate) fn delete<K: Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> Result<(), BatchError> {
    if pretend_unsupported() && !keys.is_empty() {
        return Err(BatchError::Unsupported);
    }
    let mut rest = keys;
    while !rest.is_empty() {
        let n = rest.len().min(CHUNK);
        let mut attr = BatchAttr {
            keys: rest.as_ptr() as u64,
            count: n as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let (done, err) = call(BPF_MAP_DELETE_BATCH, &mut attr);
        match err {
            None => rest = &rest[n..],
            // `done` entries were deleted, and the next one is missing: skip it.
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) && done < n => {
                rest = &rest[done + 1..];
            }
            Some(e) if unsupported(&e, done, n) => return Err(BatchError::Unsupported),
            Some(e) => return Err(BatchError::Failed(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! On a real kernel (needs CAP_BPF, as the rest of the datapath's tests): these also
    //! show that this kernel has the batch operations for the map types the loader uses,
    //! so installs take the fast path rather than the fallback.
    use std::os::fd::AsFd;

    use aya::maps::{lpm_trie::Key, HashMap, IterableMap, LpmTrie, MapData};

    use super::*;

    /// `BPF_F_NO_PREALLOC`: LPM tries must be created with it.
    const NO_PREALLOC: u32 = 1;
    /// More than two chunks, so chunk boundaries are crossed.
    const N: u32 = 2 * CHUNK as u32 + 100;

    fn keys(range: impl Iterator<Item = u32>) -> Vec<Key<u32>> {
        range.map(|i| Key::new(32, i.to_be())).collect()
    }

    #[test]
    fn lpm_entries_are_written_and_deleted_in_batches_across_chunks() {
        let trie = LpmTrie::<MapData, u32, u32>::create(N + 10, NO_PREALLOC).expect("lpm trie");
        let fd = trie.map().fd().as_fd();
        let all = keys(0..N);
        let values: Vec<u32> = (0..N).map(|i| i * 3).collect();
        update(fd, &all, &values).expect("batch update is supported and succeeds");
        for i in [0, CHUNK as u32, N - 1] {
            assert_eq!(trie.get(&Key::new(32, i.to_be()), 0).ok(), Some(i * 3));
        }

        // Every other key, with keys the map never held mixed in (skipped, not fatal).
        let mut gone = keys((0..N).step_by(2));
        gone.extend(keys(N + 1000..N + 1003));
        gone.insert(5, Key::new(32, (N + 5000).to_be()));
        delete(fd, &gone).expect("batch delete skips missing keys");
        assert_eq!(trie.keys().count(), (N / 2) as usize);
        assert!(trie.get(&Key::new(32, 0u32.to_be()), 0).is_err());
        assert_eq!(trie.get(&Key::new(32, 1u32.to_be()), 0).ok(), Some(3));
    }

    #[test]
    fn hash_entries_are_replaced_and_deleted_in_batches() {
        let map = HashMap::<MapData, u64, u64>::create(N, 0).expect("hash map");
        let fd = map.map().fd().as_fd();
        let ks: Vec<u64> = (0..u64::from(N)).collect();
        update(fd, &ks, &ks).expect("batch update");
        let doubled: Vec<u64> = ks.iter().map(|k| k * 2).collect();
        update(fd, &ks[..10], &doubled[..10]).expect("existing keys are replaced");
        assert_eq!(map.get(&9, 0).ok(), Some(18));
        assert_eq!(map.get(&10, 0).ok(), Some(10));
        delete(fd, &ks[..N as usize - 1]).expect("batch delete");
        assert_eq!(map.keys().count(), 1);
    }

    #[test]
    fn a_map_type_without_batches_is_unsupported_not_an_error() {
        // Queues have no batch operations: the kernel refuses before the first entry.
        // (aya gives no fd of a standalone queue: created here with bpf(BPF_MAP_CREATE).)
        #[repr(C)]
        struct CreateAttr {
            map_type: u32,
            key_size: u32,
            value_size: u32,
            max_entries: u32,
            map_flags: u32,
        }
        let attr = CreateAttr {
            map_type: 22, // BPF_MAP_TYPE_QUEUE
            key_size: 0,
            value_size: 4,
            max_entries: 8,
            map_flags: 0,
        };
        // SAFETY: BPF_MAP_CREATE (0) reads `attr` only; the result is a new fd or -1.
        let raw = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                0,
                &attr,
                std::mem::size_of::<CreateAttr>() as libc::c_uint,
            )
        };
        assert!(
            raw >= 0,
            "creating a queue map: {}",
            io::Error::last_os_error()
        );
        // SAFETY: a fresh fd owned by nothing else.
        let queue =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw as i32) };
        let fd = queue.as_fd();
        let ks = [1u32, 2, 3];
        assert!(matches!(update(fd, &ks, &ks), Err(BatchError::Unsupported)));
        assert!(matches!(delete(fd, &ks), Err(BatchError::Unsupported)));
    }

    #[test]
    fn an_entry_the_kernel_refuses_is_an_error_not_a_fallback() {
        let trie = LpmTrie::<MapData, u32, u32>::create(4, NO_PREALLOC).expect("lpm trie");
        let fd = trie.map().fd().as_fd();
        // Five entries into a map of four: the fifth is refused (ENOSPC) after four writes.
        let ks = keys(0..5);
        match update(fd, &ks, &[0; 5]) {
            Err(BatchError::Failed(e)) => assert_eq!(e.raw_os_error(), Some(libc::ENOSPC)),
            other => panic!("expected the kernel's refusal, got {other:?}"),
        }
        assert_eq!(trie.keys().count(), 4);
    }
}
