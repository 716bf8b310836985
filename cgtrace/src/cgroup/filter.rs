//! Which cgroups a user asked about: `--cgroup PATH` keeps a cgroup at or
//! below any of the given paths (`/kubepods` keeps `/kubepods` and
//! `/kubepods/burstable/pod…`, not `/kubepods-old`).

/// Paths to keep; empty keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupFilter {
    roots: Vec<String>,
}

impl CgroupFilter {
    /// A filter keeping the subtrees at `paths` (`kubepods/x` and
    /// `/kubepods/x/` mean `/kubepods/x`).
    #[must_use]
    pub fn new<S: AsRef<str>>(paths: &[S]) -> Self {
        Self {
            roots: paths
                .iter()
                .map(|p| format!("/{}", p.as_ref().trim_matches('/')))
                .collect(),
        }
    }

    /// Also keeps the subtree at `path`.
    pub fn add(&mut self, path: &str) {
        if !self.roots.is_empty() {
            self.roots.push(format!("/{}", path.trim_matches('/')));
        }
    }

    /// Whether the filter keeps everything.
    #[must_use]
    pub fn is_everything(&self) -> bool {
        self.roots.is_empty()
    }

    /// Whether `path` is at or below one of the filter's paths.
    #[must_use]
    pub fn keeps(&self, path: &str) -> bool {
        self.roots.is_empty()
            || self.roots.iter().any(|root| {
                root == "/"
                    || path == root
                    || path
                        .strip_prefix(root.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::CgroupFilter;

    #[test]
    fn keeps_subtrees_only() {
        let filter = CgroupFilter::new(&["kubepods/", "/system.slice/docker.service"]);
        assert!(filter.keeps("/kubepods"));
        assert!(filter.keeps("/kubepods/burstable/pod1/abc"));
        assert!(!filter.keeps("/kubepods-old"));
        assert!(!filter.keeps("/"));
        assert!(filter.keeps("/system.slice/docker.service"));
        assert!(!filter.keeps("/system.slice"));
        assert!(CgroupFilter::new::<&str>(&[]).keeps("/anything"));
        assert!(CgroupFilter::new(&["/"]).keeps("/anything"));
    }

    #[test]
    fn adding_to_an_empty_filter_keeps_everything() {
        let mut everything = CgroupFilter::default();
        everything.add("/cgtrace-record-1");
        assert!(everything.is_everything());
        let mut some = CgroupFilter::new(&["/a"]);
        some.add("/cgtrace-record-1");
        assert!(some.keeps("/cgtrace-record-1"));
        assert!(!some.keeps("/b"));
    }
}
