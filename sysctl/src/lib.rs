//! Host preflight for c10m: what this Linux host can hold, and what to change so it holds more.
//!
//! One table, `sysctl/settings.tsv` (embedded with `include_str!`), lists every kernel setting
//! and limit that stands between a default host and millions of connections, with the formula
//! that sizes it and the reason it matters. From it this crate computes, for a target of `N`
//! connections:
//!
//! - a [`Plan`]: each setting's current and recommended value, `ok` or `low`, and why. Its
//!   `Display` is the `c10m doctor --connections N` table;
//! - the [`Ceiling`] that `RLIMIT_NOFILE` puts on this one process, the warning `c10m serve`
//!   prints at start-up (it warns, never refuses).
//!
//! Read from inside a network namespace other than the host's (any container), where the
//! kernel hides the host-wide network settings, the host-scope settings are not checked: the
//! plan lists them as "set on the host" ([`OnHost`]) with what the target needs of them, and
//! checks the namespace's own settings and the process's limit.
//!
//! `scripts/tune.sh` applies a plan; it gets the numbers from the `c10m-tune-plan` binary of this
//! crate rather than repeating any formula. The crate itself only reads `/proc`.
//!
//! ```no_run
//! use c10m_sysctl::{plan, process_ceiling, Host};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let host = Host::read()?;
//! let plan = plan(1_000_000, &host)?;
//! print!("{plan}");
//! let ceiling = process_ceiling(&host);
//! if !ceiling.holds(1_000_000) {
//!     eprintln!("warning: {ceiling}");
//! }
//! # Ok(())
//! # }
//! ```
#![deny(unsafe_code)]

mod ceiling;
pub mod count;
mod error;
pub mod formula;
mod host;
pub mod memory;
mod num;
mod plan;
mod requirement;
mod rlimit;
mod scope;
mod table;
mod value;

pub use ceiling::{Ceiling, RESERVED_FDS, process_ceiling};
pub use count::{CountError, parse_count};
pub use error::{Error, ParseScopeError, PlanError, TableError, TableProblem};
pub use formula::Formula;
pub use host::{Host, Probe, Reading};
pub use plan::{Check, OnHost, Plan, Row, SET_ON_THE_HOST, Verdict, plan};
pub use requirement::{Requirement, Rule};
pub use rlimit::Rlimit;
pub use scope::{Scope, Scopes};
pub use table::{Kind, Setting, TABLE, settings};
pub use value::Value;
