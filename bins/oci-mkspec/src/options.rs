//! Command-line and `SINGULARITY_<FLAG>` parsing.
//!
//! oci-mkspec accepts Singularity's own flag names so the front can hand them over unchanged.
//! A flag given on the command line wins over its environment variable, except for `--bind` and
//! `--mount`, where Singularity appends the environment value to the command-line values.

use anyhow::{Context, Result, bail};
use pico_args::Arguments;
use std::path::PathBuf;

/// What the container runs: Singularity's four actions, and an instance's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Exec,
    Run,
    Shell,
    Test,
    /// `instance start`: an OCI image's ENTRYPOINT/CMD (as `run`), a Singularity image's
    /// startscript.
    Start,
}

impl Action {
    pub fn parse(s: &str) -> Result<Action> {
        Ok(match s {
            "exec" => Action::Exec,
            "run" => Action::Run,
            "shell" => Action::Shell,
            "test" => Action::Test,
            "start" => Action::Start,
            _ => bail!("unknown --action '{s}' (expected exec, run, shell, test or start)"),
        })
    }
}

/// Every option oci-mkspec understands, after merging the environment equivalents.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub bundle: Option<PathBuf>,
    pub input: Option<PathBuf>,
    pub action: Option<Action>,
    pub runtime: Option<String>,
    /// `--terminal` / `--no-terminal`: whether the container gets a terminal (see main.rs).
    pub terminal: Option<bool>,
    pub binds: Vec<String>,
    pub mounts: Vec<String>,
    pub home: Option<String>,
    pub no_home: bool,
    pub scratch: Vec<String>,
    pub workdir: Option<String>,
    pub no_mount: Vec<String>,
    pub env: Vec<String>,
    pub env_files: Vec<String>,
    pub cleanenv: bool,
    /// `--contain` (also set by `--containall`): share no host directories by default.
    pub contain: bool,
    pub cwd: Option<String>,
    pub hostname: Option<String>,
    pub dns: Option<String>,
    pub uts: bool,
    pub pid: bool,
    pub ipc: bool,
    pub no_pid: bool,
    /// `--no-init`: the command itself is PID 1 (init.rs).
    pub no_init: bool,
    pub net: bool,
    pub network: Option<String>,
    pub userns: bool,
    pub add_caps: Option<String>,
    pub drop_caps: Option<String>,
    pub keep_privs: bool,
    pub no_privs: bool,
    pub allow_setuid: bool,
    pub writable_tmpfs: bool,
    pub no_compat: bool,
    pub compat: bool,
    pub fakeroot: bool,
    pub app: Option<String>,
    pub no_umask: bool,
    pub no_setgroups: bool,
    pub no_eval: bool,
    pub containlibs: Vec<String>,
    /// `--device`: fully qualified CDI device names, in order (comma lists split).
    pub devices: Vec<String>,
    /// `--cdi-dirs`: the CDI spec directories instead of the defaults.
    pub cdi_dirs: Vec<String>,
    /// `--nv` and `--rocm` (each cancelled by its `--no-` flag).
    pub nv: bool,
    pub rocm: bool,
    pub tmpfs_size_mib: Option<u64>,
    /// `--overlay DIR[:ro]`, in the order given (common::overlay).
    pub overlays: Vec<common::overlay::OverlayDir>,
    pub cgroups: CgroupFlags,
    /// Launcher-option names of rejected flags (Singularity's error tokens), in order.
    pub unsupported: Vec<String>,
}

/// The cgroup limit flags, still as text (validated in `cgroups.rs`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CgroupFlags {
    pub apply_cgroups: Option<String>,
    pub cpus: Option<String>,
    pub cpu_shares: Option<String>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    pub memory: Option<String>,
    pub memory_reservation: Option<String>,
    pub memory_swap: Option<String>,
    pub oom_kill_disable: bool,
    pub pids_limit: Option<String>,
    pub blkio_weight: Option<String>,
    pub blkio_weight_device: Vec<String>,
}

/// Where the environment equivalents are read from (a function so tests can inject them).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Go's strconv.ParseBool, which Singularity uses for boolean environment variables.
fn parse_bool(name: &str, v: &str) -> Result<bool> {
    match v.trim() {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => bail!("{name}={other} is not a boolean (use 1/0 or true/false)"),
    }
}

