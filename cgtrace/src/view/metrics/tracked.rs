//! A metric family that remembers which series each cgroup made, so they
//! can all go when the cgroup has been gone for a while, and that makes
//! no new series past the families' shared cap.

use std::{
    cell::{Cell, RefCell},
    collections::{HashMap, HashSet},
    rc::Rc,
};

use prometheus_client::{
    metrics::{counter::Counter, family::Family},
    registry::{Metric, Registry},
};

use super::Labels;

/// How many series the families may hold together (`--max-series`).
#[derive(Debug)]
pub struct Budget {
    cap: usize,
    used: Cell<usize>,
    /// New series refused because the cap was reached.
    pub refused: Counter,
    said: Cell<bool>,
}

impl Budget {
    #[must_use]
    pub fn new(cap: usize) -> Rc<Self> {
        Rc::new(Self {
            cap,
            used: Cell::new(0),
            refused: Counter::default(),
            said: Cell::new(false),
        })
    }

    /// Series held now.
    #[must_use]
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// Takes one series from the budget, or counts it refused.
    fn take(&self) -> bool {
        if self.used.get() < self.cap {
            self.used.set(self.used.get() + 1);
            return true;
        }
        self.refused.inc();
        if !self.said.replace(true) {
            crate::note!(
                "cgtrace: serve: {} series, the --max-series cap: new series are dropped and counted in cgtrace_series_dropped_total",
                self.cap
            );
        }
        false
    }

    fn give_back(&self, series: usize) {
        self.used.set(self.used.get().saturating_sub(series));
    }
}

/// A [`Family`] whose series are remembered by the cgroup path they
/// describe.
#[derive(Debug)]
pub struct Tracked<M> {
    family: Family<Labels, M>,
    by_path: RefCell<HashMap<String, HashSet<Labels>>>,
    budget: Rc<Budget>,
}

impl<M: Default + Clone> Tracked<M>
where
    Family<Labels, M>: Metric,
{
    /// Registered under `name` in `registry`, drawing on `budget`.
    pub fn register(registry: &mut Registry, budget: &Rc<Budget>, name: &str, help: &str) -> Self {
        let family = Family::<Labels, M>::default();
        registry.register(name, help, family.clone());
        Self {
            family,
            by_path: RefCell::new(HashMap::new()),
            budget: Rc::clone(budget),
        }
    }

    /// The series of `path` with these labels, made if new. Past the cap a
    /// new series is a detached metric: written to, never served.
    pub fn get(&self, path: &str, labels: &Labels) -> M {
        let mut by_path = self.by_path.borrow_mut();
        let known = by_path
            .get(path)
            .is_some_and(|known| known.contains(labels));
        if !known {
            // A refused series leaves nothing behind: past the cap, every
            // cgroup of a big node asks again each interval.
            if !self.budget.take() {
                return M::default();
            }
            by_path
                .entry(path.to_owned())
                .or_default()
                .insert(labels.clone());
        }
        // Metric handles share their value: the clone is the series.
        self.family.get_or_create(labels).clone()
    }

    /// Drops every series of `path`.
    pub fn forget(&self, path: &str) {
        let labels = self.by_path.borrow_mut().remove(path).unwrap_or_default();
        for series in &labels {
            self.family.remove(series);
        }
        self.budget.give_back(labels.len());
    }
}
