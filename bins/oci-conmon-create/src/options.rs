//! Command line of oci-conmon-create.

use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::Duration;

/// Default time allowed from conmon's start to the runtime's report (SingularityCE uses 30 s).
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

#[derive(Debug)]
pub struct Options {
    pub id: String,
    pub bundle: PathBuf,
    pub log_path: Option<PathBuf>,
    /// `--stdout F --stderr F`: the container's own output files (conmon's passthrough).
    pub output: Option<(PathBuf, PathBuf)>,
    pub pid_file: Option<PathBuf>,
    pub runtime: Option<String>,
    pub root: Option<PathBuf>,
    pub timeout: Duration,
}

pub fn parse(args: common::cli::Args) -> Result<Options> {
    if args.has_command {
        bail!("unexpected '--': the command comes from the bundle's config.json");
    }
    let mut args = args;
    let opts = &mut args.opts;
    let bundle: Option<PathBuf> = opts.opt_value_from_str(["-b", "--bundle"])?;
    let log_path: Option<PathBuf> = opts.opt_value_from_str(["-l", "--log-path"])?;
    let log_format: Option<String> = opts.opt_value_from_str("--log-format")?;
    let pid_file: Option<PathBuf> = opts.opt_value_from_str("--pid-file")?;
    let stdout: Option<PathBuf> = opts.opt_value_from_str("--stdout")?;
    let stderr: Option<PathBuf> = opts.opt_value_from_str("--stderr")?;
    let runtime: Option<String> = opts.opt_value_from_str("--runtime")?;
    let root: Option<PathBuf> = opts.opt_value_from_str("--root")?;
    let timeout: Option<u64> = opts.opt_value_from_str("--timeout")?;
    let id = args.single_positional("container id", "oci-conmon-create --bundle B ID")?;
    common::lifecycle::statedir::check_container_id(&id)?;
    let Some(bundle) = bundle else {
        bail!("--bundle is required");
    };
    check_log_format(log_format.as_deref())?;
    let output = match (stdout, stderr) {
        (None, None) => None,
        (Some(o), Some(e)) => {
            if log_path.is_some() || log_format.is_some() {
                bail!(
                    "--stdout/--stderr replace the container log: drop --log-path and --log-format"
                );
            }
            Some((o, e))
        }
        _ => bail!("--stdout and --stderr go together"),
    };
    let timeout = timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
    if timeout == 0 {
        bail!("--timeout must be at least 1 (seconds)");
    }
    Ok(Options {
        id,
        bundle,
        log_path,
        output,
        pid_file,
        runtime,
        root,
        timeout: Duration::from_secs(timeout),
    })
}

/// conmon 2.1.6 writes only the k8s-file (CRI) format to a file (its other drivers are journald,
/// which needs systemd, and none), so that is the one format offered. Refusing anything else
/// beats SingularityCE's silent ignoring of the option.
fn check_log_format(f: Option<&str>) -> Result<()> {
    match f {
        None | Some("k8s-file") | Some("kubernetes") => Ok(()),
        Some("json") | Some("json-file") => bail!(
            "--log-format json is not available: conmon writes only the k8s-file format (one 'TIME STREAM F|P TEXT' line per record)"
        ),
        Some(other) => bail!("unknown --log-format '{other}' (use k8s-file)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn parse_v(v: &[&str]) -> Result<Options> {
        parse(common::cli::Args::from_vec(v.iter().map(OsString::from).collect()).unwrap())
    }

    #[test]
    fn full_command_line() {
        let o = parse_v(&[
            "--bundle",
            "/b",
            "--log-path",
            "/l",
            "--pid-file",
            "/p",
            "--runtime",
            "runc",
            "--root",
            "/r",
            "--timeout",
            "5",
            "c1",
        ])
        .unwrap();
        assert_eq!(o.id, "c1");
        assert_eq!(o.bundle, PathBuf::from("/b"));
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert_eq!(o.runtime.as_deref(), Some("runc"));
    }

    #[test]
    fn bad_input() {
        assert!(parse_v(&["c1"]).is_err(), "bundle required");
        assert!(parse_v(&["-b", "/b"]).is_err(), "id required");
        assert!(parse_v(&["-b", "/b", "a", "b"]).is_err());
        assert!(parse_v(&["-b", "/b", "../x"]).is_err());
        assert!(parse_v(&["-b", "/b", "--timeout", "0", "c"]).is_err());
        let e = parse_v(&["-b", "/b", "--log-format", "json", "c"]).unwrap_err();
        assert!(e.to_string().contains("k8s-file"), "{e}");
        assert!(parse_v(&["-b", "/b", "--log-format", "kubernetes", "c"]).is_ok());
        assert!(parse_v(&["-b", "/b", "--stdout", "/o", "c"]).is_err());
        assert!(
            parse_v(&[
                "-b", "/b", "--stdout", "/o", "--stderr", "/e", "-l", "/l", "c"
            ])
            .is_err()
        );
        let o = parse_v(&["-b", "/b", "--stdout", "/o", "--stderr", "/e", "c"]).unwrap();
        assert_eq!(o.output, Some(("/o".into(), "/e".into())));
    }
}
