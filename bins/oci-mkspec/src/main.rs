//! oci-mkspec: build a runtime bundle (config.json, generated /etc files, rootfs mount point)
//! from a rootfs record, with SingularityCE's `--oci` semantics.

use anyhow::{Context, Result, bail};
use common::cli::{self, Tool};
use common::record::{self, BundleRecord, RootfsRecord};
use oci_mkspec::{
    bundle, cdi, cgroups, env, gpu, host, image, init, launch, mounts, options, rootfs, spec,
};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

const TOOL: Tool = Tool {
    name: "oci-mkspec",
    help: concat!(
        "Usage: oci-mkspec --bundle DIR [--input FILE|-] [--action exec|run|shell|test|start] [OPTIONS] [-- CMD [ARG...]]\n",
        "\n",
        "Read a rootfs record (stdin or --input), write DIR/config.json, DIR/etc/{passwd,group,resolv.conf}\n",
        "and DIR/rootfs, and print one bundle record. Options use SingularityCE's names; each also reads\n",
        "SINGULARITY_<NAME> from the environment. See oci-mkspec(1).\n",
        "\n",
        "Stage:      --bundle DIR  --input FILE  --action ACTION  --runtime NAME\n",
        "            --terminal  --no-terminal\n",
        "Mounts:     -B/--bind SPEC  --mount SPEC  -H/--home [SRC:]DST  --no-home  -S/--scratch DIR\n",
        "            -W/--workdir DIR  --no-mount LIST  --containlibs LIST  --tmpfs-size MIB\n",
        "Devices:    --device VENDOR/CLASS=NAME[,...]  --cdi-dirs DIR[,DIR]  --nv  --no-nv  --rocm  --no-rocm\n",
        "Env:        --env K=V  --env-file FILE  -e/--cleanenv\n",
        "Process:    --pwd/--cwd DIR  --app NAME  -f/--fakeroot  --no-umask  --no-setgroups\n",
        "Namespaces: --hostname NAME  --uts  --no-pid  -n/--net --network none  -u/--userns  --pid  --ipc\n",
        "Init:       --no-init (default: tini-static or catatonit as PID 1; $SINGULARITY_OCI_INIT)\n",
        "Privileges: --add-caps LIST  --drop-caps LIST  --keep-privs  --no-privs  --allow-setuid\n",
        "Rootfs:     --writable-tmpfs  -o/--overlay DIR[:ro]  --no-compat  -c/--contain  -C/--containall\n",
        "            --dns IPS\n",
        "Cgroups:    --apply-cgroups FILE  --cpus N  --cpu-shares N  --cpuset-cpus L  --cpuset-mems L\n",
        "            --memory SZ  --memory-reservation SZ  --memory-swap SZ  --oom-kill-disable\n",
        "            --pids-limit N  --blkio-weight N  --blkio-weight-device DEV:W\n",
        "Ignored:    --tmp-sandbox --no-tmp-sandbox --disable-cache --compat, and --no-eval\n            (except with --no-compat for a native SIF or sandbox: values not evaluated)\n",
        "Rejected:   --fusemount --nvccli --proot --network X (not none) --network-args --netns-path\n",
        "            --security --config --shell --boot --passphrase\n",
        "            --pem-path --sif-fuse --writable --data, overlay images\n",
        "\n",
        "Value options: --bundle --input --action --runtime --bind -B --mount --home -H --scratch -S --workdir -W --no-mount --env --env-file --pwd --cwd --hostname --dns --network --add-caps --drop-caps --app --containlibs --device --cdi-dirs --tmpfs-size --overlay -o --apply-cgroups --cpus --cpu-shares --cpuset-cpus --cpuset-mems --memory --memory-reservation --memory-swap --pids-limit --blkio-weight --blkio-weight-device --fusemount --network-args --netns-path --security --config --shell -s --pem-path --proot --data\n",
        "Flag options: --terminal --no-terminal --no-home --cleanenv -e --contain -c --containall -C --uts --pid -p --ipc -i --no-pid --no-init --net -n --userns -u --keep-privs --no-privs --allow-setuid --writable-tmpfs --no-compat --compat --fakeroot -f --no-umask --no-setgroups --no-eval --nv --no-nv --rocm --no-rocm --tmp-sandbox --no-tmp-sandbox --disable-cache --oom-kill-disable --nvccli --boot --passphrase --sif-fuse --writable -w\n",
        "\n",
        "Exit status: 0 success, 255 error (one FATAL line; nothing left in DIR).\n",
    ),
};

fn main() {
    TOOL.main(run)
}

