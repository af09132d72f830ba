//! Importers: knowledge a hospital already holds elsewhere, taken into the policy repository
//! as files a person reviews (`lazaret plan`, a pull request), never applied past it.
//!
//! - [`csv`]: a CMMS or asset-management export becomes `[[devices]]` entries, updated in
//!   place where they already exist.
//!
//! An importer reads the repository, plans every change, checks that the repository it
//! would leave loads as a policy, and only then writes: it refuses whole (nothing written)
//! on any input it would have to guess about, naming the row and column.

pub mod csv;
