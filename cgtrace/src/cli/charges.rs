//! `--charges`, for the live views that show charges and refaults: whether
//! to attach the memcg stat tracepoints. Without them those figures come
//! from `memory.stat`, read each interval, at no cost per event.

use clap::Args;

use crate::probe::FeatureSet;

#[derive(Debug, Clone, Copy, Args)]
pub struct ChargesArgs {
    /// Attach the memcg stat tracepoints (Linux 6.14+): each charge and
    /// uncharge as it happens, gross, where memory.stat gives each
    /// interval's net change. They run about four times per page-cache
    /// page, so under page-cache churn they cost more than the page-cache
    /// probes themselves (BENCHMARKS.md).
    #[arg(long)]
    pub charges: bool,
}

impl ChargesArgs {
    /// `features`, with the memcg stat tracepoints only if asked for.
    #[must_use]
    pub fn features(self, features: FeatureSet) -> FeatureSet {
        FeatureSet {
            charges: self.charges,
            ..features
        }
    }
}
