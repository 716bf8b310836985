//! What a user narrowed a view to: `--cgroup PATH|GLOB`, `--pod NAME`,
//! `--namespace NS`, `--container NAME`.
//!
//! A cgroup is kept when it, or an ancestor, is selected: selecting a pod
//! keeps its containers, selecting `/kubepods` keeps every pod below it.
//! Different options must all hold (`--namespace shop --container nginx` is
//! the nginx containers of shop's pods); repeating one option widens it.
//!
//! Cgroup patterns match whole path components from the hierarchy's root:
//! `*`, `?` and `[a-z]` inside one component, `**` for any number of them
//! (`/kubepods/*/pod*` keeps every pod of the burstable and besteffort
//! classes, `/**/docker-*.scope` every Docker scope, wherever it is). A
//! backslash makes the next character literal (`/batch\*` is the cgroup
//! named `batch*`), for names that hold these characters themselves.

use super::Identity;

/// Which cgroups to keep; the default keeps everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    cgroups: Vec<String>,
    pods: Vec<String>,
    namespaces: Vec<String>,
    containers: Vec<String>,
}

/// Why a filter on the command line cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("--cgroup needs a path or pattern such as /kubepods")]
    EmptyCgroup,
    #[error("--cgroup {pattern}: unbalanced [ ]")]
    UnbalancedBrackets { pattern: String },
}

impl Selector {
    /// A selector from the command-line options (empty lists select all).
    pub fn new(
        cgroups: &[String],
        pods: &[String],
        namespaces: &[String],
        containers: &[String],
    ) -> Result<Self, SelectorError> {
        for pattern in cgroups {
            if pattern.trim().is_empty() {
                return Err(SelectorError::EmptyCgroup);
            }
            let unescaped = unescaped_chars(pattern);
            let count = |wanted| {
                unescaped
                    .iter()
                    .filter(|(c, literal)| *c == wanted && !literal)
                    .count()
            };
            if count('[') != count(']') {
                return Err(SelectorError::UnbalancedBrackets {
                    pattern: pattern.clone(),
                });
            }
        }
        Ok(Self {
            cgroups: cgroups.iter().map(|p| normalise(p)).collect(),
            pods: pods.to_vec(),
            namespaces: namespaces.to_vec(),
            containers: containers.to_vec(),
        })
    }

    /// A selector keeping the subtrees at these paths.
    #[must_use]
    pub fn paths<S: AsRef<str>>(paths: &[S]) -> Self {
        Self {
            cgroups: paths.iter().map(|p| normalise(p.as_ref())).collect(),
            ..Self::default()
        }
    }

    /// Whether everything is kept.
    #[must_use]
    pub fn is_everything(&self) -> bool {
        self.cgroups.is_empty()
            && self.pods.is_empty()
            && self.namespaces.is_empty()
            && self.containers.is_empty()
    }

    /// Whether keeping a cgroup depends on pod or container names, which
    /// may appear after the cgroup does.
    #[must_use]
    pub fn uses_names(&self) -> bool {
        !(self.pods.is_empty() && self.namespaces.is_empty() && self.containers.is_empty())
    }

    /// Whether the cgroup at `path`, with this identity, is kept.
    #[must_use]
    pub fn keeps(&self, path: &str, identity: &Identity) -> bool {
        let path_kept = self.cgroups.is_empty() || self.cgroups.iter().any(|p| subtree(p, path));
        let pod_kept = self.pods.is_empty()
            || self.pods.iter().any(|wanted| {
                identity.pod.as_deref() == Some(wanted.as_str())
                    || matches!(&identity.workload, super::path::Workload::Pod { uid, .. } if uid == wanted)
            });
        let namespace_kept = self.namespaces.is_empty()
            || self
                .namespaces
                .iter()
                .any(|wanted| identity.namespace.as_deref() == Some(wanted.as_str()));
        let container_kept = self.containers.is_empty()
            || self.containers.iter().any(|wanted| {
                identity.container.as_deref() == Some(wanted.as_str())
                    || (wanted.len() >= 8
                        && identity
                            .container_id()
                            .is_some_and(|id| id.starts_with(wanted.as_str())))
            });
        path_kept && pod_kept && namespace_kept && container_kept
    }

