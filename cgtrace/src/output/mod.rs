//! Rendering for people (aligned tables) and programs (JSON lines).

pub mod format;
pub mod oom;
