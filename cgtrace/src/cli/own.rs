//! `cgtrace __own DIR UID:GID`: creates a directory for the agent and
//! gives it to the agent's user. A DaemonSet's init container runs it as
//! root with only CAP_CHOWN, because a hostPath directory the kubelet
//! creates belongs to root, and the agent itself runs as another user.

use std::{os::unix::fs::PermissionsExt as _, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;

use super::Outcome;

#[derive(Debug, Args)]
pub struct OwnArgs {
    /// The directory (created if missing, with its parents).
    pub dir: PathBuf,
    /// Its new owner, as numbers: `65534:65534`.
    pub owner: String,
}

pub fn run(args: &OwnArgs) -> anyhow::Result<Outcome> {
    let (uid, gid) = parse_owner(&args.owner)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    // The recordings say what ran on the node: for the agent alone. The
    // mode first: once the directory is given away, changing it would need
    // CAP_FOWNER too.
    std::fs::set_permissions(&args.dir, std::fs::Permissions::from_mode(0o750))
        .with_context(|| format!("cannot set the mode of {}", args.dir.display()))?;
    std::os::unix::fs::chown(&args.dir, Some(uid), Some(gid)).with_context(|| {
        format!(
            "cannot give {} to {uid}:{gid} (needs CAP_CHOWN)",
            args.dir.display()
        )
    })?;
    crate::note!("cgtrace: {} belongs to {uid}:{gid}", args.dir.display());
    Ok(Outcome::Success)
}

fn parse_owner(owner: &str) -> anyhow::Result<(u32, u32)> {
    let parsed = owner
        .split_once(':')
        .and_then(|(uid, gid)| Some((uid.parse().ok()?, gid.parse().ok()?)));
    match parsed {
        Some(ids) => Ok(ids),
        None => bail!("the owner must be UID:GID in numbers (as 65534:65534), not {owner:?}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn owners_are_numbers() {
        assert_eq!(super::parse_owner("65534:65534").unwrap(), (65534, 65534));
        assert!(super::parse_owner("nobody:nogroup").is_err());
        assert!(super::parse_owner("65534").is_err());
    }
}