    /// The options, as a user would type them (for messages).
    #[must_use]
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (flag, values) in [
            ("--cgroup", &self.cgroups),
            ("--pod", &self.pods),
            ("--namespace", &self.namespaces),
            ("--container", &self.containers),
        ] {
            parts.extend(values.iter().map(|v| format!("{flag} {v}")));
        }
        if parts.is_empty() {
            "everything".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

/// `kubepods/x/` → `/kubepods/x`.
fn normalise(pattern: &str) -> String {
    format!("/{}", pattern.trim_matches('/'))
}

/// Whether `pattern` matches `path` or one of its ancestors.
fn subtree(pattern: &str, path: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    let path: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    prefix_matches(&pattern, &path)
}

/// Whether the components of `pattern` match a prefix of `path`'s.
fn prefix_matches(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => true,
        Some((&"**", rest)) => (0..=path.len()).any(|skip| prefix_matches(rest, &path[skip..])),
        Some((first, rest)) => path.split_first().is_some_and(|(component, tail)| {
            wildcard(first, component) && prefix_matches(rest, tail)
        }),
    }
}

/// The characters of `pattern`, each with whether a backslash made it
/// literal.
fn unescaped_chars(pattern: &str) -> Vec<(char, bool)> {
    let mut chars = pattern.chars();
    let mut out = Vec::new();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next)) => {
                chars.next();
                out.push((next, true));
            }
            _ => out.push((c, false)),
        }
    }
    out
}

/// Whether `pattern` holds a wildcard that no backslash made literal.
#[must_use]
pub fn has_wildcards(pattern: &str) -> bool {
    unescaped_chars(pattern)
        .iter()
        .any(|(c, literal)| !literal && matches!(c, '*' | '?' | '['))
}

