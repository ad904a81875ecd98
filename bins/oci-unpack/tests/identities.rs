//! Ownership under each identity: root (keep), uid 0 in a user namespace with the subordinate
//! ranges mapped (keep, owners land on the host as the mapped IDs), an unprivileged user
//! (flatten, original owner in `user.rootlesscontainers`, compared with `umoci --rootless`),
//! and uid 0 in a single-ID user namespace (flatten).

mod support;
use support::tarw::*;
use support::*;

fn layers() -> Vec<(Vec<Ent>, Comp)> {
    vec![
        (
            vec![
                dir("etc"),
                file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
                dir("home"),
                dir("home/u").owner(1000, 1000).mode(0o700),
                file("home/u/secret", b"s").owner(1000, 1000).mode(0o600),
                file("etc/shadow", b"x").owner(0, 42).mode(0o640),
                file("usr-suid", b"x").mode(0o4755),
                dir("ro").mode(0o555),
                file("ro/f", b"f").mode(0o400),
                chardev("null", 1, 3),
                fifo("fifo").owner(7, 7),
                symlink("link", "/etc/passwd").owner(1000, 1000),
            ],
            Comp::Gzip,
        ),
        (
            vec![
                dir("ro").mode(0o555),
                file("ro/g", b"g"),
                whiteout("etc", "passwd"),
            ],
            Comp::Gzip,
        ),
    ]
}

/// A per-user cache directory the user can write.
fn user_cache(t: &std::path::Path, user: &str) -> std::path::PathBuf {
    let c = t.join(format!("cache-{user}"));
    std::fs::create_dir(&c).unwrap();
    let id = uid_of(user);
    std::os::unix::fs::chown(&c, Some(id), Some(id)).unwrap();
    c
}

#[test]
fn unprivileged_user_flattens_like_umoci_rootless() {
    require_root();
    let t = scratch("flatten");
    let rec = image(t.path(), &layers());
    let cache = user_cache(t.path(), UNPRIV_NOSUB);
    let o = run(
        &As::User(UNPRIV_NOSUB),
        &cache,
        &["--input", rec.to_str().unwrap()],
    );
    let r = ok_record(&o);
    assert_eq!(r["ownership"], "flatten");
    assert_eq!(r["readOnly"], true);
    assert!(
        stderr(&o).contains("skipped 1 device node"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).lines().count(), 1, "one warning: {}", stderr(&o));
    let root = rootfs_of(&r);
    assert!(root.starts_with(&cache), "the user's cache");
    let ours = snapshot(&root);
    let uid = uid_of(UNPRIV_NOSUB);
    for (p, i) in &ours {
        assert_eq!((i.uid, i.gid), (uid, uid), "{p} owned by the caller");
    }
    assert!(!ours.contains_key("/null"), "device node skipped");
    assert_eq!(ours["/usr-suid"].mode, 0o4755);
    assert_eq!(ours["/ro"].mode, 0o555);
    assert!(ours.contains_key("/ro/g"));

    // umoci --rootless as the same user, from a copy of the layout that user can write
    // next to (umoci wants its bundle dir writable).
    let work = t.path().join("umoci-work");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(uid), Some(uid)).unwrap();
    let theirs = snapshot(&umoci_unpack(
        &t.path().join("layout"),
        &work.join("b"),
        Some(UNPRIV_NOSUB),
    ));
    let mut theirs = theirs;
    // umoci leaves an empty regular file where the device node was; we skip it (documented).
    assert_eq!(theirs.remove("/null").map(|i| i.kind), Some('f'));
    let d = diff(&ours, &theirs, true);
    assert!(
        d.is_empty(),
        "differences from umoci --rootless:\n{}",
        d.join("\n")
    );
    assert_eq!(
        ours["/home/u/secret"]
            .xattrs
            .get("user.rootlesscontainers")
            .map(Vec::as_slice),
        Some(&[0x08, 0xe8, 0x07, 0x10, 0xe8, 0x07][..])
    );
    // The tree can be removed by its owner despite 0555/0700 directories.
    assert!(
        e2e::setpriv::command_via(
            &e2e::setpriv::setpriv_words(uid, uid, e2e::setpriv::Groups::Clear),
            "sh"
        )
        .args(["-c", "chmod -R u+rwX \"$0\" && rm -rf \"$0\""])
        .arg(&root)
        .status()
        .unwrap()
        .success()
    );
}

