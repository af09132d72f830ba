//! A small ordered parallel map over the machine's cores (std threads, no runtime): the
//! compiler's independent per-policy and per-class work. Results keep the input order, so
//! output never depends on scheduling.

/// `f` applied to every item, in contiguous chunks on up to `available_parallelism` threads.
pub(super) fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    // Below a few hundred items a thread costs more than it saves.
    if threads <= 1 || items.len() < 256 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(f).collect::<Vec<R>>()))
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for h in handles {
            match h.join() {
                Ok(part) => out.extend(part),
                // A panic in `f` is a bug; re-raise it on the caller's thread.
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        out
    })
}
