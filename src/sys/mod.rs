//! The only place with `unsafe`: thin wrappers over Linux system calls, each block with a
//! `// SAFETY:` comment. Callers above this module see safe, typed functions.

pub mod limits;
