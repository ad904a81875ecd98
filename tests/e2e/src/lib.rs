//! End-to-end test harness for singularity-oci: real binaries, real crun and runc, real user
//! namespaces, as root and as unprivileged users. No mocks.
//!
//! `scripts/test` (run as root) installs the release build into a temporary prefix, builds the
//! fixture images with `scripts/mkimages`, makes sure the test users exist, and runs
//! `cargo test` with these variables (all required, a missing one panics with a clear message):
//!
//! | variable | meaning |
//! |---|---|
//! | `SIOCI_PREFIX` | install prefix: `$SIOCI_PREFIX/bin/singularity-oci` and the `oci-*` stages |
//! | `SIOCI_FIXTURES` | output of `scripts/mkimages`: one OCI layout per image, plus `layered.expected.json` |
//! | `SIOCI_TEST_USER` | unprivileged user WITH `/etc/subuid` and `/etc/subgid` ranges (`sioci-tester`) |
//! | `SIOCI_TEST_USER_NOSUB` | unprivileged user WITHOUT ranges (single-ID fallback, `sioci-nosub`) |
//! | `SIOCI_TEST_USER_ATTACKER` | a second unprivileged user who attacks the others (`sioci-attacker`) |
//! | `SIOCI_SCHEMAS` | vendored OCI JSON schemas (`tests/schemas`) |
//! | `SIOCI_WORKDIR` | optional: where per-test directories go (default: `$SIOCI_PREFIX/../work`) |
//!
//! # Writing a test
//!
//! ```no_run
//! use e2e::*;
//!
//! #[test]
//! fn echo_hello() {
//!     for ctx in matrix() {   // root and user, each with crun and runc
//!         ctx.front(&["exec", &oci_ref("busybox"), "echo", "hello"])
//!             .assert_code(0)
//!             .assert_stdout_eq("hello");
//!         ctx.assert_no_leftovers();
//!     }
//! }
//! ```
//!
//! Every [`Ctx`] has its own private `TMPDIR`/`SINGULARITY_TMPDIR` owned by the profile's user,
//! a cache shared by all tests of the same profile (`SINGULARITY_CACHEDIR`), the user's real
//! `HOME`, `SINGULARITY_OCI_RUNTIME` set to the runtime under test, and a `PATH` that starts
//! with `$SIOCI_PREFIX/bin`. Commands run with exactly that environment (nothing inherited from
//! `cargo test`): as root directly, or as the test user through `setpriv` ([`Ctx::command`]
//! for a `std::process::Command` the same way, e.g. for a background process).
//!
//! The per-test directory is named `<module>-<test fn>.<profile>.<runtime>`
//! ([`matrix`], [`Ctx::for_test`]); a name given to [`Ctx::new`] must be unique in the suite.

mod cmd;
mod digest;
mod expect;
pub mod faultproxy;
mod leftovers;
mod procs;
pub mod pty;
pub mod pyserver;
pub mod registry;
mod schema;
pub mod setpriv;
pub mod tools;
pub mod tree;

pub use cmd::{Cmd, Output};
pub use digest::{sha256_bytes, sha256_file};
pub use expect::{
    TreeExpectation, check_tree_host, layered_errors, layered_expected, layered_in_container_errors,
};
pub use procs::processes_mentioning;
pub use schema::{
    assert_record_valid, image_schema_errors, record_schema_errors, runtime_config_errors,
    schema_errors, validate_image_json, validate_runtime_config,
};
pub use tools::require_tool;

use std::ffi::CString;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// Who runs the commands of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Host root.
    Root,
    /// `$SIOCI_TEST_USER`, who has subordinate uid/gid ranges.
    User,
    /// `$SIOCI_TEST_USER_NOSUB`, who has none (the single-ID map).
    UserNoSubids,
    /// `$SIOCI_TEST_USER` with `--fakeroot` added to exec/run/shell/test by [`Ctx::front`].
    Fakeroot,
    /// `$SIOCI_TEST_USER_ATTACKER`: a second local user who attacks the others (never part of
    /// a matrix; see [`Ctx::attacker`]).
    Attacker,
}

