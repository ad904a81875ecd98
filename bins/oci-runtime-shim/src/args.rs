//! Command-line parsing: global options, then one operation with its own options.
//!
//! Parsed by hand, in order, because `exec ID CMD ARGS...` must stop at the container id: every
//! word after it belongs to the command, however much it looks like an option.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;

#[derive(Debug, Default, PartialEq)]
pub struct Global {
    pub runtime: Option<String>,
    pub root: Option<PathBuf>,
    pub debug: bool,
}

#[derive(Debug, PartialEq)]
pub enum Op {
    Run {
        bundle: PathBuf,
        pid_file: Option<PathBuf>,
        id: Option<String>,
        /// Remove the bundle when the run has ended (the front's throwaway bundles).
        remove_bundle: bool,
        /// `DEV:INO` oci-mkspec recorded: remove the bundle only if it is still that directory.
        bundle_inode: Option<(u64, u64)>,
    },
    /// Remove a throwaway bundle whose run never started (the front's failure path).
    RemoveBundle {
        bundle: PathBuf,
        bundle_inode: Option<(u64, u64)>,
    },
    Create {
        bundle: PathBuf,
        pid_file: Option<PathBuf>,
        id: String,
    },
    Start(String),
    State(String),
    List,
    Kill {
        id: String,
        signal: String,
    },
    Delete {
        id: String,
        force: bool,
    },
    Exec {
        id: String,
        tty: bool,
        env: Vec<String>,
        cwd: Option<String>,
        command: Vec<String>,
    },
    Pause(String),
    Resume(String),
    Update {
        id: String,
        from: String,
    },
    /// conmon's exit command for a container of oci-conmon-create.
    ConmonExited {
        bundle: PathBuf,
        id: String,
    },
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Run { .. } => "run",
            Op::RemoveBundle { .. } => "remove-bundle",
            Op::Create { .. } => "create",
            Op::Start(_) => "start",
            Op::State(_) => "state",
            Op::List => "list",
            Op::Kill { .. } => "kill",
            Op::Delete { .. } => "delete",
            Op::Exec { .. } => "exec",
            Op::Pause(_) => "pause",
            Op::Resume(_) => "resume",
            Op::Update { .. } => "update",
            Op::ConmonExited { .. } => "conmon-exited",
        }
    }
}

/// A cursor over the words, with `--opt=value` split into option and value.
struct Words {
    v: Vec<String>,
    i: usize,
}

impl Words {
    fn new(raw: Vec<String>) -> Words {
        let mut v = Vec::new();
        for w in raw {
            match w.split_once('=') {
                Some((o, val)) if o.starts_with("--") => {
                    v.push(o.to_string());
                    v.push(val.to_string());
                }
                _ => v.push(w),
            }
        }
        Words { v, i: 0 }
    }
    fn peek(&self) -> Option<&str> {
        self.v.get(self.i).map(String::as_str)
    }
    fn next(&mut self) -> Option<String> {
        let w = self.v.get(self.i).cloned();
        self.i += 1;
        w
    }
    fn value(&mut self, opt: &str) -> Result<String> {
        self.next()
            .with_context(|| format!("option '{opt}' needs a value"))
    }
    fn rest(&mut self) -> Vec<String> {
        let r = self.v[self.i.min(self.v.len())..].to_vec();
        self.i = self.v.len();
        r
    }
}

fn is_option(w: &str) -> bool {
    w.starts_with('-') && w.len() > 1
}