struct Parser<'a> {
    args: Arguments,
    env: EnvLookup<'a>,
    /// Every option asked for, in order, and whether it takes a value: the one list of what
    /// oci-mkspec accepts (`option_names`, the `--help` lines, the front's routing).
    asked: Vec<(&'static str, bool)>,
}

impl Parser<'_> {
    fn ask(&mut self, long: &'static str, short: Option<&'static str>, value: bool) {
        self.asked.push((long, value));
        if let Some(s) = short {
            self.asked.push((s, value));
        }
    }

    fn env_value(&self, keys: &[&str]) -> Option<(String, String)> {
        keys.iter().find_map(|k| {
            let name = format!("SINGULARITY_{k}");
            (self.env)(&name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name, v))
        })
    }

    /// A boolean flag, possibly repeated, with `SINGULARITY_<KEY>` equivalents.
    fn flag(
        &mut self,
        long: &'static str,
        short: Option<&'static str>,
        env: &[&str],
    ) -> Result<bool> {
        self.ask(long, short, false);
        let mut seen = false;
        loop {
            let hit = match short {
                Some(s) => self.args.contains([s, long]),
                None => self.args.contains(long),
            };
            if !hit {
                break;
            }
            seen = true;
        }
        if seen {
            return Ok(true);
        }
        match self.env_value(env) {
            Some((name, v)) => parse_bool(&name, &v),
            None => Ok(false),
        }
    }

    /// Every value of a repeatable option, in the order given. pico-args would return every
    /// `--long` before any `-s` (and every `--long V` before any `--long=V`), which reorders
    /// layered options such as `--bind`/`-B` and `--overlay`/`-o`: the words are scanned here.
    fn raw_values(
        &mut self,
        long: &'static str,
        short: Option<&'static str>,
    ) -> Result<Vec<String>> {
        self.ask(long, short, true);
        let words = std::mem::replace(&mut self.args, Arguments::from_vec(Vec::new())).finish();
        let mut rest = Vec::with_capacity(words.len());
        let mut values = Vec::new();
        let mut words = words.into_iter();
        let is_key = |w: &str| w == long || Some(w) == short;
        while let Some(word) = words.next() {
            let Some(w) = word.to_str() else {
                rest.push(word);
                continue;
            };
            if is_key(w) {
                let v = words
                    .next()
                    .with_context(|| format!("the option '{w}' requires a value"))?;
                let v = v
                    .into_string()
                    .map_err(|v| anyhow::anyhow!("bad value for {long}: {v:?} is not UTF-8"))?;
                values.push(v);
            } else if let Some((k, v)) = w.split_once('=')
                && is_key(k)
            {
                values.push(v.to_string());
            } else {
                rest.push(word);
            }
        }
        self.args = Arguments::from_vec(rest);
        Ok(values)
    }

    /// A single-valued option: the last one given wins; the environment only if none was given.
    fn value(
        &mut self,
        long: &'static str,
        short: Option<&'static str>,
        env: &[&str],
    ) -> Result<Option<String>> {
        let mut v = self.raw_values(long, short)?;
        if let Some(last) = v.pop() {
            return Ok(Some(last));
        }
        Ok(self.env_value(env).map(|(_, v)| v.trim().to_string()))
    }

    /// A repeatable option. `append_env`: the environment value is added after the command-line
    /// values (Singularity's EnvAppendValue for --bind/--mount); otherwise it is used only when the
    /// option is absent.
    fn values(
        &mut self,
        long: &'static str,
        short: Option<&'static str>,
        env: &[&str],
        append_env: bool,
    ) -> Result<Vec<String>> {
        let mut v = self.raw_values(long, short)?;
        if let Some((_, e)) = self.env_value(env).filter(|_| append_env || v.is_empty()) {
            v.push(e);
        }
        Ok(v)
    }
}

/// Split Singularity's "string slice" values (comma separated, spaces trimmed).
pub fn split_commas(values: &[String]) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Every option oci-mkspec accepts (rejected ones included, so that the error names them):
/// `(options that take a value, flags)`, long and short spellings, in the order parsed.
pub fn option_names() -> (Vec<&'static str>, Vec<&'static str>) {
    let mut p = Parser {
        args: Arguments::from_vec(Vec::new()),
        env: &|_| None,
        asked: Vec::new(),
    };
    // With no arguments and no environment nothing fails: every option is asked for once.
    parse_into(&mut p).expect("parsing no options");
    let mut seen = std::collections::HashSet::new();
    p.asked.retain(|(n, _)| seen.insert(*n));
    let pick = |value: bool| {
        p.asked
            .iter()
            .filter(|a| a.1 == value)
            .map(|a| a.0)
            .collect()
    };
    (pick(true), pick(false))
}