fn host_env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn run(args: cli::Args) -> Result<i32> {
    let command = args.command.clone();
    let (opts, positionals) = options::parse(args.opts, &host_env_lookup)?;
    if let Some(p) = positionals.first() {
        bail!("unexpected argument '{p}' (put the container command after --)");
    }
    let Some(bundle_arg) = &opts.bundle else {
        bail!("--bundle DIR is required");
    };
    let record: RootfsRecord = record::read_record(opts.input.as_deref())?;
    let action = opts.action.unwrap_or(if command.is_empty() {
        options::Action::Run
    } else {
        options::Action::Exec
    });
    let bundle_dir = common::fsutil::absolute(bundle_arg)?;

    let terminal = opts.terminal.unwrap_or_else(|| {
        host::terminal_default(opts.input.as_deref().is_some_and(|p| p != Path::new("-")))
    });
    let host = host::gather(
        !common::identity::is_host_root() && !opts.fakeroot,
        terminal,
    )?;
    // An MPI rank shares the PID namespace, /dev/shm and the PMIx server directory (launch.rs).
    let opts = launch::rank_options(&opts, &host.env).unwrap_or(opts);
    let root = rootfs::RootDir::open(&record.rootfs)?;
    let dir_exists = |p: &str| root.is_dir(p);
    let facts = spec::RootfsFacts {
        passwd: root.read_file("/etc/passwd")?,
        group: root.read_file("/etc/group")?,
        var_tmp_is_tmp: root.same("/var/tmp", "/tmp"),
        dir_exists: &dir_exists,
    };
    let mut image = image::ImageFacts::from_config(&record.image.image_config);
    image.singularity_d = matches!(record.image.transport.as_str(), "sif" | "sandbox")
        && root.is_dir("/.singularity.d");

    // Env-files expand against the host environment plus SINGULARITY_IMAGE.
    let image_ref = record.image.reference.clone();
    let lookup = |k: &str| {
        if k == "SINGULARITY_IMAGE" {
            Some(image_ref.clone())
        } else {
            std::env::var(k).ok()
        }
    };
    let mut env_files = Vec::new();
    for f in &opts.env_files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read env-file {f}"))?;
        env_files.push(env::eval_env_file(&text, f, &lookup)?);
    }
    let resources = cgroups::requested(&opts.cgroups, host.ncpus)?;
    // The runtime matters only for --no-setgroups (crun only) and the single-ID map (crun only).
    let single_id_default = !host.is_root && !opts.fakeroot && host.subid_sizes.is_none();
    let runtime_is_crun = if opts.no_setgroups || single_id_default {
        let rt = common::lifecycle::runtime::select(opts.runtime.as_deref())?;
        Some(rt.kind == common::lifecycle::runtime::RuntimeKind::Crun)
    } else {
        None
    };
    let (user_binds, mount_binds) = spec::parse_binds(&opts, &host.cwd)?;
    for b in user_binds.iter().chain(&mount_binds) {
        mounts::check_bind(b)?;
    }
    for lib in &opts.containlibs {
        if std::fs::metadata(lib).is_err() {
            bail!("cannot stat --containlibs library {lib}");
        }
    }
    if image.has_exposed_ports && !opts.net {
        cli::info(
            "Container specifies exposed ports, which are not isolated: the container uses the host network",
        );
    }

    let init_path = if opts.no_init || opts.no_pid {
        None
    } else {
        let found = init::find(
            std::env::var(init::ENV_INIT).ok().as_deref(),
            common::identity::host_uid(),
        )?;
        if found.is_none() {
            cli::warn(format!(
                "no init found (install tini or catatonit, or set {}): the command runs as PID 1 and ignores signals it has no handler for",
                init::ENV_INIT
            ));
        }
        found
    };
    let (cdi_edits, gpu_mounts) = devices(&opts, !host.is_root || opts.userns)?;
    let built = spec::build(&spec::Inputs {
        opts: &opts,
        action,
        command: &command,
        image: &image,
        image_ref: &record.image.reference,
        bundle: &bundle_dir,
        host: &host,
        rootfs: &facts,
        env_files: &env_files,
        resources,
        runtime_is_crun,
        init: init_path.as_deref().and_then(Path::to_str),
        cdi: cdi_edits.as_ref(),
        gpu_mounts: &gpu_mounts,
    })?;
    for w in &built.warnings {
        cli::warn(w);
    }
    // Checked (and a writable DIR's upper/ and work/ made) before the bundle exists, so a bad
    // or busy DIR fails here with nothing written; oci-userns-starter checks again and holds
    // the locks for the run.
    if !opts.overlays.is_empty() {
        let cache = common::cache::default_root().ok();
        let mut places = vec![(record.rootfs.as_path(), "the image's root filesystem")];
        places.extend(cache.as_deref().map(|c| (c, "the image cache")));
        common::overlay::refuse_inside(&opts.overlays, &places)?;
    }
    drop(common::overlay::open(&opts.overlays)?);

    // Write the bundle; the writer removes everything it made if we return early.
    let mut w = bundle::Writer::open(&bundle_dir)?;
    // First of all, so that a launcher killed from here on leaves a bundle the next run sweeps
    // (with --disable-cache, oci-fetch made the bundle and its marker already).
    if let Some(text) = common::bundlesweep::marker_text(w.dev_ino) {
        w.write_unless_same(common::bundlesweep::MARKER, text.as_bytes(), 0o600)?;
    }
    if let Some(parent) = bundle_dir.parent() {
        common::bundlesweep::sweep(parent);
    }
    let rootfs_lower = if record.read_only {
        w.mkdir("rootfs", 0o755)?;
        if std::fs::read_dir(bundle_dir.join("rootfs"))?
            .next()
            .is_some()
        {
            bail!(
                "{}/rootfs is not empty: it must be an empty mount point for the overlay",
                bundle_dir.display()
            );
        }
        w.symlink("rootfs.lower", &record.rootfs)?;
        Some(record.rootfs.clone())
    } else {
        let want = bundle_dir.join("rootfs");
        let same = std::fs::canonicalize(&record.rootfs).ok() == std::fs::canonicalize(&want).ok();
        if !same {
            bail!(
                "the rootfs record is a private unpack at {}, but a bundle needs it at {} (unpack with --bundle {})",
                record.rootfs.display(),
                want.display(),
                bundle_dir.display()
            );
        }
        None
    };
    let mut etc_paths = Vec::new();
    if !built.etc_files.is_empty() {
        w.mkdir("etc", 0o755)?;
        for (name, bytes) in &built.etc_files {
            etc_paths.push(w.write(&format!("etc/{name}"), bytes, 0o644)?);
        }
    }
    if !opts.overlays.is_empty() {
        let list = serde_json::to_vec_pretty(&opts.overlays)?;
        w.write(common::overlay::BUNDLE_FILE, &list, 0o644)?;
    }
    let config_bytes = serde_json::to_vec_pretty(&built.config_json()?)?;
    let config = w.write("config.json", &config_bytes, 0o644)?;
    if action == options::Action::Start {
        // An instance's later exec/run/shell/test build their argv from this.
        let actions = oci_mkspec::process::instance_actions(opts.app.as_deref(), &image);
        w.write(
            common::instance::ACTIONS_FILE,
            &serde_json::to_vec(&actions)?,
            0o644,
        )?;
    }
    make_workdir_dirs(&built.workdir_dirs)?;

    let rec = BundleRecord {
        rootfs_lower,
        overlays: opts.overlays.clone(),
        etc_files: etc_paths,
        inner_userns: built.inner_userns,
        ..BundleRecord::new(
            bundle_dir.clone(),
            format!("{}:{}", w.dev_ino.0, w.dev_ino.1),
            config,
            record,
            built.uid,
            built.gid,
            built.args,
        )
    };
    record::print_record(&rec)?;
    w.commit();
    Ok(0)
}