impl Profile {
    pub const ALL: [Profile; 4] = [
        Profile::Root,
        Profile::User,
        Profile::UserNoSubids,
        Profile::Fakeroot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Root => "root",
            Profile::User => "user",
            Profile::UserNoSubids => "nosub",
            Profile::Fakeroot => "fakeroot",
            Profile::Attacker => "attacker",
        }
    }

    /// The account the commands run as (`None` for root).
    pub fn user_name(self) -> Option<String> {
        match self {
            Profile::Root => None,
            Profile::User | Profile::Fakeroot => Some(env_required("SIOCI_TEST_USER")),
            Profile::UserNoSubids => Some(env_required("SIOCI_TEST_USER_NOSUB")),
            Profile::Attacker => Some(env_required("SIOCI_TEST_USER_ATTACKER")),
        }
    }
}

/// The OCI runtime under test (exported as `SINGULARITY_OCI_RUNTIME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rt {
    Crun,
    Runc,
}

impl Rt {
    pub const ALL: [Rt; 2] = [Rt::Crun, Rt::Runc];

    pub fn name(self) -> &'static str {
        match self {
            Rt::Crun => "crun",
            Rt::Runc => "runc",
        }
    }
}

/// The standard matrix for the calling test: root and unprivileged (with subids), each with
/// crun and runc. The test name is taken from the test thread (see [`current_test_name`]).
pub fn matrix() -> Vec<Ctx> {
    matrix_with(&[Profile::Root, Profile::User])
}

/// Every runtime for each of `profiles`, for the calling test.
pub fn matrix_with(profiles: &[Profile]) -> Vec<Ctx> {
    let name = current_test_name();
    profiles
        .iter()
        .flat_map(|&p| Rt::ALL.iter().map(move |&r| (p, r)))
        .map(|(p, r)| Ctx::new(p, r, &name))
        .collect()
}

/// The test's path with `-` for `::` (`<module>-<test function>`), from libtest's thread
/// name, for directory names; a test at the root of its binary is `<test binary>-<function>`.
pub fn current_test_name() -> String {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("main");
    assert!(
        test != "main",
        "cannot tell the test's name from the thread: use Ctx::new(profile, rt, name)"
    );
    if test.contains("::") {
        return test.replace("::", "-");
    }
    let exe = std::env::current_exe().ok();
    let bin = exe
        .as_ref()
        .and_then(|p| p.file_stem())
        .and_then(|s| s.to_str())
        .map(|s| s.rsplit_once('-').map_or(s, |(b, _hash)| b).to_string())
        .unwrap_or_default();
    format!("{bin}-{}", test.replace("::", "-"))
}

/// Default time limit of one command; a hung container must fail the test, not the CI job.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// One test, run by one profile with one runtime.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub profile: Profile,
    pub rt: Rt,
    /// Unique name: `<test>.<profile>.<runtime>`.
    pub name: String,
    user: Option<String>,
    uid: u32,
    gid: u32,
    home: PathBuf,
    dir: PathBuf,
    tmp: PathBuf,
    cache: PathBuf,
}

