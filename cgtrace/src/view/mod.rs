//! Rendering for people (aligned tables) and programs (JSON lines).

pub mod cache;
pub mod format;
pub mod interval;
pub mod oom;
pub mod throttle;