/// The CDI edits of `--device`, `--nv` and `--rocm`, and the legacy GPU binds. The CDI specs
/// are read only when one of them is given (a start without them parses nothing). `--nv` and
/// `--rocm` take the vendor's CDI device `all` when a spec of its kind is installed, else bind
/// the vendor's libraries, programs and device nodes from the host (`gpu.rs`).
fn devices(
    opts: &options::Options,
    in_user_namespace: bool,
) -> Result<(Option<cdi::ContainerEdits>, Vec<oci_spec::runtime::Mount>)> {
    let vendors: Vec<gpu::Vendor> = [
        (opts.rocm, gpu::Vendor::Rocm),
        (opts.nv, gpu::Vendor::Nvidia),
    ]
    .into_iter()
    .filter_map(|(on, v)| on.then_some(v))
    .collect();
    if opts.devices.is_empty() && vendors.is_empty() {
        return Ok((None, Vec::new()));
    }
    let mut requested = cdi::registry::parse_requested(&opts.devices)?;
    let registry = cdi::load(&opts.cdi_dirs)?;
    let mut mounts = Vec::new();
    for v in vendors {
        if registry.has_kind(v.cdi_kind()) {
            requested.extend(cdi::registry::parse_requested(&[format!(
                "{}=all",
                v.cdi_kind()
            )])?);
        } else {
            mounts.extend(gpu::legacy_binds(v, &mut |w| cli::warn(w))?);
        }
    }
    let edits = if requested.is_empty() {
        None
    } else {
        Some(cdi::edits_for(&registry, &requested, in_user_namespace)?)
    };
    Ok((edits, mounts))
}

/// `--workdir` subdirectories on the host, world-writable with the sticky bit like /tmp.
fn make_workdir_dirs(dirs: &[PathBuf]) -> Result<()> {
    for d in dirs {
        if d.is_dir() {
            continue;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o1777)
            .create(d)
            .with_context(|| format!("cannot create workdir directory {}", d.display()))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o1777))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The front routes options by the `Value options:` and `Flag options:` lines of --help
    /// (its lists are checked against them by the e2e tests): they must be what the parser asks.
    #[test]
    fn help_lists_every_option_the_parser_takes() {
        let listed = |prefix: &str| -> Vec<&str> {
            super::TOOL
                .help
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or_else(|| panic!("no '{prefix}' line in --help"))
                .split(' ')
                .collect()
        };
        let (values, flags) = oci_mkspec::options::option_names();
        eprintln!("Value options: {}", values.join(" "));
        eprintln!("Flag options: {}", flags.join(" "));
        assert_eq!(listed("Value options: "), values);
        assert_eq!(listed("Flag options: "), flags);
    }
}
