//! Switching to another user for one command with `setpriv` (util-linux): no PAM, no login
//! shell, nothing of the caller's kept but what the command line says.

use crate::Ctx;
use crate::tools::require_tool;
use std::ffi::OsStr;
use std::process::Command;

/// The supplementary groups a command gets.
#[derive(Debug, Clone, Copy)]
pub enum Groups<'a> {
    /// The user's own, from the group database (`--init-groups`).
    Init,
    /// None (`--clear-groups`).
    Clear,
    /// Exactly these (`--groups=`).
    Only(&'a [u32]),
}

/// `setpriv --reuid=UID --regid=GID GROUPS --`: the words that run the rest of a command line
/// as `uid`/`gid`; also inside a shell script (`exec WORDS "$@"`).
pub fn setpriv_words(uid: u32, gid: u32, groups: Groups) -> Vec<String> {
    let groups = match groups {
        Groups::Init => "--init-groups".to_string(),
        Groups::Clear => "--clear-groups".to_string(),
        Groups::Only(list) => {
            let list: Vec<String> = list.iter().map(u32::to_string).collect();
            format!("--groups={}", list.join(","))
        }
    };
    vec![
        require_tool("setpriv").display().to_string(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        groups,
        "--".into(),
    ]
}

/// A command running `program` through `words` (a [`setpriv_words`] prefix).
pub fn command_via(words: &[String], program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(&words[0]);
    c.args(&words[1..]).arg(program);
    c
}

impl Ctx {
    /// [`setpriv_words`] for this context's user with the user's own groups, for root too.
    pub fn setpriv_words(&self) -> Vec<String> {
        setpriv_words(self.uid(), self.gid(), Groups::Init)
    }

    /// A `std::process::Command` running `program` as this context's user (directly as root,
    /// through [`Ctx::setpriv_words`] otherwise), with exactly [`Ctx::base_env`], in
    /// [`Ctx::dir`]: for what [`crate::Cmd`] does not do (background processes, terminals).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match self.user() {
            None => self.prepared(Command::new(program)),
            Some(_) => self.prepared(command_via(&self.setpriv_words(), program)),
        }
    }

    /// [`Ctx::command`] through setpriv with exactly `groups` as supplementary groups.
    pub fn command_in_groups(&self, groups: &[u32], program: impl AsRef<OsStr>) -> Command {
        let words = setpriv_words(self.uid(), self.gid(), Groups::Only(groups));
        self.prepared(command_via(&words, program))
    }

    fn prepared(&self, mut c: Command) -> Command {
        c.env_clear().envs(self.base_env()).current_dir(self.dir());
        c
    }
}
