//! Configuration: the typed model, loading with file:line:column diagnostics, validation.

pub mod model;
