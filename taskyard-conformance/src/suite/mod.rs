//! The behaviours every store must show, one module per topic. Each `pub async fn` in a
//! file of `src/suite/` is one test, taking a fresh [`Subject`](crate::Subject): the build
//! script lists them all, by their bare names (`cargo test NAME` selects one), and
//! [`run`](crate::run) runs them on a store. Helpers the topics share are in `common`;
//! a helper only one topic needs sits beside its tests.
//!
//! Times here are real: leases of a fraction of a second, and every wait is a condition
//! with a deadline.

pub mod actions;
pub mod admin;
pub mod cancel;
pub(crate) mod common;
pub mod enqueue;
pub mod leases;
pub(crate) mod logs;
pub mod priorities;
pub mod results;
pub mod retries;
pub mod schedules;
pub(crate) mod stalled;
pub mod timeouts;
pub mod unique;
pub mod waiting;
pub mod worker;

pub use common::{Ping, Pong};
pub use retries::Patient;
