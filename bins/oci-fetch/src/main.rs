//! oci-fetch: resolve an image reference, verify it, put its blobs in the cache layout, and
//! print one image record.

use anyhow::{Context, Result, bail};
use common::cache::Cache;
use common::cli::Tool;
use oci_fetch::{
    archive, image, inspect, layout, media, ocisif, progress, reference, registry, sandbox, save,
    sif, sifwrite, store,
};
use reference::ImageRef;
use std::path::PathBuf;

const TOOL: Tool = Tool {
    name: "oci-fetch",
    help: "\
Usage: oci-fetch [OPTIONS] REF

Fetch an OCI image into the cache layout, verify every digest, and print one
image record (JSON) on stdout.

REF is one of:
  oci:DIR[:TAG|@DIGEST]
  oci-archive:FILE[:TAG|@DIGEST]
  docker-archive:FILE[:REPO:TAG]
  docker://[HOST[:PORT]/]REPO[:TAG|@DIGEST]     (short names: alpine)
  sif:FILE, or a FILE with the SIF magic        (native SIF: its root filesystem partition;
                                                OCI-SIF: the OCI image it holds)
  oci-sif:FILE                                  (an OCI-SIF file)
  DIR with a /.singularity.d directory          (sandbox: runs in place, nothing copied)

Options:
  --platform OS/ARCH[/VARIANT]  image to pick from a multi-platform index (default: host)
  --arch ARCH                   same as --platform linux/ARCH
  --offline                     docker://: use only the cache, never the network
  --disable-cache               fetch into a new temporary layout (see oci-fetch(1))
  --tmpdir DIR                  where --disable-cache makes it (default $SINGULARITY_TMPDIR,
                                $TMPDIR, /tmp; created when missing); the caller removes
                                dirname(record.layout)
  --authfile FILE               registry credentials (containers auth.json format)
  --creds USER[:PASS]           registry credentials (never printed, but visible to
                                every user in ps: prefer the environment variables
                                SINGULARITY_DOCKER_USERNAME and SINGULARITY_DOCKER_PASSWORD)
  --cert-dir DIR                extra CA certificates (*.crt) for registry TLS
  --tls-verify=false            do not verify registry TLS certificates
  --no-https                    talk plain HTTP to the registry
  --docker-host HOST            accepted and ignored (docker-daemon: is not supported)
  --jobs N                      blobs downloaded in parallel, largest first (default 3)
  --save-archive FILE           also write the image to FILE as one OCI archive
  --save-oci-sif FILE           also write the image to FILE as an OCI-SIF (its layers
                                squashed into one squashfs made with sqfstar, as
                                SingularityCE 4 does; same image, same bytes)
  --keep-layers                 with --save-oci-sif: one squashfs per layer instead
  --force                       let --save-archive/--save-oci-sif replace an existing FILE
  --inspect-json                print SingularityCE's `inspect --json` document instead of
                                the record
  --list-cache                  print what the cache holds (a cache record) and fetch nothing
  --then PROGRAM [ARGS...]      do not print the record: exec PROGRAM ARGS with the record on
                                its stdin (the rest of the line is PROGRAM's; see
                                oci-fetch(1), CHAINING)
  -q, --quiet                   no progress bars
  -h, --help                    this text
  --version                     print the version

Value options: --platform --arch --tls-verify --docker-host --jobs --tmpdir --authfile --creds --cert-dir --save-archive --save-oci-sif
Flag options: --offline --disable-cache --no-https --quiet -q --force --keep-layers --inspect-json --list-cache

See oci-fetch(1).
",
};

pub struct Opts {
    pub want: media::Wanted,
    pub want_explicit: bool,
    pub offline: bool,
    pub disable_cache: bool,
    pub tmpdir: Option<PathBuf>,
    pub authfile: Option<PathBuf>,
    pub creds: Option<String>,
    pub cert_dir: Option<PathBuf>,
    pub tls_verify: bool,
    pub no_https: bool,
    pub jobs: usize,
    pub quiet: bool,
    /// `--save-archive FILE [--force]` (see save.rs).
    pub save_archive: Option<PathBuf>,
    /// `--save-oci-sif FILE` (see sifwrite.rs).
    pub save_oci_sif: Option<PathBuf>,
    /// `--keep-layers`: the OCI-SIF keeps the image's layers (see sifwrite.rs).
    pub keep_layers: bool,
    pub force: bool,
    /// `--inspect-json` (see inspect.rs).
    pub inspect_json: bool,
    /// `--list-cache`: print the cache record instead (common::cachelist).
    pub list_cache: bool,
}

