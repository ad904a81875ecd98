//! oci-unpack: apply an image's layers into a root filesystem (cached, or into a bundle) and
//! print the rootfs record.

use anyhow::{Context, Result, bail};
use common::cli::Tool;
use common::digest::Digest;
use common::inspect::{self, Sections};
use common::record::{ImageRecord, RootfsRecord, print_record, read_record};
use oci_unpack::cache;
use oci_unpack::ownership::{self, Ownership, Place};
use oci_unpack::unpack::{DEFAULT_MAX_SIZE, TempTree, unpack_into};
use oci_unpack::userns::{self, Outcome};
use std::path::{Path, PathBuf};

const TOOL: Tool = Tool {
    name: "oci-unpack",
    help: "Usage: oci-unpack [--input FILE|-] [--bundle DIR] [OPTIONS]

Read an image record (from oci-fetch) on stdin or from --input, apply the image's layers into a
root filesystem, and print one rootfs record on stdout.

By default the tree is built once in the cache
(${SINGULARITY_CACHEDIR:-$HOME/.singularity}/cache/oci-launcher/rootfs/) and reused read-only
afterwards; a warm run extracts nothing. A sandbox directory (transport sandbox) is not copied:
it is checked again and handed on as the read-only root filesystem.

Options:
  --input FILE|-        read the image record from FILE (default: stdin)
  --bundle DIR          unpack into DIR/rootfs instead of the cache (writable, not shared)
  --ownership MODE      auto (default), keep or flatten: how file owners are applied
  --max-size SIZE       refuse layers expanding beyond SIZE bytes in total (suffix K, M, G, T;
                        0 = no limit; default 64G)
  --inspect LIST        print SingularityCE's inspect output instead of the record: LIST of
                        labels, deffile, helpfile, runscript, startscript, test, environment,
                        list-apps, all (comma-separated; labels when empty)
  --json                with --inspect: the JSON document (SingularityCE's inspect --json)
  --app NAME            with --inspect: the SCIF app NAME's metadata
  --then PROGRAM [ARGS...]
                        do not print the record: exec PROGRAM ARGS with the record on its stdin
                        (the rest of the line is PROGRAM's; see oci-unpack(1), CHAINING)
  -q, --quiet           no progress bars (also: SINGULARITY_QUIET set); without it a cold unpack
                        draws one bar per layer (bytes of its compressed blob) and a total
                        when stderr is a terminal
  -h, --help            show this help
  --version             show the version

See oci-unpack(1).
",
};

fn main() {
    TOOL.main_chainable(|mut args| {
        let input: Option<PathBuf> = args.opts.opt_value_from_str("--input")?;
        let bundle: Option<PathBuf> = args.opts.opt_value_from_str("--bundle")?;
        let own: Option<String> = args.opts.opt_value_from_str("--ownership")?;
        let max: Option<String> = args.opts.opt_value_from_str("--max-size")?;
        let inspect: Option<String> = args.opts.opt_value_from_str("--inspect")?;
        let app: Option<String> = args.opts.opt_value_from_str("--app")?;
        let json = args.opts.contains("--json");
        while args.opts.contains(["-q", "--quiet"]) {
            common::progress::set_quiet();
        }
        let (pos, cmd) = args.positionals()?;
        if !pos.is_empty() || !cmd.is_empty() {
            bail!(
                "unexpected argument '{}' (see --help)",
                pos.first().or(cmd.first()).unwrap()
            );
        }
        let max_bytes = match max {
            Some(s) => parse_size(&s)?,
            None => DEFAULT_MAX_SIZE,
        };
        if inspect.is_some() && common::chain::is_chained() {
            bail!("--inspect prints text, not a record: it cannot hand anything on with --then");
        }
        let record: ImageRecord = read_record(input.as_deref())?;
        if let Some(list) = inspect {
            let sections = Sections::parse(&list)?;
            let doc = if matches!(record.transport.as_str(), "sif" | "sandbox") {
                let tree = match produce(record, bundle.as_deref(), own.as_deref(), max_bytes)? {
                    Outcome::Built(r) => *r,
                    Outcome::Failed(code) => return Ok(code),
                };
                let root = common::rootdir::RootDir::open(&tree.rootfs)?;
                inspect::from_tree(&root, sections, app.as_deref())
            } else {
                // An OCI image's metadata is its labels: nothing to unpack.
                inspect::from_labels(inspect::config_labels(&record.image_config), sections)
            };
            let text = if json || sections.all {
                inspect::to_json(&doc)?
            } else {
                inspect::to_text(&doc, sections, app.as_deref())
            };
            use std::io::Write;
            std::io::stdout().lock().write_all(text.as_bytes())?;
            return Ok(0);
        }
        let out = match produce(record, bundle.as_deref(), own.as_deref(), max_bytes)? {
            Outcome::Built(r) => *r,
            Outcome::Failed(code) => return Ok(code),
        };
        print_record(&out)?;
        Ok(0)
    })
}

/// The root filesystem of the image: the sandbox itself, a private unpack into `bundle`, or
/// the cache entry (built on a miss).
fn produce(
    record: ImageRecord,
    bundle: Option<&Path>,
    own: Option<&str>,
    max_bytes: u64,
) -> Result<Outcome> {
    if record.transport == "sandbox" {
        return Ok(Outcome::Built(Box::new(sandbox_rootfs(record)?)));
    }
    if let Some(b) = bundle {
        let r = unpack_bundle(record, b, ownership::choose(own)?, max_bytes)?;
        return Ok(Outcome::Built(Box::new(r)));
    }
    if common::cache::disabled_by_env() {
        bail!("SINGULARITY_DISABLE_CACHE is set, so the cache is not used: give --bundle DIR");
    }
    let (ownership, place) = ownership::choose_cached(own)?;
    unpack_cached(record, ownership, place, max_bytes)
}

fn rootfs_record(
    image: ImageRecord,
    rootfs: PathBuf,
    ro: bool,
    cached: bool,
    o: Ownership,
) -> RootfsRecord {
    RootfsRecord::new(rootfs, ro, cached, o.as_str(), image)
}

/// A sandbox directory is its own root filesystem: checked again (it must still be the
/// directory oci-fetch checked, trusted as `common::sandbox` says) and handed on read-only, so
/// the launcher mounts it below the overlay. Nothing is copied, with or without `--bundle`, and
/// the cache is not opened.
fn sandbox_rootfs(record: ImageRecord) -> Result<RootfsRecord> {
    let Some(src) = &record.sandbox else {
        bail!("the image record has transport sandbox but no sandbox directory");
    };
    let path = common::sandbox::reopen(src)?;
    Ok(rootfs_record(record, path, true, false, Ownership::Keep))
}

fn unpack_cached(
    record: ImageRecord,
    ownership: Ownership,
    place: Place,
    max_bytes: u64,
) -> Result<Outcome> {
    let manifest = Digest::parse(&record.digest).context("bad manifest digest in image record")?;
    let key = cache::key(&manifest, ownership);
    // Warm path: a checked walk to the entry, no cache set-up, no lock, no namespace.
    let root = common::cache::default_root()?;
    if let Some(p) = cache::lookup(&root, &key)? {
        let rec = rootfs_record(record, p, true, true, ownership);
        return Ok(Outcome::Built(Box::new(rec)));
    }
    if place == Place::SubidUserns {
        return userns::unpack_cached_in_userns(&record, max_bytes);
    }
    let c = common::cache::Cache::open(&root)?;
    let (path, cached) = cache::get_or_build(&c, &key, |dir| {
        unpack_into(&record, dir, ownership, max_bytes).map(|_| ())
    })?;
    Ok(Outcome::Built(Box::new(rootfs_record(
        record, path, true, cached, ownership,
    ))))
}

fn unpack_bundle(
    record: ImageRecord,
    bundle: &Path,
    ownership: Ownership,
    max_bytes: u64,
) -> Result<RootfsRecord> {
    let bundle = common::fsutil::absolute(bundle)?;
    std::fs::create_dir_all(&bundle)
        .with_context(|| format!("cannot create bundle directory {}", bundle.display()))?;
    let target = bundle.join("rootfs");
    if let Ok(mut rd) = std::fs::read_dir(&target)
        && rd.next().is_some()
    {
        bail!("{} already exists and is not empty", target.display());
    }
    if target.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
        bail!("{} already exists and is not a directory", target.display());
    }
    let tmp = TempTree::create(bundle.join(format!(
        ".rootfs.tmp-{}-{}",
        std::process::id(),
        common::fsutil::unique_suffix()
    )))?;
    unpack_into(&record, tmp.path(), ownership, max_bytes)?;
    // rename(2) replaces an empty directory (a mount point made earlier) atomically.
    std::fs::rename(tmp.path(), &target)
        .with_context(|| format!("cannot rename the new tree to {}", target.display()))?;
    tmp.disarm();
    Ok(rootfs_record(record, target, false, false, ownership))
}

/// `123`, `10K`, `5M`, `64G`, `1T` (binary multiples).
fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("--max-size '{s}': unknown suffix (use K, M, G or T)"),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--max-size '{s}' is not a size"))?;
    n.checked_mul(mul)
        .with_context(|| format!("--max-size '{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("10K").unwrap(), 10240);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("x").is_err());
        assert!(parse_size("5Q").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
