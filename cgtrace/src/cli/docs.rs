//! `cgtrace completions SHELL` and the man pages: both generated from the
//! command-line definitions, so they cannot drift from what the binary
//! accepts. `cargo xtask dist` installs them with the package.

use std::{io, path::PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _};
use clap_complete::Shell;

use super::{Cli, Outcome};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// Writes the shell's completion script to stdout (for bash:
/// `cgtrace completions bash > /etc/bash_completion.d/cgtrace`).
pub fn completions(args: &CompletionsArgs) -> anyhow::Result<Outcome> {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "cgtrace", &mut io::stdout());
    Ok(Outcome::Success)
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write `cgtrace.1` and a `cgtrace-SUBCOMMAND.1` for
    /// each subcommand into.
    #[arg(long)]
    pub out: PathBuf,
}

/// Writes the man pages: one for cgtrace, one per visible subcommand.
pub fn man(args: &ManArgs) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut command = Cli::command();
    command.build();
    write_page(&command, "cgtrace", args)?;
    // `help` is clap's own, and says nothing a page would not.
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("cgtrace-{}", sub.get_name());
        write_page(&sub.clone().name(name.clone()), &name, args)?;
    }
    Ok(Outcome::Success)
}

fn write_page(command: &clap::Command, name: &str, args: &ManArgs) -> anyhow::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    let path = args.out.join(format!("{name}.1"));
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::{Cli, ManArgs, man};
    use clap::CommandFactory as _;

    #[test]
    fn a_man_page_per_visible_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        man(&ManArgs {
            out: dir.path().to_owned(),
        })
        .unwrap();
        let page = std::fs::read_to_string(dir.path().join("cgtrace-oom.1")).unwrap();
        assert!(page.contains(".TH cgtrace-oom"), "{page}");
        assert!(page.contains("follow"), "its options: {page}");
        assert!(dir.path().join("cgtrace.1").exists());
        assert!(!dir.path().join("cgtrace-__memhog.1").exists());
        let visible = Cli::command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .count();
        // cgtrace.1 and one per visible subcommand.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), visible + 1);
    }
}