impl Ctx {
    /// Set up the directories of `test_name` for `profile` and `rt`. Any directory left by an
    /// earlier run of the same test is removed first.
    pub fn new(profile: Profile, rt: Rt, test_name: &str) -> Ctx {
        require_root();
        tools_present();
        let user = profile.user_name();
        let (uid, gid, home) = match &user {
            None => (0, 0, PathBuf::from("/root")),
            Some(u) => lookup_user(u),
        };
        let name = format!("{test_name}.{}.{}", profile.name(), rt.name());
        let work = workdir();
        let dir = work.join("t").join(dir_name(test_name, profile, rt));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .unwrap_or_else(|e| panic!("cannot remove old {}: {e}", dir.display()));
        }
        make_dir(&dir, 0o755, uid, gid);
        let tmp = dir.join("tmp");
        make_dir(&tmp, 0o700, uid, gid);
        let caches = work.join("cache");
        make_dir(&caches, 0o755, 0, 0);
        let cache = caches.join(profile.name());
        if !cache.exists() {
            make_dir(&cache, 0o700, uid, gid);
        }
        Ctx {
            profile,
            rt,
            name,
            user,
            uid,
            gid,
            home,
            dir,
            tmp,
            cache,
        }
    }

    /// The hostile second user of this test: a context of `$SIOCI_TEST_USER_ATTACKER` with the
    /// same runtime, whose directory is its own (one per victim profile and runtime).
    pub fn attacker(&self) -> Ctx {
        Ctx::new(
            Profile::Attacker,
            self.rt,
            &format!("{}-vs-{}", self.name, self.profile.name()),
        )
    }

    /// A context for the calling test (named after the test thread).
    pub fn for_test(profile: Profile, rt: Rt) -> Ctx {
        Ctx::new(profile, rt, &current_test_name())
    }

    pub fn is_root(&self) -> bool {
        self.profile == Profile::Root
    }
    /// The user name the commands run as (`None` for root).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    pub fn uid(&self) -> u32 {
        self.uid
    }
    pub fn gid(&self) -> u32 {
        self.gid
    }
    pub fn home(&self) -> &Path {
        &self.home
    }
    /// The test's own directory (0755, owned by the profile's user); the default cwd.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `TMPDIR` and `SINGULARITY_TMPDIR` of the test (0700, owned by the profile's user).
    pub fn tmpdir(&self) -> &Path {
        &self.tmp
    }
    /// `SINGULARITY_CACHEDIR`, shared by the tests of this profile.
    pub fn cache_dir(&self) -> &Path {
        &self.cache
    }

    /// Make `dir()/rel` (and parents), owned by the profile's user, mode 0755.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.dir.join(rel);
        let mut cur = self.dir.clone();
        for c in Path::new(rel).components() {
            cur.push(c);
            if !cur.exists() {
                make_dir(&cur, 0o755, self.uid, self.gid);
            }
        }
        p
    }

    /// Write `dir()/rel` with `contents`, owned by the profile's user, mode 0644.
    pub fn write_file(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.dir.join(rel);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        chown(&p, Some(self.uid), Some(self.gid)).unwrap();
        p
    }

    /// The `PATH` commands see.
    pub fn path_env(&self) -> String {
        format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            prefix().join("bin").display()
        )
    }

    /// The complete environment of every command of this context.
    pub fn base_env(&self) -> Vec<(String, String)> {
        let user = self.user.clone().unwrap_or_else(|| "root".into());
        let tmp = self.tmp.display().to_string();
        vec![
            ("PATH".into(), self.path_env()),
            ("HOME".into(), self.home.display().to_string()),
            ("USER".into(), user.clone()),
            ("LOGNAME".into(), user),
            ("SHELL".into(), "/bin/sh".into()),
            ("LANG".into(), "C.UTF-8".into()),
            ("TMPDIR".into(), tmp.clone()),
            ("SINGULARITY_TMPDIR".into(), tmp),
            (
                "SINGULARITY_CACHEDIR".into(),
                self.cache.display().to_string(),
            ),
            ("SINGULARITY_OCI_RUNTIME".into(), self.rt.name().into()),
        ]
    }

    /// A command to run as this context's user; see [`Cmd`].
    pub fn cmd(&self, program: impl AsRef<str>) -> Cmd<'_> {
        Cmd::new(self, program.as_ref())
    }

    /// Run `program args...` and wait for it.
    pub fn run(&self, program: impl AsRef<str>, args: &[&str]) -> Output {
        self.cmd(program).args(args).run()
    }

    /// A command running the installed front, `$SIOCI_PREFIX/bin/singularity-oci ARGS`. For the
    /// Fakeroot profile `--fakeroot` is inserted after `exec`, `run`, `shell` and `test`.
    pub fn front_cmd(&self, args: &[&str]) -> Cmd<'_> {
        let front = prefix().join("bin/singularity-oci");
        let mut argv: Vec<&str> = args.to_vec();
        // The subcommand is the first word that is not a global option.
        if self.profile == Profile::Fakeroot
            && let Some(i) = argv.iter().position(|a| !a.starts_with('-'))
            && matches!(argv[i], "exec" | "run" | "shell" | "test")
        {
            argv.insert(i + 1, "--fakeroot");
        }
        self.cmd(front.to_str().unwrap()).args(&argv)
    }

    /// Run the front; see [`Ctx::front_cmd`].
    pub fn front(&self, args: &[&str]) -> Output {
        self.front_cmd(args).run()
    }

    /// Run `singularity-oci exec OPTS... IMAGE CMD...`; see [`Ctx::front_cmd`].
    pub fn front_exec(&self, opts: &[&str], image: &str, cmd: &[&str]) -> Output {
        let mut a = vec!["exec"];
        a.extend_from_slice(opts);
        a.push(image);
        a.extend_from_slice(cmd);
        self.front(&a)
    }

    /// Path of an installed stage or the front: `$SIOCI_PREFIX/bin/NAME`.
    pub fn bin(&self, name: &str) -> String {
        prefix().join("bin").join(name).display().to_string()
    }

    /// The runtime state root the stages use for this profile (HACKING.md, "The lifecycle core"):
    /// `/run/singularity-oci` for root; for users `/run/user/UID/singularity-oci` when that
    /// directory exists, else `$TMPDIR/singularity-oci-UID`, i.e. inside this test's TMPDIR.
    pub fn state_root(&self) -> PathBuf {
        if self.is_root() {
            return PathBuf::from("/run/singularity-oci");
        }
        let run_user = PathBuf::from(format!("/run/user/{}", self.uid));
        if run_user.is_dir() {
            return run_user.join("singularity-oci");
        }
        self.tmp.join(format!("singularity-oci-{}", self.uid))
    }

    /// Panic unless everything a run may leave behind is gone: no bundle (nor anything else
    /// but the state root) in the test's TMPDIR, no runtime state of this test under the state
    /// root, and no mount point under the test's directory in `/proc/self/mountinfo`.
    pub fn assert_no_leftovers(&self) {
        let problems = leftovers::find(self);
        assert!(
            problems.is_empty(),
            "[{}] left behind after the run:\n  {}",
            self.name,
            problems.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Environment of the suite.

fn env_required(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set: run the end-to-end tests through scripts/test (as root), which \
             sets SIOCI_PREFIX, SIOCI_FIXTURES, SIOCI_TEST_USER, SIOCI_TEST_USER_NOSUB and SIOCI_SCHEMAS"
        ),
    }
}

