//! Summaries of repeated measurements: min, median and max, the form every
//! ratio in BENCHMARKS.md takes (run-to-run noise here is ±20 %, so a single
//! figure would say little).

use std::fmt;

#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Summary {
    /// Summarises `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
        };
        Some(Self {
            min: sorted[0],
            median,
            max: sorted[n - 1],
        })
    }
}

/// `min / median / max` with three decimals, the form used for ratios.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let precision = f.precision().unwrap_or(3);
        write!(
            f,
            "{:.p$} / **{:.p$}** / {:.p$}",
            self.min,
            self.median,
            self.max,
            p = precision
        )
    }
}

/// The order of the arms in round `round`: forward on even rounds, reversed
/// on odd ones, so neither side of a comparison always runs first (cache
/// state and drift would otherwise favour one).
pub fn round_order(arms: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..arms).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

#[cfg(test)]
mod tests {
    use super::{Summary, round_order};

    #[test]
    fn summary_of_odd_and_even_counts() {
        let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let s = Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.min, s.median, s.max), (1.0, 2.5, 4.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn rounds_alternate_the_order() {
        assert_eq!(round_order(3, 0), [0, 1, 2]);
        assert_eq!(round_order(3, 1), [2, 1, 0]);
        assert_eq!(round_order(2, 2), [0, 1]);
    }
}
