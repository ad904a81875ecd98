//! Tasks started by a batch system or an MPI launcher (`srun`, `srun --mpi=pmix`, `mpirun`):
//! what a container needs from the host to know its place in the job and to reach its peers.
//!
//! SingularityCE's native mode shares the host's PID namespace, `/dev` and `/tmp`, so MPI's
//! "hybrid model" (the launcher outside, one container per rank) just works there. The OCI
//! launcher isolates all three, which breaks Open MPI in two ways measured here: PMIx clients
//! cannot open the server's rendezvous files (`PMIX_SERVER_TMPDIR`, in slurmd's spool), and the
//! shared-memory transport (vader) addresses its peers by PID, which a private PID namespace
//! renumbers (every rank is PID 1: segfault in `mca_btl_vader_sendi`).

use crate::options::Options;

/// Prefixes of the host variables that tie a task to its job step and its MPI peers. Compat
/// mode passes them (where neither the image nor the user set the name), so `SLURM_PROCID`,
/// `PMIX_RANK`, `OMPI_COMM_WORLD_RANK`… reach the container.
pub const WIRING_PREFIXES: &[&str] = &["SLURM_", "PMI_", "PMIX_", "OMPI_"];

/// True for a host variable of the job wiring (see [`WIRING_PREFIXES`]).
pub fn is_wiring_var(k: &str) -> bool {
    WIRING_PREFIXES.iter().any(|p| k.starts_with(p))
}

fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// True when the environment says this process is one rank of a PMI or PMIx job.
pub fn is_mpi_rank(env: &[(String, String)]) -> bool {
    get(env, "PMIX_RANK").is_some() || get(env, "PMI_RANK").is_some()
}

/// The options of an MPI rank: `opts` plus what the ranks of one node share on the host, or
/// `None` when this is not a rank (then nothing changes). A rank gets
/// * the host PID namespace (`--no-pid`),
/// * the host's `/dev/shm` (`--bind /dev/shm`), where the shared-memory transport's segments live,
/// * the PMIx server directory `PMIX_SERVER_TMPDIR` bound at the same path, when it is an
///   existing absolute directory whose name a bind spec can carry (no `:` or `,`).
pub fn rank_options(opts: &Options, env: &[(String, String)]) -> Option<Options> {
    if !is_mpi_rank(env) {
        return None;
    }
    let mut o = opts.clone();
    o.no_pid = true;
    let mut add = |p: &str| {
        if !o.binds.iter().any(|b| b == p) {
            o.binds.push(p.to_string());
        }
    };
    if std::path::Path::new("/dev/shm").is_dir() {
        add("/dev/shm");
    }
    if let Some(dir) = get(env, "PMIX_SERVER_TMPDIR") {
        let dir = dir.trim_end_matches('/');
        if dir.starts_with('/') && !dir.contains([':', ',']) && std::path::Path::new(dir).is_dir() {
            add(dir);
        }
    }
    Some(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn wiring_vars() {
        for k in [
            "SLURM_PROCID",
            "PMIX_RANK",
            "PMI_FD",
            "OMPI_COMM_WORLD_RANK",
        ] {
            assert!(is_wiring_var(k), "{k}");
        }
        for k in ["SLURMX", "PMIXRANK", "HOME", "SINGULARITY_BIND", "OMPIX"] {
            assert!(!is_wiring_var(k), "{k}");
        }
    }

    #[test]
    fn not_a_rank_changes_nothing() {
        let env = kv(&[("SLURM_PROCID", "0"), ("PMIX_SERVER_TMPDIR", "/tmp")]);
        assert!(rank_options(&Options::default(), &env).is_none());
    }

    #[test]
    fn pmix_rank_shares_pid_shm_and_server_dir() {
        let dir = std::env::temp_dir().join(format!("launch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.to_str().unwrap().to_string();
        let env = kv(&[("PMIX_RANK", "3"), ("PMIX_SERVER_TMPDIR", &format!("{d}/"))]);
        let mut opts = Options::default();
        opts.binds.push("/dev/shm".into());
        let o = rank_options(&opts, &env).unwrap();
        assert!(o.no_pid);
        assert_eq!(o.binds, vec!["/dev/shm".to_string(), d.clone()]);
        std::fs::remove_dir(&dir).unwrap();
        // A missing or unbindable server directory is not bound.
        for bad in ["/nonexistent/pmix", "relative", "/tmp/a:b"] {
            let env = kv(&[("PMI_RANK", "0"), ("PMIX_SERVER_TMPDIR", bad)]);
            let o = rank_options(&Options::default(), &env).unwrap();
            assert!(o.no_pid);
            assert!(!o.binds.iter().any(|b| b == bad), "{bad}");
        }
    }
}