/// Parse everything. `after_dashdash` is what followed a literal `--` (the exec command).
pub fn parse(
    raw: Vec<String>,
    after_dashdash: Vec<String>,
    had_dashdash: bool,
) -> Result<(Global, Op)> {
    let mut w = Words::new(raw);
    let mut g = Global::default();
    let op = loop {
        let Some(word) = w.next() else {
            bail!(
                "no operation given (run, create, start, state, list, kill, delete, exec, pause, resume, update; see --help)"
            );
        };
        match word.as_str() {
            "--runtime" => g.runtime = Some(w.value("--runtime")?),
            "--root" => g.root = Some(PathBuf::from(w.value("--root")?)),
            "--debug" => g.debug = true,
            o if is_option(o) => bail!("unknown option '{o}' (see --help)"),
            _ => break word,
        }
    };
    let parsed = match op.as_str() {
        "run" | "create" | "remove-bundle" => parse_bundle_op(&op, &mut w)?,
        "start" | "state" | "pause" | "resume" => {
            let id = only_id(&op, &mut w)?;
            match op.as_str() {
                "start" => Op::Start(id),
                "state" => Op::State(id),
                "pause" => Op::Pause(id),
                _ => Op::Resume(id),
            }
        }
        "list" => {
            no_more(&op, &mut w)?;
            Op::List
        }
        "conmon-exited" => {
            let mut bundle = None;
            let mut id = None;
            while let Some(x) = w.next() {
                match x.as_str() {
                    "-b" | "--bundle" => bundle = Some(PathBuf::from(w.value(&x)?)),
                    o if is_option(o) => bail!("unknown option '{o}' for conmon-exited"),
                    _ if id.is_none() => id = Some(x),
                    _ => bail!("unexpected argument '{x}' for conmon-exited"),
                }
            }
            Op::ConmonExited {
                bundle: bundle.context("conmon-exited needs --bundle DIR")?,
                id: id.context("conmon-exited needs a container id")?,
            }
        }
        "kill" => parse_kill(&mut w)?,
        "delete" => {
            let mut force = false;
            let mut id = None;
            while let Some(x) = w.next() {
                match x.as_str() {
                    "-f" | "--force" => force = true,
                    o if is_option(o) => bail!("unknown option '{o}' for delete"),
                    _ if id.is_none() => id = Some(x),
                    _ => bail!("unexpected argument '{x}' for delete"),
                }
            }
            Op::Delete {
                id: id.context("delete needs a container id")?,
                force,
            }
        }
        "exec" => return parse_exec(w, after_dashdash, had_dashdash).map(|op| (g, op)),
        "update" => {
            let mut from = None;
            let mut id = None;
            while let Some(x) = w.next() {
                match x.as_str() {
                    "-f" | "--from-file" | "-r" | "--resources" => from = Some(w.value(&x)?),
                    o if is_option(o) => bail!("unknown option '{o}' for update"),
                    _ if id.is_none() => id = Some(x),
                    _ => bail!("unexpected argument '{x}' for update"),
                }
            }
            let from = from.context("update needs -f FILE (or -f - for stdin)")?;
            if from.is_empty() {
                bail!("update: -f needs a file name (or '-' for stdin)");
            }
            Op::Update {
                id: id.context("update needs a container id")?,
                from,
            }
        }
        other => bail!("unknown operation '{other}' (see --help)"),
    };
    if had_dashdash {
        bail!("'--' is only used by exec");
    }
    Ok((g, parsed))
}

fn only_id(op: &str, w: &mut Words) -> Result<String> {
    let id = match w.next() {
        Some(x) if is_option(&x) => bail!("unknown option '{x}' for {op}"),
        Some(x) => x,
        None => bail!("{op} needs a container id"),
    };
    no_more(op, w)?;
    Ok(id)
}

fn no_more(op: &str, w: &mut Words) -> Result<()> {
    match w.next() {
        Some(x) => bail!("unexpected argument '{x}' for {op}"),
        None => Ok(()),
    }
}

fn parse_bundle_op(op: &str, w: &mut Words) -> Result<Op> {
    let mut bundle = None;
    let mut pid_file = None;
    let mut id = None;
    let mut remove_bundle = false;
    let mut bundle_inode = None;
    let removes = op == "run" || op == "remove-bundle";
    while let Some(x) = w.next() {
        match x.as_str() {
            "-b" | "--bundle" => bundle = Some(PathBuf::from(w.value(&x)?)),
            "--pid-file" if op != "remove-bundle" => pid_file = Some(PathBuf::from(w.value(&x)?)),
            "--remove-bundle" if op == "run" => remove_bundle = true,
            "--bundle-inode" if removes => {
                bundle_inode = Some(crate::cleanup::parse_dev_ino(&w.value(&x)?)?)
            }
            o if is_option(o) => bail!("unknown option '{o}' for {op}"),
            _ if id.is_none() => id = Some(x),
            _ => bail!("unexpected argument '{x}' for {op}"),
        }
    }
    let bundle = bundle.with_context(|| format!("{op} needs --bundle DIR"))?;
    Ok(if op == "run" {
        Op::Run {
            bundle,
            pid_file,
            id,
            remove_bundle,
            bundle_inode,
        }
    } else if op == "remove-bundle" {
        if let Some(x) = id {
            bail!("unexpected argument '{x}' for {op}");
        }
        Op::RemoveBundle {
            bundle,
            bundle_inode,
        }
    } else {
        Op::Create {
            bundle,
            pid_file,
            id: id.context("create needs a container id")?,
        }
    })
}

fn parse_kill(w: &mut Words) -> Result<Op> {
    let mut signal: Option<String> = None;
    let mut force = false;
    let mut pos = Vec::new();
    while let Some(x) = w.next() {
        match x.as_str() {
            "-s" | "--signal" => signal = Some(w.value(&x)?),
            "-f" | "--force" => force = true,
            o if is_option(o) && !o[1..].starts_with(|c: char| c.is_ascii_digit()) => {
                bail!("unknown option '{o}' for kill")
            }
            _ => pos.push(x),
        }
    }
    let mut pos = pos.into_iter();
    let id = pos.next().context("kill needs a container id")?;
    let positional = pos.next();
    if let Some(x) = pos.next() {
        bail!("unexpected argument '{x}' for kill");
    }
    let signal = common::lifecycle::ops::kill::signal_to_send(
        signal.as_deref(),
        positional.as_deref(),
        force,
    );
    Ok(Op::Kill { id, signal })
}

