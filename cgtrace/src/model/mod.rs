//! Pure state fed by events: no I/O, shared by live views and replay.

pub mod cache;
pub mod memory;
pub mod oom;
pub mod period_clock;
pub mod pressure;
pub mod throttle;
pub mod top;