/// `pattern` with its backslash escapes taken out: the text it matches
/// when it has no wildcards.
#[must_use]
pub fn unescape(pattern: &str) -> String {
    unescaped_chars(pattern)
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

/// Shell-style matching of one component: `*`, `?`, `[abc]`, `[a-z]`, `[!x]`,
/// and `\x` for a literal `x`.
pub(crate) fn wildcard(pattern: &str, text: &str) -> bool {
    let pattern = unescaped_chars(pattern);
    let text: Vec<char> = text.chars().collect();
    matches_from(&pattern, &text)
}

fn matches_from(pattern: &[(char, bool)], text: &[char]) -> bool {
    let Some(&(first, literal)) = pattern.first() else {
        return text.is_empty();
    };
    let one = |c: char| text.first() == Some(&c) && matches_from(&pattern[1..], &text[1..]);
    if literal {
        return one(first);
    }
    match first {
        '*' => (0..=text.len()).any(|skip| matches_from(&pattern[1..], &text[skip..])),
        '?' => !text.is_empty() && matches_from(&pattern[1..], &text[1..]),
        '[' => {
            let Some(close) = pattern
                .iter()
                .skip(2)
                .position(|&(c, literal)| c == ']' && !literal)
                .map(|p| p + 2)
            else {
                return one('[');
            };
            let Some(&c) = text.first() else {
                return false;
            };
            let class: Vec<char> = pattern[1..close].iter().map(|(c, _)| *c).collect();
            let (negate, class) = match class.first() {
                Some('!' | '^') => (true, &class[1..]),
                _ => (false, &class[..]),
            };
            in_class(class, c) != negate && matches_from(&pattern[close + 1..], &text[1..])
        }
        other => one(other),
    }
}

fn in_class(class: &[char], c: char) -> bool {
    let mut i = 0;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == '-' {
            if (class[i]..=class[i + 2]).contains(&c) {
                return true;
            }
            i += 3;
        } else {
            if class[i] == c {
                return true;
            }
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::{Selector, wildcard};
    use crate::identity::Identity;

    const UID: &str = "1a2b3c4d-0000-4e5f-8a9b-0c1d2e3f4a5b";
    const ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    fn named(path: &str, namespace: &str, pod: &str, container: Option<&str>) -> Identity {
        Identity {
            namespace: Some(namespace.into()),
            pod: Some(pod.into()),
            container: container.map(Into::into),
            ..Identity::unnamed(path)
        }
    }

    fn keeps(selector: &Selector, path: &str) -> bool {
        selector.keeps(path, &Identity::unnamed(path))
    }

    #[test]
    fn paths_keep_subtrees_only() {
        let selector = Selector::paths(&["kubepods/", "/system.slice/docker.service"]);
        assert!(keeps(&selector, "/kubepods"));
        assert!(keeps(&selector, "/kubepods/burstable/pod1/abc"));
        assert!(!keeps(&selector, "/kubepods-old"));
        assert!(!keeps(&selector, "/"));
        assert!(keeps(&selector, "/system.slice/docker.service"));
        assert!(!keeps(&selector, "/system.slice"));
        assert!(keeps(&Selector::default(), "/anything"));
        assert!(keeps(&Selector::paths(&["/"]), "/anything"));
    }

    #[test]
    fn globs_match_whole_components() {
        let selector = Selector::paths(&["/kubepods/*/pod*"]);
        assert!(keeps(
            &selector,
            &format!("/kubepods/burstable/pod{UID}/{ID}")
        ));
        assert!(keeps(&selector, &format!("/kubepods/besteffort/pod{UID}")));
        assert!(!keeps(&selector, "/kubepods/burstable"));
        assert!(
            !keeps(&selector, &format!("/kubepods/pod{UID}")),
            "* is one component"
        );
        let anywhere = Selector::paths(&["/**/docker-*.scope"]);
        assert!(keeps(
            &anywhere,
            &format!("/system.slice/docker-{ID}.scope")
        ));
        assert!(keeps(&anywhere, &format!("/docker-{ID}.scope")));
        assert!(!keeps(&anywhere, "/system.slice/containerd.service"));
        assert!(wildcard("cgtrace-test-[0-9]*", "cgtrace-test-42"));
        assert!(!wildcard("cgtrace-test-[!0-9]*", "cgtrace-test-42"));
        assert!(wildcard("a?c", "abc"));
        assert!(!wildcard("a?c", "ac"));
        assert!(wildcard("[", "["), "an unclosed class is a literal");
    }

    /// Names that hold wildcards, brackets or `..` themselves: a backslash
    /// asks for the character literally, and nothing else is special.
    #[test]
    fn escaped_wildcards_match_only_themselves() {
        let selector = Selector::new(&[r"/batch\*\[..\]".to_owned()], &[], &[], &[]).unwrap();
        assert!(keeps(&selector, "/batch*[..]"));
        assert!(keeps(&selector, "/batch*[..]/child"));
        assert!(!keeps(&selector, "/batch-1[..]"), "the star is literal");
        assert!(!keeps(&selector, "/batch*x"));
        let unescaped = Selector::new(&["/batch*".to_owned()], &[], &[], &[]).unwrap();
        assert!(keeps(&unescaped, "/batch-1[..]"), "unescaped, a wildcard");
        assert!(
            keeps(&Selector::paths(&["/a/../b"]), "/a/../b"),
            "`..` is a name"
        );
        assert!(!keeps(&Selector::paths(&["/a/../b"]), "/b"));
        assert!(wildcard(r"\?x\\", "?x\\"));
        assert!(!wildcard(r"\?x", "ax"));
        assert!(super::has_wildcards("a*") && !super::has_wildcards(r"a\*"));
        assert_eq!(super::unescape(r"a\*b\["), "a*b[");
        assert!(
            Selector::new(&[r"/x\[".to_owned()], &[], &[], &[]).is_ok(),
            "an escaped bracket needs no partner"
        );
    }

    #[test]
    fn pods_namespaces_and_containers_combine() {
        let pod = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            UID.replace('-', "_")
        );
        let container = format!("{pod}/cri-containerd-{ID}.scope");
        let shop_app = named(&container, "shop", "web-0", Some("app"));
        let shop_pod = named(&pod, "shop", "web-0", None);
        let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let namespace = Selector::new(&[], &[], &strings(&["shop"]), &[]).unwrap();
        assert!(namespace.keeps(&container, &shop_app));
        assert!(namespace.keeps(&pod, &shop_pod));
        assert!(!namespace.keeps(
            &container,
            &named(&container, "other", "web-0", Some("app"))
        ));
        assert!(
            !namespace.keeps(&pod, &Identity::unnamed(&pod)),
            "unnamed: unknown"
        );
        assert!(namespace.uses_names());

        let both = Selector::new(&[], &[], &strings(&["shop"]), &strings(&["app"])).unwrap();
        assert!(both.keeps(&container, &shop_app));
        assert!(
            !both.keeps(&pod, &shop_pod),
            "the pod itself is not the container"
        );
        let by_id = Selector::new(&[], &[], &[], &strings(&[&ID[..12]])).unwrap();
        assert!(by_id.keeps(&container, &Identity::unnamed(&container)));
        let by_pod_uid = Selector::new(&[], &strings(&[UID]), &[], &[]).unwrap();
        assert!(by_pod_uid.keeps(&container, &Identity::unnamed(&container)));
        let pods = Selector::new(&[], &strings(&["web-0", "web-1"]), &[], &[]).unwrap();
        assert!(pods.keeps(&container, &shop_app));
        assert!(!pods.keeps("/system.slice", &Identity::unnamed("/system.slice")));
        assert_eq!(both.describe(), "--namespace shop --container app");
        assert!(Selector::new(&strings(&["/a[b"]), &[], &[], &[]).is_err());
    }
}
