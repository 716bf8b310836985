//! Reports on a recorded trace (`cgtrace report`): a [`summary`] built from
//! the records, rendered as [`text`] or JSON, or as a self-contained
//! [`html`] page with [`svg`] plots.

pub mod html;
pub mod series;
pub mod summary;
pub mod svg;
pub mod text;