/// Parse the options (everything before `--`).
pub fn parse(args: Arguments, env: EnvLookup) -> Result<(Options, Vec<String>)> {
    let mut p = Parser {
        args,
        env,
        asked: Vec::new(),
    };
    parse_into(&mut p)
}

fn parse_into(p: &mut Parser) -> Result<(Options, Vec<String>)> {
    let mut o = Options {
        bundle: p.value("--bundle", None, &[])?.map(PathBuf::from),
        input: p.value("--input", None, &[])?.map(PathBuf::from),
        ..Options::default()
    };
    o.action = p
        .value("--action", None, &[])?
        .map(|a| Action::parse(&a))
        .transpose()?;
    o.runtime = p.value("--runtime", None, &[])?;
    o.terminal = match (
        p.flag("--terminal", None, &[])?,
        p.flag("--no-terminal", None, &[])?,
    ) {
        (true, true) => bail!("--terminal and --no-terminal cannot be used together"),
        (true, false) => Some(true),
        (false, true) => Some(false),
        (false, false) => None,
    };
    o.binds = p.values("--bind", Some("-B"), &["BIND", "BINDPATH"], true)?;
    o.mounts = p.values("--mount", None, &["MOUNT"], true)?;
    o.home = p.value("--home", Some("-H"), &["HOME"])?;
    o.no_home = p.flag("--no-home", None, &["NO_HOME"])?;
    o.scratch =
        split_commas(&p.values("--scratch", Some("-S"), &["SCRATCH", "SCRATCHDIR"], false)?);
    o.workdir = p.value("--workdir", Some("-W"), &["WORKDIR"])?;
    o.no_mount = split_commas(&p.values("--no-mount", None, &["NO_MOUNT"], false)?);
    o.env = p.raw_values("--env", None)?;
    o.env_files = split_commas(&p.values("--env-file", None, &["ENV_FILE"], false)?);
    o.cleanenv = p.flag("--cleanenv", Some("-e"), &["CLEANENV"])?;
    // SingularityCE's OCI launcher rejects these two. Workflow managers (cwltool) always send
    // --contain, and their meaning fits an OCI container: the compat default already shares
    // no host /tmp, home or working directory; with --no-compat, --contain keeps them out.
    // --containall is --contain plus --cleanenv (its --pid and --ipc are the default here).
    o.contain = p.flag("--contain", Some("-c"), &["CONTAIN"])?;
    if p.flag("--containall", Some("-C"), &["CONTAINALL"])? {
        o.contain = true;
        o.cleanenv = true;
    }
    let pwd = p.value("--pwd", None, &[])?;
    let cwd = p.value("--cwd", None, &[])?;
    o.cwd = cwd.or(pwd).or_else(|| {
        p.env_value(&["CWD", "TARGET_CWD", "PWD", "TARGET_PWD"])
            .map(|(_, v)| v)
    });
    o.hostname = p.value("--hostname", None, &["HOSTNAME"])?;
    o.dns = p.value("--dns", None, &["DNS"])?;
    o.uts = p.flag("--uts", None, &["UTS", "UNSHARE_UTS"])?;
    o.pid = p.flag("--pid", Some("-p"), &["PID", "UNSHARE_PID"])?;
    o.ipc = p.flag("--ipc", Some("-i"), &["IPC", "UNSHARE_IPC"])?;
    o.no_pid = p.flag("--no-pid", None, &["NO_PID"])?;
    o.no_init = p.flag("--no-init", None, &["NOSHIMINIT", "NO_INIT"])?;
    o.net = p.flag("--net", Some("-n"), &["NET", "UNSHARE_NET"])?;
    o.network = p.value("--network", None, &["NETWORK"])?;
    o.userns = p.flag("--userns", Some("-u"), &["USERNS", "UNSHARE_USERNS"])?;
    o.add_caps = p.value("--add-caps", None, &["ADD_CAPS"])?;
    o.drop_caps = p.value("--drop-caps", None, &["DROP_CAPS"])?;
    o.keep_privs = p.flag("--keep-privs", None, &["KEEP_PRIVS"])?;
    o.no_privs = p.flag("--no-privs", None, &["NO_PRIVS"])?;
    o.allow_setuid = p.flag("--allow-setuid", None, &["ALLOW_SETUID"])?;
    o.writable_tmpfs = p.flag("--writable-tmpfs", None, &["WRITABLE_TMPFS"])?;
    o.no_compat = p.flag("--no-compat", None, &["NO_COMPAT"])?;
    o.compat = p.flag("--compat", None, &["COMPAT"])?;
    o.fakeroot = p.flag("--fakeroot", Some("-f"), &["FAKEROOT"])?;
    o.app = p.value("--app", None, &["APP", "APPNAME"])?;
    o.no_umask = p.flag("--no-umask", None, &["NO_UMASK"])?;
    o.no_setgroups = p.flag("--no-setgroups", None, &["NO_SETGROUPS"])?;
    o.no_eval = p.flag("--no-eval", None, &["NO_EVAL"])?;
    o.containlibs = split_commas(&p.values("--containlibs", None, &["CONTAINLIBS"], false)?);
    // SingularityCE reads no environment variable for these two.
    o.devices = split_commas(&p.values("--device", None, &[], false)?);
    o.cdi_dirs = split_commas(&p.values("--cdi-dirs", None, &[], false)?);
    let nv = p.flag("--nv", None, &["NV"])?;
    let no_nv = p.flag("--no-nv", None, &["NO_NV"])?;
    let rocm = p.flag("--rocm", None, &["ROCM"])?;
    let no_rocm = p.flag("--no-rocm", None, &["NO_ROCM"])?;
    o.nv = nv && !no_nv;
    o.rocm = rocm && !no_rocm;
    o.tmpfs_size_mib = p
        .value("--tmpfs-size", None, &["TMPFS_SIZE"])?
        .map(|v| {
            v.parse::<u64>().ok().filter(|n| *n > 0).with_context(|| {
                format!("--tmpfs-size {v}: expected a size in MiB (a positive integer)")
            })
        })
        .transpose()?;
    // A string slice in SingularityCE: commas separate items, on the command line and in the
    // environment alike.
    o.overlays = common::overlay::parse_specs(&split_commas(&p.values(
        "--overlay",
        Some("-o"),
        &["OVERLAY", "OVERLAYIMAGE"],
        false,
    )?))?;
    // Accepted and ignored, as in Singularity's OCI mode.
    for (long, env) in [
        ("--tmp-sandbox", "TMP_SANDBOX"),
        ("--no-tmp-sandbox", "NO_TMP_SANDBOX"),
        ("--disable-cache", "DISABLE_CACHE"),
    ] {
        p.flag(long, None, &[env])?;
    }

    let c = &mut o.cgroups;
    c.apply_cgroups = p.value("--apply-cgroups", None, &["APPLY_CGROUPS"])?;
    c.cpus = p.value("--cpus", None, &["CPUS"])?;
    c.cpu_shares = p.value("--cpu-shares", None, &["CPU_SHARES"])?;
    c.cpuset_cpus = p.value("--cpuset-cpus", None, &["CPUSET_CPUS"])?;
    c.cpuset_mems = p.value("--cpuset-mems", None, &["CPUSET_MEMS"])?;
    c.memory = p.value("--memory", None, &["MEMORY"])?;
    c.memory_reservation = p.value("--memory-reservation", None, &["MEMORY_RESERVATION"])?;
    c.memory_swap = p.value("--memory-swap", None, &["MEMORY_SWAP"])?;
    c.oom_kill_disable = p.flag("--oom-kill-disable", None, &["OOM_KILL_DISABLE"])?;
    c.pids_limit = p.value("--pids-limit", None, &["PIDS_LIMIT"])?;
    c.blkio_weight = p.value("--blkio-weight", None, &["BLKIO_WEIGHT"])?;
    c.blkio_weight_device = split_commas(&p.values(
        "--blkio-weight-device",
        None,
        &["BLKIO_WEIGHT_DEVICE"],
        false,
    )?);

    // Rejected options (those SingularityCE's OCI mode does not support either): gather them
    // all so one error names every one, as SingularityCE does.
    let mut unsupported = Vec::new();
    let valued: &[(&'static str, Option<&'static str>, &[&str], &str)] = &[
        ("--fusemount", None, &["FUSESPEC"], "FuseMount"),
        ("--network-args", None, &["NETWORK_ARGS"], "NetworkArgs"),
        ("--netns-path", None, &["NETNS_PATH"], "NetnsPath"),
        ("--security", None, &["SECURITY"], "SecurityOpts"),
        ("--config", None, &[], "ConfigFile"),
        ("--shell", Some("-s"), &["SHELL"], "ShellPath"),
        ("--pem-path", None, &[], "KeyInfo"),
        ("--proot", None, &["PROOT"], "Proot"),
        // Not in Singularity's rejection list, but not available in singularity-oci: they
        // need SIF images or FUSE (see oci-mkspec(1)).
        ("--data", None, &[], "Data"),
    ];
    for (long, short, env, token) in valued {
        if !p.values(long, *short, env, false)?.is_empty() {
            unsupported.push(token.to_string());
        }
    }
    let flags: &[(&'static str, Option<&'static str>, &[&str], &str)] = &[
        ("--nvccli", None, &["NVCCLI"], "NvCCLI"),
        ("--boot", None, &["BOOT"], "Boot"),
        ("--passphrase", None, &[], "KeyInfo"),
        ("--sif-fuse", None, &["SIF_FUSE"], "SIFFUSE"),
        ("--writable", Some("-w"), &["WRITABLE"], "Writable"),
    ];
    for (long, short, env, token) in flags {
        if p.flag(long, *short, env)? {
            unsupported.push(token.to_string());
        }
    }
    // --compat: SingularityCE turns on --no-init and --containall and then rejects both in OCI
    // mode, so `--oci --compat` always fails there. Its OCI mode already is the compat mode
    // (tmpfs home, /tmp, writable tmpfs rootfs, umask 0022, clean environment), so --compat is
    // accepted as a no-op here.
    if o.net && o.network.as_deref().unwrap_or("bridge") != "none" {
        unsupported.push("Network (except none)".into());
    }
    let mut seen = std::collections::HashSet::new();
    unsupported.retain(|t| seen.insert(t.clone()));
    o.unsupported = unsupported;

    let mut positionals = Vec::new();
    for a in std::mem::replace(&mut p.args, Arguments::from_vec(Vec::new())).finish() {
        let s = a
            .into_string()
            .map_err(|a| anyhow::anyhow!("argument is not valid UTF-8: {a:?}"))?;
        if s.starts_with('-') && s.len() > 1 {
            bail!("unknown option '{s}' (see --help)");
        }
        positionals.push(s);
    }
    Ok((o, positionals))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Options> {
        let map: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        let a = Arguments::from_vec(args.iter().map(Into::into).collect());
        let (o, pos) = parse(a, &lookup)?;
        assert!(pos.is_empty(), "{pos:?}");
        Ok(o)
    }

    #[test]
    fn repeated_values_keep_the_order_given_whatever_the_spelling() {
        let o = parse_with(
            &[
                "-o",
                "/a:ro",
                "--overlay=/b:ro",
                "--overlay",
                "/c:ro",
                "-o=/d:ro",
            ],
            &[],
        )
        .unwrap();
        let dirs: Vec<_> = o.overlays.iter().map(|d| d.dir.clone()).collect();
        assert_eq!(dirs, ["/a", "/b", "/c", "/d"].map(PathBuf::from));
        let o = parse_with(&["--bind", "/x", "-B", "/y", "--bind=/z"], &[]).unwrap();
        assert_eq!(o.binds, vec!["/x", "/y", "/z"]);
        assert!(parse_with(&["--bind"], &[]).is_err());
    }

    #[test]
    fn binds_repeat_and_env_appends() {
        let o = parse_with(
            &["-B", "/a", "--bind=/b:/c:ro"],
            &[("SINGULARITY_BIND", "/d")],
        )
        .unwrap();
        assert_eq!(o.binds, vec!["/a", "/b:/c:ro", "/d"]);
    }

    #[test]
    fn terminal_is_forced_either_way_or_left_to_detection() {
        assert_eq!(
            parse_with(&["--terminal"], &[]).unwrap().terminal,
            Some(true)
        );
        assert_eq!(
            parse_with(&["--no-terminal"], &[]).unwrap().terminal,
            Some(false)
        );
        assert_eq!(parse_with(&[], &[]).unwrap().terminal, None);
        assert!(parse_with(&["--terminal", "--no-terminal"], &[]).is_err());
    }

    #[test]
    fn flag_beats_env_for_single_values() {
        let o = parse_with(&["--hostname", "x"], &[("SINGULARITY_HOSTNAME", "y")]).unwrap();
        assert_eq!(o.hostname.as_deref(), Some("x"));
        let o = parse_with(&[], &[("SINGULARITY_HOSTNAME", "y")]).unwrap();
        assert_eq!(o.hostname.as_deref(), Some("y"));
    }

    #[test]
    fn boolean_env() {
        let o = parse_with(
            &[],
            &[
                ("SINGULARITY_NO_HOME", "true"),
                ("SINGULARITY_FAKEROOT", "0"),
            ],
        )
        .unwrap();
        assert!(o.no_home && !o.fakeroot);
        assert!(parse_with(&[], &[("SINGULARITY_NO_HOME", "maybe")]).is_err());
    }

    #[test]
    fn unsupported_are_gathered_in_order() {
        let o = parse_with(
            &["--fusemount", "x", "--boot", "--net", "--network", "bridge"],
            &[("SINGULARITY_SHELL", "/bin/zsh")],
        )
        .unwrap();
        assert_eq!(
            o.unsupported,
            vec!["FuseMount", "ShellPath", "Boot", "Network (except none)"]
        );
    }

    #[test]
    fn network_none_is_fine() {
        let o = parse_with(&["--net", "--network", "none"], &[]).unwrap();
        assert!(o.unsupported.is_empty() && o.net);
    }

    #[test]
    fn contain_and_containall_are_accepted() {
        let o = parse_with(&["--contain"], &[]).unwrap();
        assert!(o.contain && !o.cleanenv && o.unsupported.is_empty());
        let o = parse_with(&["-C"], &[]).unwrap();
        assert!(o.contain && o.cleanenv && o.unsupported.is_empty());
        let o = parse_with(&[], &[("SINGULARITY_CONTAIN", "true")]).unwrap();
        assert!(o.contain);
    }

    #[test]
    fn compat_is_accepted() {
        let o = parse_with(&["--compat"], &[]).unwrap();
        assert!(o.compat && o.unsupported.is_empty());
    }

    #[test]
    fn cwd_and_pwd() {
        assert_eq!(
            parse_with(&["--pwd", "/etc"], &[]).unwrap().cwd.as_deref(),
            Some("/etc")
        );
        assert_eq!(
            parse_with(&["--cwd", "/x"], &[]).unwrap().cwd.as_deref(),
            Some("/x")
        );
        assert_eq!(
            parse_with(&[], &[("SINGULARITY_PWD", "/y")])
                .unwrap()
                .cwd
                .as_deref(),
            Some("/y")
        );
    }

    #[test]
    fn unknown_option() {
        assert!(parse_with(&["--bogus"], &[]).is_err());
    }

    #[test]
    fn devices_and_gpus() {
        let o = parse_with(
            &[
                "--device",
                "a.com/b=c,a.com/b=d",
                "--device=x.com/y=all",
                "--cdi-dirs",
                "/e,/f",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(o.devices, vec!["a.com/b=c", "a.com/b=d", "x.com/y=all"]);
        assert_eq!(o.cdi_dirs, vec!["/e", "/f"]);
        assert!(o.unsupported.is_empty() && !o.nv && !o.rocm);
        // As in SingularityCE, no environment variable sets devices.
        let o = parse_with(&[], &[("SINGULARITY_DEVICE", "a.com/b=c")]).unwrap();
        assert!(o.devices.is_empty());
        let o = parse_with(&["--nv"], &[("SINGULARITY_ROCM", "1")]).unwrap();
        assert!(o.nv && o.rocm);
        let o = parse_with(
            &["--nv", "--no-nv", "--rocm"],
            &[("SINGULARITY_NO_ROCM", "1")],
        )
        .unwrap();
        assert!(!o.nv && !o.rocm);
    }

    #[test]
    fn scratch_commas() {
        let o = parse_with(&["-S", "/a,/b", "--scratch", "/c"], &[]).unwrap();
        assert_eq!(o.scratch, vec!["/a", "/b", "/c"]);
    }
}