#[test]
fn root_in_a_subuid_namespace_keeps_owners_as_mapped() {
    require_root();
    let t = scratch("subuid");
    let rec = image(t.path(), &layers());
    let cache = user_cache(t.path(), UNPRIV_SUB);
    // The ranges scripts/setup gave the user, as this machine has them.
    let (ustart, ucount) = subid_range("/etc/subuid", UNPRIV_SUB);
    let (gstart, gcount) = subid_range("/etc/subgid", UNPRIV_SUB);
    let o = run(
        &As::UserUserns(
            UNPRIV_SUB,
            format!("--map-users={ustart},1,{ucount} --map-groups={gstart},1,{gcount}"),
        ),
        &cache,
        &["--input", rec.to_str().unwrap()],
    );
    let r = ok_record(&o);
    assert_eq!(r["ownership"], "keep");
    let ours = snapshot(&rootfs_of(&r));
    let me = uid_of(UNPRIV_SUB);
    let host_uid = |id: u32| if id == 0 { me } else { ustart + id - 1 };
    let host_gid = |id: u32| if id == 0 { me } else { gstart + id - 1 };
    assert_eq!(
        (ours["/home/u/secret"].uid, ours["/home/u/secret"].gid),
        (host_uid(1000), host_gid(1000))
    );
    assert_eq!(
        (ours["/etc/shadow"].uid, ours["/etc/shadow"].gid),
        (me, host_gid(42))
    );
    assert_eq!(
        (ours["/fifo"].uid, ours["/link"].uid),
        (host_uid(7), host_uid(1000))
    );
    assert_eq!(ours["/"].uid, me);
    assert_eq!(ours["/usr-suid"].mode, 0o4755);
    assert!(
        !ours.contains_key("/null"),
        "no device nodes inside a user namespace"
    );
    assert!(
        ours["/home/u/secret"].xattrs.is_empty(),
        "no rootless xattr when owners are kept"
    );
}

#[test]
fn root_in_a_single_id_namespace_flattens() {
    require_root();
    let t = scratch("singleid");
    let rec = image(t.path(), &layers());
    let cache = user_cache(t.path(), UNPRIV_NOSUB);
    let r = ok_record(&run(
        &As::UserUserns(UNPRIV_NOSUB, String::new()),
        &cache,
        &["--input", rec.to_str().unwrap()],
    ));
    assert_eq!(r["ownership"], "flatten");
    let ours = snapshot(&rootfs_of(&r));
    let me = uid_of(UNPRIV_NOSUB);
    assert!(ours.values().all(|i| i.uid == me && i.gid == me));
    assert!(
        ours["/home/u/secret"]
            .xattrs
            .contains_key("user.rootlesscontainers")
    );
    assert!(!ours["/etc/shadow"].xattrs.is_empty(), "gid 42 recorded");
    assert!(!ours.contains_key("/etc/passwd"), "whited out");
}

#[test]
fn keep_is_refused_where_it_cannot_work() {
    require_root();
    let t = scratch("keepref");
    let rec = image(t.path(), &layers());
    let cache = user_cache(t.path(), UNPRIV_NOSUB);
    let o = run(
        &As::User(UNPRIV_NOSUB),
        &cache,
        &["--input", rec.to_str().unwrap(), "--ownership", "keep"],
    );
    assert_fatal(&o, "--ownership keep needs root");
}

/// `START, COUNT` of `user`'s line in a subordinate-ID file.
fn subid_range(file: &str, user: &str) -> (u32, u32) {
    let s = std::fs::read_to_string(file).unwrap();
    s.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 3 && f[0] == user).then(|| (f[1].parse().unwrap(), f[2].parse().unwrap()))
        })
        .unwrap_or_else(|| panic!("{user} has no {file} range (scripts/setup adds it)"))
}
