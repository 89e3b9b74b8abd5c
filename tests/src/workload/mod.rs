//! Workloads for read-write mounts: a seeded script of POSIX calls
//! ([`script`]), applied with plain syscalls and every answer recorded
//! ([`apply`]), so that the kernel's ext4 and fshost can be driven through
//! the same calls and compared call by call and tree by tree.
//!
//! Nothing here knows which filesystem it runs on; the oracle is whatever
//! the kernel answers for the same script on a copy of the same image.

pub mod apply;
pub mod model;
pub mod script;
pub mod sys;

pub use apply::{Outcome, apply, outcome_differences};
pub use script::{Config, Kind, Op, Script, generate};
