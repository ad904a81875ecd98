//! The workflow managers that run `singularity`: Snakemake 9 and cwltool 3.3 (pinned, from the
//! virtual environment `scripts/setup` makes) and Nextflow's command line (reproduced from its
//! SingularityBuilder and SingularityCache), all through the installed `singularity` link, with
//! images from a local docker-registry.

use e2e::registry::Registry;
use e2e::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `scripts/setup` installs the pinned clients here.
const CLIENTS_BIN: &str = "/opt/sioci-workflow-clients/bin";

/// Python clients start slowly on a loaded machine; each also pulls an image.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(600);

fn clients_bin() -> &'static str {
    for tool in ["snakemake", "cwltool", "python3"] {
        assert!(
            Path::new(CLIENTS_BIN).join(tool).is_file(),
            "{CLIENTS_BIN}/{tool} is missing: run scripts/setup (or scripts/setup --clients)"
        );
    }
    CLIENTS_BIN
}

/// The `singularity` link that `scripts/install --singularity-link` made beside the front.
fn singularity_link() -> String {
    let link = prefix().join("bin/singularity");
    let target = std::fs::read_link(&link)
        .unwrap_or_else(|e| panic!("{} is not a symbolic link: {e}", link.display()));
    assert_eq!(target, Path::new("singularity-oci"));
    link.display().to_string()
}

/// `PATH` with the clients after the installed `singularity`.
fn client_path(ctx: &Ctx) -> String {
    format!("{}:{}", ctx.path_env(), clients_bin())
}

/// A plain-HTTP registry (so the clients need `SINGULARITY_NOHTTPS` or `--no-https`, as a
/// site's local registry without TLS would) holding the busybox test image as `wf/busybox:1`.
fn registry_with_busybox(ctx: &Ctx) -> Registry {
    let reg = Registry::plain(&ctx.dir().join("registry"));
    reg.push(&oci_ref("busybox"), "wf/busybox:1", false);
    reg
}

