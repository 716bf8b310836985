//! How long each part of a long task took, printed when the task ends
//! (failed or not), so a slow run says where its time went.

use std::time::{Duration, Instant};

/// The parts timed so far, in order.
pub struct Phases {
    task: &'static str,
    started: Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Phases {
    pub fn new(task: &'static str) -> Self {
        Self {
            task,
            started: Instant::now(),
            done: Vec::new(),
        }
    }

    /// Runs `part`, timed as `name`.
    pub fn time<T>(&mut self, name: &'static str, part: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = part();
        self.done.push((name, started.elapsed()));
        result
    }

    /// A part timed elsewhere (on another thread).
    pub fn record(&mut self, name: &'static str, took: Duration) {
        self.done.push((name, took));
    }

    /// `setup 12 s, lint 95 s, …; 2,900 s in all`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(name, took)| format!("{name} {:.0} s", took.as_secs_f64()))
            .collect();
        format!(
            "{}; {:.0} s in all",
            parts.join(", "),
            self.started.elapsed().as_secs_f64()
        )
    }
}

impl Drop for Phases {
    fn drop(&mut self) {
        if !self.done.is_empty() {
            eprintln!("xtask: {} took: {}", self.task, self.summary());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_part_in_order_with_the_whole() {
        let mut phases = Phases::new("test");
        assert_eq!(phases.time("first", || 1), 1);
        phases.time("second", || std::thread::sleep(Duration::from_millis(1)));
        let summary = phases.summary();
        assert!(summary.starts_with("first 0 s, second 0 s; "), "{summary}");
        assert!(summary.ends_with(" s in all"), "{summary}");
        phases.done.clear();
    }
}
