//! Real registries for the tests: Debian's `docker-registry` (CNCF distribution) on 127.0.0.1.
//!
//! * [`Registry::plain`]: plain HTTP, no auth.
//! * [`Registry::tls_auth`]: HTTPS with a certificate from a throw-away CA made with openssl, and
//!   htpasswd (bcrypt, apache2-utils) Basic auth for [`USER`]/[`PASSWORD`].
//! * [`Registry::tls_client_cert`]: HTTPS that requires a client certificate signed by the same
//!   throw-away CA (`http.tls.clientcas`); `ca_dir()` then also holds `client.cert`/`client.key`.
//! * [`Registry::tls_self_signed`]: HTTPS with htpasswd auth and a self-signed certificate made
//!   the way Docker's registry documentation shows (`openssl req -x509 -newkey rsa:4096 ...`,
//!   which marks it `CA:TRUE`); `ca_dir()` holds that certificate as `domain.crt`.
//!
//! Each registry listens on a free loopback port, keeps its storage and log in its own
//! directory, and is killed by PID when dropped. Images are pushed with `skopeo copy`. The log is
//! parsed to count requests (for "each blob downloaded once").

use crate::tools::require_tool;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "sioci";
pub const PASSWORD: &str = "s3cret-pw";

pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    pub dir: PathBuf,
    pub tls: bool,
    child: Child,
    log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot find a free loopback port")
        .port()
}