fn env_dir(name: &str) -> PathBuf {
    let p = PathBuf::from(env_required(name));
    assert!(p.is_dir(), "{name}={} is not a directory", p.display());
    p
}

/// A fresh, empty, world-readable directory `WORKDIR/GROUP/NAME` for a test's own fixtures
/// (registries, layouts): removed first if an earlier run left it.
pub fn scratch_dir(group: &str, name: &str) -> PathBuf {
    let base = workdir().join(group);
    let p = base.join(name);
    if p.exists() {
        std::fs::remove_dir_all(&p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display()));
    }
    std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    for d in [&base, &p] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    p
}

/// `$SIOCI_PREFIX`: where scripts/install put the binaries.
pub fn prefix() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let p = env_dir("SIOCI_PREFIX");
        let front = p.join("bin/singularity-oci");
        assert!(
            front.is_file(),
            "{} is missing: scripts/install did not run into SIOCI_PREFIX",
            front.display()
        );
        p
    })
    .clone()
}

/// Where per-test directories and per-profile caches go (world-traversable).
pub fn workdir() -> PathBuf {
    static W: OnceLock<PathBuf> = OnceLock::new();
    W.get_or_init(|| {
        let w = match std::env::var("SIOCI_WORKDIR") {
            Ok(v) if !v.is_empty() => PathBuf::from(v),
            _ => prefix()
                .parent()
                .expect("SIOCI_PREFIX has a parent")
                .join("work"),
        };
        for d in [w.clone(), w.join("t")] {
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        w
    })
    .clone()
}

/// The OCI layout of fixture image `name` (`busybox`, `layered`, `user`, `entrypoint`,
/// `vartmp-link`, `uncompressed`, `zstd`), built by `scripts/mkimages`.
pub fn fixture(name: &str) -> PathBuf {
    let p = env_dir("SIOCI_FIXTURES").join(name);
    assert!(
        p.join("index.json").is_file(),
        "fixture {} is missing (scripts/mkimages builds it)",
        p.display()
    );
    p
}

/// SIF fixture `name` (`OUTDIR/sif/<name>.sif`: `busybox`, `layered`, the refused and the
/// hostile ones), built by `scripts/mkimages` with siftool and squashfs-tools.
pub fn sif_fixture(name: &str) -> PathBuf {
    let p = env_dir("SIOCI_FIXTURES")
        .join("sif")
        .join(format!("{name}.sif"));
    assert!(
        p.is_file(),
        "SIF fixture {} is missing (scripts/mkimages builds it)",
        p.display()
    );
    p
}

/// `oci:<fixture path>:latest`.
pub fn oci_ref(name: &str) -> String {
    format!("oci:{}:latest", fixture(name).display())
}

/// `$SIOCI_SCHEMAS`: the vendored OCI schemas (`runtime-spec/`, `image-spec/`).
pub fn schemas_dir() -> PathBuf {
    let p = env_dir("SIOCI_SCHEMAS");
    assert!(
        p.join("runtime-spec/config-schema.json").is_file(),
        "{}/runtime-spec/config-schema.json is missing",
        p.display()
    );
    p
}

/// The subordinate uid range `(start, count)` of `user` in /etc/subuid, if any.
pub fn subuid_range(user: &str) -> Option<(u32, u32)> {
    subid_range("/etc/subuid", user)
}

/// The subordinate gid range `(start, count)` of `user` in /etc/subgid, if any.
pub fn subgid_range(user: &str) -> Option<(u32, u32)> {
    subid_range("/etc/subgid", user)
}

fn subid_range(file: &str, user: &str) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.trim().split(':').collect();
        if f.len() != 3 || f[0] != user {
            return None;
        }
        Some((f[1].parse().ok()?, f[2].parse().ok()?))
    })
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the end-to-end tests must run as root (they switch to the test users): use scripts/test"
    );
}

