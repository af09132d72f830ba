//! Errors of the datapath layer.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("loading the XDP program failed (the kernel needs BPF and BTF, and lazaret needs CAP_BPF and CAP_NET_ADMIN): {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the XDP program was rejected or could not be attached: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {map}: the kernel refused a batch of entries: {source}")]
    Batch {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the XDP object has no map named {0} (the embedded program and this binary disagree)")]
    MissingMap(&'static str),
    #[error("the XDP object has no program named {0}")]
    MissingProgram(&'static str),
    #[error("XDP link: {0}")]
    Link(String),
    #[error("interface {0:?} does not exist")]
    NoSuchInterface(String),
    #[error("map contents were built for slot {built_for}, but the inactive slot is {inactive} (build them for Datapath::next_slot)")]
    WrongSlot { built_for: u8, inactive: u8 },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DatapathError {
    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Self {
        move |source| DatapathError::Map { map, source }
    }
}