fn must(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Make `p` and its parents readable by everyone (the tests' unprivileged user reads CA files).
fn world_readable(p: &Path) {
    let mode = if p.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Registry {
    /// A plain-HTTP registry without auth, storing under `dir` (created).
    pub fn plain(dir: &Path) -> Registry {
        Registry::start(dir, false)
    }

    /// An HTTPS registry with htpasswd auth; trust `ca_dir()` to talk to it.
    pub fn tls_auth(dir: &Path) -> Registry {
        Registry::start(dir, true)
    }

    /// An HTTPS registry that accepts only clients with a certificate from its CA (no password):
    /// `ca_dir()` holds the CA and the client certificate and key, and
    /// `server_ca_only_dir()` the CA alone.
    pub fn tls_client_cert(dir: &Path) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        make_tls(dir);
        make_client_cert(dir);
        Registry::start(dir, true)
    }

    /// An HTTPS registry with htpasswd auth whose certificate is self-signed, for `san`
    /// (`IP:127.0.0.1`, `DNS:name`), made as Docker's "Deploy a registry server" page shows.
    pub fn tls_self_signed(dir: &Path, san: &str) -> Registry {
        std::fs::create_dir_all(dir).unwrap();
        make_docker_style_cert(dir, san);
        Registry::start(dir, true)
    }

    fn start(dir: &Path, tls: bool) -> Registry {
        require_tool("docker-registry");
        require_tool("skopeo");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        world_readable(dir);
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cfg = format!(
            "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}, fields: {{service: registry}}}}\n\
             storage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n\
             http:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        if tls && dir.join("certs/client.cert").is_file() {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n    clientcas:\n      - {}\n",
                dir.join("tls.crt").display(),
                dir.join("tls.key").display(),
                dir.join("ca.crt").display()
            ));
        } else if tls {
            if !dir.join("tls.crt").is_file() {
                make_tls(dir);
            }
            let htpasswd = dir.join("htpasswd");
            require_tool("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(&htpasswd, out.stdout).unwrap();
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: sioci-realm\n    path: {}\n",
                dir.join("tls.crt").display(),
                dir.join("tls.key").display(),
                htpasswd.display()
            ));
        }
        let cfg_path = dir.join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let log = dir.join("registry.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("cannot start docker-registry");
        let r = Registry {
            addr,
            dir: dir.to_path_buf(),
            tls,
            child,
            log,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(&self.addr) {
                if !self.tls {
                    let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                    let mut buf = [0u8; 12];
                    if s.read(&mut buf).is_ok_and(|n| n > 0) {
                        return;
                    }
                } else {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "docker-registry on {} did not come up; log:\n{}",
            self.addr,
            self.log_text()
        );
    }

    /// Directory holding `ca.crt`, for `--cert-dir` (oci-fetch) and skopeo's cert dirs.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// Directory holding only `ca.crt` (for a client without a certificate).
    pub fn server_ca_only_dir(&self) -> PathBuf {
        self.dir.join("ca-only")
    }

    /// `docker://127.0.0.1:PORT/REPO_TAG`.
    pub fn docker_ref(&self, repo_tag: &str) -> String {
        format!("docker://{}/{repo_tag}", self.addr)
    }

    /// Push `src` (any skopeo source, e.g. `oci:/path:latest`) as `repo_tag`; `all` keeps every
    /// platform of an index.
    pub fn push(&self, src: &str, repo_tag: &str, all: bool) {
        self.push_with(src, repo_tag, all, &[]);
    }

    /// [`Registry::push`] with extra `skopeo copy` arguments (e.g. `--format=v2s2` for Docker
    /// schema 2 media types).
    pub fn push_with(&self, src: &str, repo_tag: &str, all: bool, extra: &[&str]) {
        let mut c = Command::new("skopeo");
        c.args(["copy", "-q"]).args(extra);
        if all {
            c.arg("--all");
        }
        if self.tls {
            c.arg(format!("--dest-cert-dir={}", self.ca_dir().display()));
            c.arg(format!("--dest-creds={USER}:{PASSWORD}"));
        } else {
            c.arg("--dest-tls-verify=false");
        }
        c.arg(src).arg(self.docker_ref(repo_tag));
        must(&mut c, &format!("skopeo push of {src}"));
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many `GET` requests for `path_part` (e.g. `/blobs/sha256:...`) the registry has
    /// answered, from its access log (one line per request, `"GET /v2/... HTTP/1.1" STATUS`).
    pub fn gets(&self, path_part: &str) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(path_part))
            .count()
    }

    /// Total bytes stored for the repository's blobs is not needed; the PID is, for diagnostics.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // SAFETY: kill on the PID of our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// `/etc/containers/certs.d/HOST:PORT/<name of cert>` for one test registry, removed on drop (the
/// directory name carries the test registry's random port, so nothing else uses it).
pub struct CertsD(PathBuf);

impl CertsD {
    pub fn install(addr: &str, cert: &Path) -> CertsD {
        let d = Path::new("/etc/containers/certs.d").join(addr);
        std::fs::create_dir_all(&d).unwrap();
        for p in [d.parent().unwrap(), d.as_path()] {
            world_readable(p);
        }
        let to = d.join(cert.file_name().unwrap());
        std::fs::copy(cert, &to).unwrap();
        world_readable(&to);
        CertsD(d)
    }
}

impl Drop for CertsD {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        // Remove certs.d itself only if that leaves nothing else behind.
        let _ = std::fs::remove_dir(self.0.parent().unwrap());
    }
}

/// A client certificate signed by the CA of `make_tls`, as `certs/client.cert` and
/// `certs/client.key` (containers-certs.d(5) names), and a `ca-only/` copy of the CA.
fn make_client_cert(dir: &Path) {
    let ext = dir.join("client.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    key_and_request(
        dir,
        "/CN=sioci test client",
        "certs/client.key",
        "client.csr",
    );
    sign_with_ca(dir, "client.csr", "client.ext", "certs/client.cert");
    // The test users read the key too (the whole directory is a throw-away test fixture).
    for f in ["client.cert", "client.key"] {
        world_readable(&dir.join("certs").join(f));
    }
    let only = dir.join("ca-only");
    std::fs::create_dir_all(&only).unwrap();
    std::fs::copy(dir.join("ca.crt"), only.join("ca.crt")).unwrap();
    world_readable(&only.join("ca.crt"));
}

/// `domain.key` and the self-signed `domain.crt` (`CA:TRUE`, openssl's defaults for `-x509`) for
/// `san`, used as the registry's `tls.key`/`tls.crt`; `certs/domain.crt` is the copy a client
/// trusts.
fn make_docker_style_cert(dir: &Path, san: &str) {
    require_tool("openssl");
    let p = |n: &str| dir.join(n).display().to_string();
    must(
        Command::new("openssl").args([
            "req",
            "-newkey",
            "rsa:4096",
            "-nodes",
            "-sha256",
            "-keyout",
            &p("tls.key"),
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=sioci self-signed registry",
            "-addext",
            &format!("subjectAltName={san}"),
            "-out",
            &p("tls.crt"),
        ]),
        "openssl self-signed certificate",
    );
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(dir.join("tls.crt"), certs.join("domain.crt")).unwrap();
    world_readable(&certs);
    world_readable(&certs.join("domain.crt"));
}

/// A throw-away CA and a server certificate for 127.0.0.1 signed by it.
fn make_tls(dir: &Path) {
    require_tool("openssl");
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    must(
        Command::new("openssl").args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sioci test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.crt"),
        ]),
        "openssl CA",
    );
    key_and_request(dir, "/CN=127.0.0.1", "tls.key", "tls.csr");
    sign_with_ca(dir, "tls.csr", "server.ext", "tls.crt");
    std::fs::copy(dir.join("ca.crt"), certs.join("ca.crt")).unwrap();
    world_readable(&certs);
    world_readable(&certs.join("ca.crt"));
}

/// A new P-256 key (`dir/key`) and a certificate request for `subject` (`dir/csr`).
fn key_and_request(dir: &Path, subject: &str, key: &str, csr: &str) {
    let p = |n: &str| dir.join(n).display().to_string();
    must(
        Command::new("openssl").args([
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &p(key),
            "-out",
            &p(csr),
        ]),
        "openssl key and request",
    );
}

/// Sign `dir/csr` with the test CA (`dir/ca.crt`, `dir/ca.key`) and the extensions in `dir/ext`.
fn sign_with_ca(dir: &Path, csr: &str, ext: &str, out: &str) {
    let p = |n: &str| dir.join(n).display().to_string();
    must(
        Command::new("openssl").args([
            "x509",
            "-req",
            "-in",
            &p(csr),
            "-CA",
            &p("ca.crt"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p(ext),
            "-out",
            &p(out),
        ]),
        "openssl sign",
    );
}