fn parse_exec(mut w: Words, after: Vec<String>, had_dashdash: bool) -> Result<Op> {
    let mut tty = false;
    let mut env = Vec::new();
    let mut cwd = None;
    let id = loop {
        let Some(x) = w.next() else {
            bail!("exec needs a container id and a command");
        };
        match x.as_str() {
            "-t" | "--tty" => tty = true,
            "-e" | "--env" => {
                let kv = w.value(&x)?;
                if !kv.contains('=') || kv.starts_with('=') {
                    bail!("--env needs NAME=VALUE, got '{kv}'");
                }
                env.push(kv);
            }
            "--cwd" => cwd = Some(w.value(&x)?),
            o if is_option(o) => bail!("unknown option '{o}' for exec"),
            _ => break x,
        }
    };
    let mut command = w.rest();
    if had_dashdash {
        command.extend(after);
    }
    if command.is_empty() {
        bail!("exec needs a command after the container id");
    }
    let _ = w.peek();
    Ok(Op::Exec {
        id,
        tty,
        env,
        cwd,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Result<(Global, Op)> {
        let v: Vec<String> = s.iter().map(|x| x.to_string()).collect();
        let (before, after, dd) = match v.iter().position(|x| x == "--") {
            Some(i) => (v[..i].to_vec(), v[i + 1..].to_vec(), true),
            None => (v, vec![], false),
        };
        parse(before, after, dd)
    }

    #[test]
    fn globals_then_run() {
        let (g, op) = p(&[
            "--runtime",
            "runc",
            "--root=/r",
            "--debug",
            "run",
            "-b",
            "B",
            "id1",
        ])
        .unwrap();
        assert_eq!(g.runtime.as_deref(), Some("runc"));
        assert_eq!(g.root, Some(PathBuf::from("/r")));
        assert!(g.debug);
        assert_eq!(
            op,
            Op::Run {
                bundle: "B".into(),
                pid_file: None,
                id: Some("id1".into()),
                remove_bundle: false,
                bundle_inode: None,
            }
        );
    }

    #[test]
    fn exec_command_words_are_not_options() {
        let (_, op) = p(&["exec", "-t", "--env", "A=1", "c1", "ls", "-l", "--color"]).unwrap();
        assert_eq!(
            op,
            Op::Exec {
                id: "c1".into(),
                tty: true,
                env: vec!["A=1".into()],
                cwd: None,
                command: vec!["ls".into(), "-l".into(), "--color".into()]
            }
        );
        let (_, op) = p(&["exec", "c1", "--", "sh", "-c", "x"]).unwrap();
        assert!(matches!(op, Op::Exec { command, .. } if command == ["sh", "-c", "x"]));
    }

    #[test]
    fn kill_signal_precedence_follows_singularity() {
        let sig = |s: &[&str]| match p(s).unwrap().1 {
            Op::Kill { signal, .. } => signal,
            _ => unreachable!(),
        };
        assert_eq!(sig(&["kill", "c"]), "TERM");
        assert_eq!(sig(&["kill", "-s", "INT", "c"]), "INT");
        assert_eq!(sig(&["kill", "-s", "INT", "c", "HUP"]), "HUP");
        assert_eq!(sig(&["kill", "-f", "-s", "INT", "c", "HUP"]), "KILL");
    }

    #[test]
    fn bad_input() {
        assert!(p(&[]).is_err());
        assert!(p(&["frobnicate"]).is_err());
        assert!(p(&["run", "id"]).is_err());
        assert!(p(&["create", "-b", "B"]).is_err());
        assert!(p(&["start"]).is_err());
        assert!(p(&["start", "a", "b"]).is_err());
        assert!(p(&["update", "c"]).is_err());
        assert!(p(&["exec", "c"]).is_err());
        assert!(p(&["exec", "--env", "novalue", "c", "true"]).is_err());
        assert!(p(&["--bogus", "list"]).is_err());
        assert!(p(&["state", "c", "--", "x"]).is_err());
        assert!(p(&["conmon-exited", "c"]).is_err());
        assert!(p(&["conmon-exited", "-b", "B"]).is_err());
    }

    #[test]
    fn conmon_exit_command() {
        let (g, op) = p(&["--root", "/r", "conmon-exited", "--bundle", "/b", "c1"]).unwrap();
        assert_eq!(g.root, Some(PathBuf::from("/r")));
        assert_eq!(
            op,
            Op::ConmonExited {
                bundle: "/b".into(),
                id: "c1".into()
            }
        );
    }
}