/// What the parser takes (the `--help` lines the front's routing is checked against).
#[cfg(test)]
const VALUE_OPTIONS: &[&str] = &[
    "--platform",
    "--arch",
    "--tls-verify",
    "--docker-host",
    "--jobs",
    "--tmpdir",
    "--authfile",
    "--creds",
    "--cert-dir",
    "--save-archive",
    "--save-oci-sif",
];
#[cfg(test)]
const FLAG_OPTIONS: &[&str] = &[
    "--offline",
    "--disable-cache",
    "--no-https",
    "--quiet",
    "-q",
    "--force",
    "--keep-layers",
    "--inspect-json",
    "--list-cache",
];

fn parse_bool(s: &str) -> Result<bool> {
    match s {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => bail!("expected true or false, got '{s}'"),
    }
}

/// A boolean flag, which may be repeated (a front may add one the user also gave).
fn flag(args: &mut pico_args::Arguments, name: &'static str) -> bool {
    let mut seen = false;
    while args.contains(name) {
        seen = true;
    }
    seen
}

/// A path option, as `--opt PATH` (any bytes) or `--opt=PATH` (UTF-8: pico-args splits at
/// `=` only in strings).
fn path_value(args: &mut pico_args::Arguments, name: &'static str) -> Result<Option<PathBuf>> {
    let two_words = args.opt_value_from_os_str(name, |s| {
        Ok::<_, std::convert::Infallible>(PathBuf::from(s))
    })?;
    match two_words {
        Some(p) => Ok(Some(p)),
        None => Ok(args.opt_value_from_str(name)?),
    }
}

fn parse_opts(args: &mut pico_args::Arguments) -> Result<Opts> {
    let platform: Option<String> = args.opt_value_from_str("--platform")?;
    let arch: Option<String> = args.opt_value_from_str("--arch")?;
    let want_explicit = platform.is_some() || arch.is_some();
    let want = match (platform, arch) {
        (Some(_), Some(_)) => bail!("give --platform or --arch, not both"),
        (Some(p), None) => media::Wanted::parse(&p)?,
        (None, Some(a)) => media::Wanted::parse(&format!("linux/{a}"))?,
        (None, None) => media::Wanted::host(),
    };
    let tls_verify = match args.opt_value_from_str::<_, String>("--tls-verify")? {
        Some(v) => parse_bool(&v).context("--tls-verify")?,
        None => true,
    };
    if args
        .opt_value_from_str::<_, String>("--docker-host")?
        .is_some()
    {
        common::cli::warn(
            "--docker-host is ignored: the docker-daemon: transport is not supported",
        );
    }
    let jobs = args.opt_value_from_str("--jobs")?.unwrap_or(3usize);
    if !(1..=16).contains(&jobs) {
        bail!("--jobs must be between 1 and 16");
    }
    Ok(Opts {
        want,
        want_explicit,
        offline: flag(args, "--offline"),
        disable_cache: flag(args, "--disable-cache") || common::cache::disabled_by_env(),
        tmpdir: path_value(args, "--tmpdir")?,
        authfile: path_value(args, "--authfile")?,
        creds: args.opt_value_from_str("--creds")?,
        cert_dir: path_value(args, "--cert-dir")?,
        tls_verify,
        no_https: flag(args, "--no-https"),
        jobs,
        quiet: flag(args, "--quiet") | flag(args, "-q"),
        save_archive: path_value(args, "--save-archive")?,
        save_oci_sif: path_value(args, "--save-oci-sif")?,
        force: flag(args, "--force"),
        keep_layers: flag(args, "--keep-layers"),
        inspect_json: flag(args, "--inspect-json"),
        list_cache: flag(args, "--list-cache"),
    })
}

