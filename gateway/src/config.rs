//! The daemon's configuration (`/etc/lazaret/lazaret.toml`).
