//! A metric family that remembers which series each cgroup made, so they
//! can all go when the cgroup has been gone for a while.

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
};

use prometheus_client::{
    metrics::family::Family,
    registry::{Metric, Registry},
};

use super::Labels;

/// A [`Family`] whose series are remembered by the cgroup path they
/// describe.
#[derive(Debug)]
pub struct Tracked<M> {
    family: Family<Labels, M>,
    by_path: RefCell<HashMap<String, HashSet<Labels>>>,
}

impl<M: Default + Clone> Tracked<M>
where
    Family<Labels, M>: Metric,
{
    /// Registered under `name` in `registry`.
    pub fn register(registry: &mut Registry, name: &str, help: &str) -> Self {
        let family = Family::<Labels, M>::default();
        registry.register(name, help, family.clone());
        Self {
            family,
            by_path: RefCell::new(HashMap::new()),
        }
    }

    /// The series of `path` with these labels, made if new.
    pub fn get(&self, path: &str, labels: &Labels) -> M {
        let mut by_path = self.by_path.borrow_mut();
        let known = by_path.entry(path.to_owned()).or_default();
        if !known.contains(labels) {
            known.insert(labels.clone());
        }
        // Metric handles share their value: the clone is the series.
        self.family.get_or_create(labels).clone()
    }

    /// Drops every series of `path`; how many there were.
    pub fn forget(&self, path: &str) -> usize {
        let labels = self.by_path.borrow_mut().remove(path).unwrap_or_default();
        for series in &labels {
            self.family.remove(series);
        }
        labels.len()
    }
}