/// Tools the harness itself needs; checked once, loudly.
fn tools_present() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        for t in ["setpriv", "crun", "runc", "newuidmap", "newgidmap"] {
            require_tool(t);
        }
    });
}

/// The per-test directory name: the test name cut to 32 bytes plus a hash of the whole name
/// (unique and still recognisable), then profile and runtime. Kept short because unix socket
/// paths (console sockets, attach sockets) below it are limited to 107 bytes.
fn dir_name(test_name: &str, profile: Profile, rt: Rt) -> String {
    // FNV-1a: tiny, stable, good enough to tell names apart.
    let hash = test_name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut cut = test_name.len().min(32);
    while !test_name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}-{:06x}.{}.{}",
        &test_name[..cut],
        hash & 0xff_ffff,
        profile.name(),
        rt.name()
    )
}

fn lookup_user(name: &str) -> (u32, u32, PathBuf) {
    let cname = CString::new(name).unwrap();
    // SAFETY: getpwnam with a NUL-terminated name; the result is copied out at once and the
    // tests never call getpw* concurrently with different expectations of the static buffer
    // (the fields read are plain values).
    unsafe {
        let pw = libc::getpwnam(cname.as_ptr());
        assert!(
            !pw.is_null(),
            "test user '{name}' does not exist: run scripts/setup (or scripts/setup --users)"
        );
        let home = std::ffi::CStr::from_ptr((*pw).pw_dir)
            .to_string_lossy()
            .into_owned();
        ((*pw).pw_uid, (*pw).pw_gid, PathBuf::from(home))
    }
}

fn make_dir(p: &Path, mode: u32, uid: u32, gid: u32) {
    match std::fs::create_dir(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => panic!("mkdir {}: {e}", p.display()),
    }
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    chown(p, Some(uid), Some(gid)).unwrap();
}
