//! Rendering for people (aligned tables) and programs (JSON lines).

pub mod cache;
pub mod export;
pub mod format;
pub mod interval;
pub mod metrics;
pub mod oom;
pub mod reclaim;
pub mod report;
pub mod throttle;
pub mod top;