/// The busybox test image plus the host's /bin/bash and the libraries it loads, made with umoci
/// (Nextflow starts every task with /bin/bash). Returns an `oci:` reference.
fn bash_image(ctx: &Ctx) -> String {
    let layout = ctx.dir().join("bash-image");
    let copy = Command::new("cp")
        .arg("-a")
        .arg(fixture("busybox"))
        .arg(&layout)
        .status()
        .unwrap();
    assert!(copy.success(), "cp of the busybox layout");
    let bundle = ctx.dir().join("bash-bundle");
    must(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:latest", layout.display()))
            .arg(&bundle),
        "umoci unpack",
    );
    let rootfs = bundle.join("rootfs");
    let ldd = Command::new("ldd").arg("/bin/bash").output().unwrap();
    assert!(ldd.status.success(), "ldd /bin/bash");
    let mut files = vec![PathBuf::from("/bin/bash")];
    for word in String::from_utf8_lossy(&ldd.stdout).split_whitespace() {
        if word.starts_with('/') {
            files.push(PathBuf::from(word));
        }
    }
    for f in files {
        // Resolve links so the image holds the real files at the paths the loader asks for.
        let real = std::fs::canonicalize(&f).unwrap();
        let dest = rootfs.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&real, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
    must(
        Command::new("umoci")
            .args(["repack", "--image"])
            .arg(format!("{}:bash", layout.display()))
            .arg(&bundle),
        "umoci repack",
    );
    std::fs::remove_dir_all(&bundle).unwrap();
    format!("oci:{}:bash", layout.display())
}

fn must(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Ran inside the image, not on the host: the host has python3, the test images do not.
const WHERE: &str = "if [ -e /usr/bin/python3 ]; then echo host; else echo container; fi";

#[test]
fn version_line_is_what_the_clients_parse() {
    let ctx = Ctx::for_test(Profile::User, Rt::Crun);
    let link = singularity_link();
    ctx.run(&link, &["--version"])
        .assert_code(0)
        .assert_stdout_eq("singularity-ce version 4.5.1+oci.0.1.0");
    ctx.run(&link, &["version"])
        .assert_code(0)
        .assert_stdout_eq("4.5.1+oci.0.1.0");
    ctx.front(&["--version"])
        .assert_code(0)
        .assert_stdout_eq("singularity-oci 0.1.0 (follows singularity-ce 4.5.1 --oci)");
    // The clients' own parsers, as they run them.
    let py = format!("{}/python3", clients_bin());
    let check = "\
from cwltool.singularity import get_version, is_version_3_10_or_newer
from snakemake.deployment.singularity import Singularity
v, flavor = get_version()
s = Singularity()
s.check()
print(flavor, v, is_version_3_10_or_newer(), s.binary, s.parseversion(s.version))
";
    ctx.cmd(&py)
        .args(&["-c", check])
        .env("PATH", client_path(&ctx))
        .timeout(CLIENT_TIMEOUT)
        .run()
        .assert_code(0)
        .assert_stdout_eq("singularity-ce 4.5.1 True singularity 4.5.1+oci.0.1.0");
}

#[test]
fn snakemake_runs_a_rule_in_a_pulled_registry_image() {
    for ctx in matrix_with(&[Profile::User]) {
        let reg = registry_with_busybox(&ctx);
        let wf = ctx.mkdir("wf");
        ctx.write_file(
            "wf/Snakefile",
            format!(
                "shell.executable(\"/bin/sh\")\n\
                 rule all:\n    input: \"result.txt\"\n\
                 rule hello:\n    output: \"result.txt\"\n    container: \"{}\"\n    \
                 shell: \"({WHERE}; id -u; pwd; cat input.txt) > {{output}}\"\n",
                reg.docker_ref("wf/busybox:1")
            ),
        );
        ctx.write_file("wf/input.txt", "from the host\n");
        ctx.cmd(format!("{}/snakemake", clients_bin()))
            .args(&["--sdm", "apptainer", "--cores", "1"])
            .cwd(&wf)
            .env("PATH", client_path(&ctx))
            .env("SINGULARITY_NOHTTPS", "1")
            .timeout(CLIENT_TIMEOUT)
            .run()
            .assert_code(0);
        let result = std::fs::read_to_string(wf.join("result.txt")).unwrap();
        assert_eq!(
            result,
            format!(
                "container\n{}\n{}\nfrom the host\n",
                ctx.uid(),
                wf.display()
            ),
            "[{}]",
            ctx.name
        );
        // Pulled once, as one image file in Snakemake's image directory.
        let images: Vec<_> = std::fs::read_dir(wf.join(".snakemake/singularity"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            images.len() == 1 && images[0].ends_with(".simg"),
            "{images:?}"
        );
        ctx.assert_no_leftovers();
    }
}

#[test]
fn cwltool_runs_a_tool_in_a_pulled_registry_image() {
    for ctx in matrix_with(&[Profile::User]) {
        let reg = registry_with_busybox(&ctx);
        let image = reg.docker_ref("wf/busybox:1");
        let image = image.trim_start_matches("docker://");
        ctx.write_file(
            "tool.cwl",
            format!(
                "cwlVersion: v1.2\nclass: CommandLineTool\n\
                 requirements:\n  DockerRequirement:\n    dockerPull: {image}\n\
                 baseCommand: [sh, -c]\n\
                 arguments: [\"({WHERE}; id -u; cat $(inputs.msg.path)) > out.txt\"]\n\
                 inputs:\n  msg: {{type: File}}\n\
                 outputs:\n  out: {{type: File, outputBinding: {{glob: out.txt}}}}\n"
            ),
        );
        ctx.write_file("msg.txt", "a CWL input\n");
        let images = ctx.mkdir("images");
        let outdir = ctx.mkdir("out");
        ctx.cmd(format!("{}/cwltool", clients_bin()))
            .args(&["--singularity", "--outdir", outdir.to_str().unwrap()])
            .args(&["tool.cwl", "--msg", "msg.txt"])
            .env("PATH", client_path(&ctx))
            .env("SINGULARITY_NOHTTPS", "1")
            .env("CWL_SINGULARITY_CACHE", images.to_str().unwrap())
            .timeout(CLIENT_TIMEOUT)
            .run()
            .assert_code(0);
        let out = std::fs::read_to_string(outdir.join("out.txt")).unwrap();
        assert_eq!(
            out,
            format!("container\n{}\na CWL input\n", ctx.uid()),
            "[{}]",
            ctx.name
        );
        assert_eq!(std::fs::read_dir(&images).unwrap().count(), 1);
        ctx.assert_no_leftovers();
    }
}

/// Nextflow's pull (SingularityCache: `singularity pull [--no-https] --name FILE.pulling.T URL`
/// in the cache directory, then a rename) and its task line (SingularityBuilder with
/// `singularity.ociMode = true`, `autoMounts` on): `env -` leaves only PATH, so the launcher
/// finds the identity, home and cache through the password database.
#[test]
fn nextflow_command_line_runs_with_an_empty_environment() {
    for ctx in matrix_with(&[Profile::User]) {
        let reg = Registry::plain(&ctx.dir().join("registry"));
        reg.push(&bash_image(&ctx), "wf/bash:1", false);
        let cache = ctx.mkdir("nxf-cache");
        let file = "127.0.0.1-wf-bash-1.img";
        let pull = format!(
            "singularity pull --no-https --name {file}.pulling.1 {} > /dev/null && mv {file}.pulling.1 {file}",
            reg.docker_ref("wf/bash:1")
        );
        ctx.cmd("bash")
            .args(&["-c", &pull])
            .cwd(&cache)
            .timeout(CLIENT_TIMEOUT)
            .run()
            .assert_code(0);
        let work = ctx.mkdir("work/ab/cdef0123");
        ctx.write_file(
            "work/ab/cdef0123/.command.run",
            format!("({WHERE}; echo \"bash $BASH_VERSION\"; id -un; pwd; echo \"$NXF_TASK_WORKDIR\") > out.txt\n"),
        );
        let line = format!(
            "set +u; env - PATH=\"$PATH\" ${{TMP:+SINGULARITYENV_TMP=\"$TMP\"}} \
             ${{TMPDIR:+SINGULARITYENV_TMPDIR=\"$TMPDIR\"}} \
             ${{XDG_RUNTIME_DIR:+XDG_RUNTIME_DIR=\"$XDG_RUNTIME_DIR\"}} \
             ${{DBUS_SESSION_BUS_ADDRESS:+DBUS_SESSION_BUS_ADDRESS=\"$DBUS_SESSION_BUS_ADDRESS\"}} \
             ${{NXF_TASK_WORKDIR:+SINGULARITYENV_NXF_TASK_WORKDIR=\"$NXF_TASK_WORKDIR\"}} \
             singularity exec --no-home --oci -B {} {} /bin/bash -c \
             \"cd \\\"$NXF_TASK_WORKDIR\\\"; /bin/bash .command.run\"",
            ctx.dir().join("work").display(),
            cache.join(file).display()
        );
        ctx.cmd("bash")
            .args(&["-c", &line])
            .env("NXF_TASK_WORKDIR", work.to_str().unwrap())
            .env_remove("SINGULARITY_CACHEDIR")
            .cwd(&work)
            .timeout(CLIENT_TIMEOUT)
            .run()
            .assert_code(0);
        let out = std::fs::read_to_string(work.join("out.txt")).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "container", "{out}");
        assert!(lines[1].starts_with("bash 5"), "{out}");
        assert_eq!(lines[2], ctx.user().unwrap(), "{out}");
        assert_eq!(lines[3], work.to_str().unwrap(), "{out}");
        assert_eq!(lines[4], work.to_str().unwrap(), "{out}");
        // With HOME unset, the cache is in the home directory of the password database.
        let cache_root = ctx.home().join(".singularity/cache/oci-launcher");
        assert!(cache_root.join("layout").is_dir());
        ctx.cmd("bash")
            .args(&["-c", "env - PATH=\"$PATH\" singularity cache list"])
            .env_remove("SINGULARITY_CACHEDIR")
            .run()
            .assert_code(0)
            .assert_stdout_contains(&format!("cache: {}", cache_root.display()));
        ctx.assert_no_leftovers();
    }
}

/// pull, build, inspect and the global options as clients type them, without the clients.
#[test]
fn pull_build_inspect_and_global_options_as_singularity() {
    for ctx in matrix_with(&[Profile::User]) {
        let reg = registry_with_busybox(&ctx);
        let link = singularity_link();
        let url = reg.docker_ref("wf/busybox:1");
        fn nohttps(c: e2e::Cmd<'_>) -> e2e::Cmd<'_> {
            c.env("SINGULARITY_NOHTTPS", "true")
        }
        nohttps(ctx.cmd(&link).args(&["pull", "--name", "a.simg", &url]))
            .run()
            .assert_code(0);
        nohttps(ctx.cmd(&link).args(&["pull", "--name", "a.simg", &url]))
            .run()
            .assert_fatal("will not overwrite");
        nohttps(
            ctx.cmd(&link)
                .args(&["pull", "--force", "--name", "a.simg", &url]),
        )
        .run()
        .assert_code(0);
        // SINGULARITY_NOHTTPS is read as SingularityCE reads booleans.
        ctx.cmd(&link)
            .args(&["pull", "--name", "b.simg", &url])
            .env("SINGULARITY_NOHTTPS", "yes please")
            .run()
            .assert_fatal("is not a boolean");
        ctx.run(
            &link,
            &["build", "b.sif", "docker-archive://nonexistent.tar"],
        )
        .assert_code(255);
        ctx.write_file("recipe.def", "Bootstrap: docker\nFrom: busybox\n");
        ctx.run(&link, &["build", "c.sif", "recipe.def"])
            .assert_fatal("definition file");
        ctx.run(&link, &["build", "b.sif", "a.simg"]).assert_code(0);
        let inspected = ctx.run(&link, &["inspect", "--json", "b.sif"]);
        inspected.assert_code(0);
        assert_eq!(
            inspected.json(),
            serde_json::json!({"data": {"attributes": {}}, "type": "container"})
        );
        assert!(
            inspected.stdout.contains("\n\t\"data\""),
            "{}",
            inspected.stdout
        );
        // Snakemake's form: global options first, --home CWD binds the working directory.
        ctx.write_file("seen.txt", "bound\n");
        ctx.run(
            &link,
            &[
                "--quiet",
                "--silent",
                "exec",
                "--home",
                ctx.dir().to_str().unwrap(),
                "b.sif",
                "sh",
                "-c",
                "cat seen.txt; echo written > new.txt",
            ],
        )
        .assert_code(0)
        .assert_stdout_eq("bound")
        .assert_stderr_empty();
        assert_eq!(
            std::fs::read_to_string(ctx.dir().join("new.txt")).unwrap(),
            "written\n"
        );
        // cwltool's form of every flag.
        let out = ctx.mkdir("cwl-out");
        ctx.run(
            &link,
            &[
                "--quiet", "run", "--contain", "--ipc", "--cleanenv", "--no-eval", "--userns",
                "--home", &format!("{}:/cwlhome", out.display()),
                &format!("--mount=type=bind,source={},target=/in.txt,readonly", ctx.dir().join("seen.txt").display()),
                "--bind", &format!("{}:/in2:ro", ctx.dir().display()),
                "--pwd", "/cwlhome", "--net", "--network", "none", "a.simg",
                "sh", "-c", "cat /in.txt; pwd; ls /in2/seen.txt; touch /in2/x 2>/dev/null || echo ro; echo hi > here.txt",
            ],
        )
        .assert_code(0)
        .assert_stdout_eq("bound\n/cwlhome\n/in2/seen.txt\nro");
        assert!(out.join("here.txt").is_file());
        // The other global options.
        ctx.run(&link, &["-v", "-d", "exec", "a.simg", "true"])
            .assert_code(0)
            .assert_stderr_contains("DEBUG: singularity-oci: stage fetch");
        // Refused clearly.
        ctx.run(&link, &["exec", "--no-oci", "a.simg", "true"])
            .assert_fatal("only SingularityCE's OCI mode");
        ctx.cmd(&link)
            .args(&["exec", "a.simg", "true"])
            .env("SINGULARITY_NO_OCI", "1")
            .run()
            .assert_fatal("only SingularityCE's OCI mode");
        ctx.run(&link, &["-c", "/etc/x.conf", "exec", "a.simg", "true"])
            .assert_fatal("singularity.conf");
        // Environment forms of the image options, and the command line winning over them.
        let dry = ctx
            .cmd(&link)
            .args(&[
                "--dry-run",
                "exec",
                "--platform",
                "linux/amd64",
                &url,
                "true",
            ])
            .env("SINGULARITY_NOHTTPS", "1")
            .env("SINGULARITY_ARCH", "arm64")
            .env("SINGULARITY_AUTHFILE", "/nonexistent/auth.json")
            .run();
        dry.assert_code(0)
            .assert_stdout_contains(" --no-https")
            .assert_stdout_contains(" --authfile /nonexistent/auth.json");
        assert!(!dry.stdout.contains("arm64"), "{}", dry.stdout);
        ctx.assert_no_leftovers();
    }
}
