//! The man page and the shell completions, generated from the clap definition of the command line
//! so they never drift from it. The Debian package ships their output (scripts/build-deb.sh).

use std::io::{self, Write};

use clap_complete::Shell;

/// Writes the completion script of `shell` for `command`.
pub fn completions(shell: Shell, mut command: clap::Command, out: &mut impl Write) {
    let name = command.get_name().to_owned();
    clap_complete::generate(shell, &mut command, name, out);
}

/// Writes the man page of `command`, in roff, for section 1.
pub fn man_page(command: clap::Command, out: &mut impl Write) -> io::Result<()> {
    clap_mangen::Man::new(command).render(out)
}
