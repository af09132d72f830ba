//! Dense ids for values in first-seen order, with a fast hash for the compiler's many small
//! keys.

use std::collections::HashMap;

/// FxHash (rustc's hasher, from `rustc-hash`): the interners hash many small integer
/// vectors, where SipHash's DoS resistance buys nothing (the input is the operator's own
/// policy) and costs a lot.
pub(crate) type FxBuild = rustc_hash::FxBuildHasher;
pub(crate) type FxMap<K, V> = HashMap<K, V, FxBuild>;

/// Assigns dense ids to values in first-seen order.
pub(crate) struct Interner<T> {
    pub(crate) ids: FxMap<T, u32>,
    pub(crate) values: Vec<T>,
}

impl<T: std::hash::Hash + Eq + Clone> Interner<T> {
    pub(crate) fn new() -> Self {
        Interner {
            ids: FxMap::default(),
            values: Vec::new(),
        }
    }

    pub(crate) fn id(&mut self, value: T) -> u32 {
        if let Some(id) = self.ids.get(&value) {
            return *id;
        }
        let id = self.values.len() as u32;
        self.values.push(value.clone());
        self.ids.insert(value, id);
        id
    }

    pub(crate) fn get(&self, id: u32) -> Option<&T> {
        self.values.get(id as usize)
    }
}
