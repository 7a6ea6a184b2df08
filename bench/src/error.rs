//! Errors of a bench run, each saying whose fault it is: the machine (I/O, missing tools),
//! a process under test (did not start), the operator (interrupt, bad options).
//!
//! A target that cannot start is not an error of the run: the scenario records it as
//! `skipped` and goes on. These errors end the run.

use std::io;

use crate::loadgen::LoadError;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("local I/O failed ({what}): {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("could not start {what} (is it installed?): {source}")]
    Spawn {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} did not become ready: {reason}")]
    NotReady { what: String, reason: String },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the machine cannot run this layout: {0}")]
    Machine(String),
    #[error("invalid option (operator's fault): {0}")]
    Usage(String),
    /// `all`: the scenarios that ended in an error (each also logged when it failed).
    #[error("scenario(s) failed: {0}")]
    Scenarios(String),
    #[error("interrupted by signal")]
    Interrupted,
}

impl BenchError {
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }
}