/// A cache root for `--disable-cache`: a fresh private directory under the temp dir.
fn temp_cache_root(tmpdir: Option<&std::path::Path>) -> Result<PathBuf> {
    let base = tmpdir
        .map(|p| p.as_os_str().to_owned())
        .or_else(|| std::env::var_os("SINGULARITY_TMPDIR"))
        .or_else(|| std::env::var_os("TMPDIR"))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let base = common::fsutil::absolute(&base)?;
    let root = base.join(format!("oci-fetch-{}", common::fsutil::unique_suffix()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&root)
        .with_context(|| format!("cannot create temporary layout {}", root.display()))?;
    Ok(root)
}

use std::os::unix::fs::DirBuilderExt;

/// A SIF file: its header and descriptors are read and checked here; nothing is copied.
fn run_sif(reference: &str, path: &std::path::Path, opts: &Opts) -> Result<()> {
    if opts.save_archive.is_some() {
        bail!(
            "{} is a SIF image file: it cannot be written as an OCI archive (use --save-oci-sif)",
            path.display()
        );
    }
    let opened = sif::open(path)?;
    let s = common::sif::Sif::read(&opened.file)
        .with_context(|| format!("{} is not a usable SIF", opened.path.display()))?;
    let record = if s.is_oci_sif() {
        let use_cache = !opts.disable_cache;
        ocisif::record(reference, &opened, &s, &opts.want, use_cache)
    } else {
        sif::native_record(reference, &opened, &s, &opts.want.arch)
    }
    .with_context(|| format!("cannot use {}", opened.path.display()))?;
    if let Some(out) = &opts.save_oci_sif {
        // A SIF is already the single image file SingularityCE runs: it is copied as it is.
        sifwrite::copy_sif(&opened.file, out, opts.force)?;
    }
    if opts.inspect_json {
        return inspect::print(&record);
    }
    common::record::print_record(&record)
}

fn run(reference: &str, opts: &Opts) -> Result<()> {
    // The front names its bundle as --tmpdir: made here when missing, with the launcher's marker,
    // so a launcher killed during a long fetch leaves a bundle the next run sweeps.
    if let (true, Some(dir)) = (opts.disable_cache, &opts.tmpdir)
        && std::fs::symlink_metadata(dir).is_err()
    {
        common::bundlesweep::create_marked_dir(dir)?;
    }
    if let Some(path) = sif::sif_path(reference) {
        return run_sif(reference, &path, opts);
    }
    if let Some(path) = sandbox::sandbox_path(reference) {
        let record = sandbox::record(reference, &path, &opts.want.arch)?;
        if opts.inspect_json {
            return inspect::print(&record);
        }
        return common::record::print_record(&record);
    }
    let image_ref = reference::parse(reference)?;
    let temp_root = if opts.disable_cache {
        Some(temp_cache_root(opts.tmpdir.as_deref())?)
    } else {
        None
    };
    let result = (|| -> Result<()> {
        let cache = match &temp_root {
            Some(r) => Cache::open(r)?,
            None => Cache::open_default()?,
        };
        let store = store::Store::new(cache);
        let progress = progress::Progress::new(opts.quiet);
        let iopts = image::Options {
            reference,
            transport: image_ref.transport(),
            want: opts.want.clone(),
            want_explicit: opts.want_explicit,
            jobs: opts.jobs,
            progress: &progress,
        };
        let fetched = match &image_ref {
            ImageRef::Oci { dir, sel } => {
                let src = layout::LayoutSource::new(dir, sel.clone())?;
                image::fetch(&src, &store, &iopts)?
            }
            ImageRef::OciArchive { file, sel } => {
                let src = archive::OciArchive::new(file, sel.clone());
                // A bare file name may have been meant as a SIF: say it was tried as both.
                let src = match reference::bare_archive(reference) {
                    Some(_) => src.with_context(|| {
                        format!(
                            "{} is neither a SIF image (no SIF header) nor an OCI archive",
                            file.display()
                        )
                    })?,
                    None => src?,
                };
                image::fetch(&src, &store, &iopts)?
            }
            ImageRef::DockerArchive { file, repo_tag } => {
                let src = archive::DockerArchive::new(file, repo_tag.as_deref())?;
                image::fetch(&src, &store, &iopts)?
            }
            ImageRef::Docker(r) => {
                let settings = registry::Settings {
                    creds: match opts.creds.as_deref() {
                        Some(c) => Some(registry::auth::Creds::parse(c)?),
                        None => registry::auth::Creds::from_env(|k| std::env::var(k).ok())?,
                    },
                    authfile: opts.authfile.clone(),
                    cert_dir: opts.cert_dir.clone(),
                    tls_verify: opts.tls_verify,
                    plain_http: opts.no_https,
                    offline: opts.offline,
                };
                let src = registry::Registry::new(r.clone(), settings)?;
                let f = image::fetch(&src, &store, &iopts)?;
                registry::save_ref(&store, r, &f.top_digest, &f.top_media_type)?;
                f
            }
        };
        if let Some(out) = &opts.save_archive {
            save::write_oci_archive(&fetched.record, out, opts.force)?;
        }
        if let Some(out) = &opts.save_oci_sif {
            sifwrite::write_oci_sif(&fetched.record, out, opts.force, opts.keep_layers)?;
        }
        if opts.inspect_json {
            return inspect::print(&fetched.record);
        }
        common::record::print_record(&fetched.record)
    })();
    if result.is_err()
        && let Some(r) = &temp_root
    {
        let _ = std::fs::remove_dir_all(r);
    }
    result
}

fn main() {
    TOOL.main_chainable(|mut args| {
        // Credentials are this stage's alone: a later stage of a --then chain never sees them.
        common::chain::withhold_from_next(registry::auth::ENV_USERNAME);
        common::chain::withhold_from_next(registry::auth::ENV_PASSWORD);
        let opts = parse_opts(&mut args.opts)?;
        if args.has_command {
            bail!("unexpected '--': oci-fetch takes no command");
        }
        let (pos, _) = args.positionals()?;
        if opts.inspect_json && common::chain::is_chained() {
            bail!("--inspect-json prints a document, not a record: it cannot hand anything on with --then");
        }
        if opts.list_cache {
            if let Some(p) = pos.first() {
                bail!("--list-cache takes no image reference (got '{p}')");
            }
            let root = common::cache::default_root()?;
            common::record::print_record(&common::cachelist::list(&root)?)?;
            return Ok(0);
        }
        let reference = match pos.as_slice() {
            [r] => r.clone(),
            [] => bail!("missing image reference (see --help)"),
            _ => bail!("expected one image reference, got {}", pos.len()),
        };
        run(&reference, &opts)?;
        Ok(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(prefix: &str) -> Vec<&'static str> {
        TOOL.help
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' line in --help"))
            .split(' ')
            .collect()
    }

    /// Every listed option is one the parser takes (it consumes the option and its value, in
    /// both spellings for values), and the --help lines are the lists.
    #[test]
    fn help_lists_are_what_the_parser_takes() {
        assert_eq!(listed("Value options: "), VALUE_OPTIONS);
        assert_eq!(listed("Flag options: "), FLAG_OPTIONS);
        let sample = |o: &str| match o {
            "--platform" => "linux/amd64",
            "--arch" => "amd64",
            "--tls-verify" => "false",
            "--jobs" => "2",
            _ => "x",
        };
        for o in VALUE_OPTIONS {
            for argv in [
                vec![o.to_string(), sample(o).to_string()],
                vec![format!("{o}={}", sample(o))],
            ] {
                let mut a = pico_args::Arguments::from_vec(argv.iter().map(Into::into).collect());
                parse_opts(&mut a).unwrap_or_else(|e| panic!("{argv:?}: {e:#}"));
                assert!(a.finish().is_empty(), "{argv:?} not taken");
            }
        }
        for o in FLAG_OPTIONS {
            let mut a = pico_args::Arguments::from_vec(vec![o.into()]);
            parse_opts(&mut a).unwrap();
            assert!(a.finish().is_empty(), "{o} not taken");
        }
    }
}
