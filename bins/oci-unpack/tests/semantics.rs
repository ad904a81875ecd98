//! Layer semantics, checked against `umoci unpack` of the same image and against explicit
//! expectations: whiteouts (file, directory, opaque before and after its new siblings, on a
//! directory no lower layer has), hardlinks (same layer, onto a lower layer's file, a group
//! member whited out), symlinks (absolute, relative, dangling), replacements (dir <-> file),
//! FIFOs, device nodes, xattrs, owners, setuid/setgid, modes, mtimes and read-only directories
//! written into by a later layer.

mod support;
use support::tarw::*;
use support::*;

/// `cap_net_raw+ep` as a VFS_CAP_REVISION_2 xattr (magic|effective, permitted bit 13).
const CAP_NET_RAW: &[u8] = &[
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn lower() -> Vec<Ent> {
    vec![
        dir("etc"),
        file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        dir("usr").mtime(1_600_000_000),
        dir("usr/bin"),
        dir("usr/lib"),
        file("usr/lib/libc.so", b"ELF"),
        file("usr/bin/tool", b"#!/bin/sh\necho tool\n").mode(0o755),
        hardlink("usr/bin/tool2", "usr/bin/tool"),
        file("usr/bin/suid", b"suid").mode(0o4755),
        dir("usr/share").mode(0o2775).owner(0, 50),
        symlink("lib", "/usr/lib"),
        dir("data"),
        dir("data/opq"),
        file("data/opq/old1", b"old1"),
        dir("data/opq/oldsub"),
        file("data/opq/oldsub/x", b"x"),
        dir("data/gone"),
        file("data/gone/child", b"c"),
        file("data/file-to-dir", b"f"),
        dir("data/dir-to-file"),
        file("data/dir-to-file/child", b"c"),
        file("data/whiteme", b"w"),
        file("data/lowerfile", b"lower"),
        file("data/owned", b"o")
            .owner(1000, 1000)
            .mtime(1_500_000_000),
        file("data/xattr", b"x").xattr("user.test", b"hello"),
        file("data/ping", b"ping")
            .mode(0o755)
            .xattr("security.capability", CAP_NET_RAW),
        symlink("data/abs", "/etc/passwd"),
        symlink("data/rel", "../etc"),
        symlink("data/dangling", "/nonexistent/thing"),
        fifo("data/fifo"),
        chardev("data/null", 1, 3),
        file(&format!("data/{}", "long-name-".repeat(15)), b"long"),
        dir("ro").mode(0o555),
        file("ro/f", b"f").mode(0o444),
    ]
}

fn middle() -> Vec<Ent> {
    vec![
        dir("data"),
        dir("data/opq"),
        file("data/opq/new1", b"n1"),
        opaque("data/opq"),
        file("data/opq/new2", b"n2"),
        whiteout("data", "gone"),
        whiteout("data", "whiteme"),
        dir("data/file-to-dir"),
        file("data/file-to-dir/child", b"now a dir"),
        file("data/dir-to-file", b"now a file"),
        hardlink("data/uplink", "data/lowerfile"),
        dir("ro").mode(0o555),
        file("ro/newfile", b"written into a 0555 dir"),
        file(
            "etc/passwd",
            b"root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home:/bin/sh\n",
        ),
        file("lib/added-through-symlink", b"via /lib -> /usr/lib"),
    ]
}

fn upper() -> Vec<Ent> {
    vec![
        whiteout("usr/bin", "tool2"),
        whiteout("data", "rel"),
        file("data/fresh/a", b"a"),
        opaque("data/fresh"),
        file("data/whiteme", b"reborn"),
    ]
}

#[test]
fn matches_umoci_and_the_image_spec_as_root() {
    require_root();
    let t = scratch("semantics");
    // umoci 0.4 reads only gzip and plain layers; zstd is covered below against a gzip twin.
    let rec = image(
        t.path(),
        &[
            (lower(), Comp::Gzip),
            (middle(), Comp::Gzip),
            (upper(), Comp::None),
        ],
    );
    let cache = t.path().join("cache");
    let bundle = t.path().join("ours");
    let r = ok_record(&run(
        &As::Root,
        &cache,
        &[
            "--input",
            rec.to_str().unwrap(),
            "--bundle",
            bundle.to_str().unwrap(),
        ],
    ));
    assert_eq!(r["ownership"], "keep");
    assert_eq!(r["readOnly"], false);
    let ours = snapshot(&rootfs_of(&r));
    let theirs = snapshot(&umoci_unpack(
        &t.path().join("layout"),
        &t.path().join("umoci"),
        None,
    ));
    // Directory mtimes: the last layer that lists a directory sets it, whereas umoci leaves
    // the time of a later layer's changes inside it. Checked explicitly below instead.
    let d = diff(&ours, &theirs, true);
    assert!(d.is_empty(), "differences from umoci:\n{}", d.join("\n"));

    // And explicitly, so a shared mistake cannot hide:
    let get = |p: &str| ours.get(p).unwrap_or_else(|| panic!("{p} missing"));
    for gone in [
        "/data/gone",
        "/data/opq/old1",
        "/data/opq/oldsub",
        "/data/rel",
        "/usr/bin/tool2",
        "/data/fresh/.wh..wh..opq",
        "/data/.wh.gone",
    ] {
        assert!(!ours.contains_key(gone), "{gone} should be gone");
    }
    for present in [
        "/data/opq/new1",
        "/data/opq/new2",
        "/data/fresh/a",
        "/ro/newfile",
    ] {
        assert!(ours.contains_key(present), "{present} should exist");
    }
    assert_eq!(get("/data/file-to-dir").kind, 'd');
    assert_eq!(get("/data/dir-to-file").kind, 'f');
    assert_eq!(
        get("/data/uplink").link_group,
        get("/data/lowerfile").link_group
    );
    assert!(get("/data/uplink").link_group.is_some());
    assert_eq!(
        get("/usr/bin/tool").link_group,
        None,
        "its only other link was whited out"
    );
    assert_eq!(get("/usr/bin/suid").mode, 0o4755);
    assert_eq!(
        (get("/usr/share").mode, get("/usr/share").gid),
        (0o2775, 50)
    );
    assert_eq!(
        (get("/data/owned").uid, mtime(get("/data/owned"))),
        (1000, 1_500_000_000)
    );
    assert_eq!(
        get("/data/xattr").xattrs.get("user.test").unwrap(),
        b"hello"
    );
    assert_eq!(get("/ro").mode, 0o555);
    assert_eq!(
        mtime(get("/usr")),
        1_600_000_000,
        "dir mtime fixed after its contents"
    );
    assert_eq!(get("/data/fifo").kind, 'p');
    assert_eq!(
        (get("/data/null").kind, get("/data/null").rdev),
        ('c', rustix::fs::makedev(1, 3))
    );
    assert_eq!(get("/data/abs").target.as_deref(), Some("/etc/passwd"));
    assert!(ours.contains_key("/usr/lib/added-through-symlink"));
    assert_eq!(get("/lib").kind, 'l');
}

#[test]
fn zstd_gzip_and_plain_layers_give_the_same_tree() {
    require_root();
    let mut trees = vec![];
    for comp in [Comp::Gzip, Comp::Zstd, Comp::None] {
        let t = scratch("comp");
        let rec = image(
            t.path(),
            &[(lower(), comp), (middle(), comp), (upper(), comp)],
        );
        let b = t.path().join("b");
        let r = ok_record(&run(
            &As::Root,
            &t.path().join("cache"),
            &[
                "--input",
                rec.to_str().unwrap(),
                "--bundle",
                b.to_str().unwrap(),
            ],
        ));
        trees.push(snapshot(&rootfs_of(&r)));
    }
    // Directories no layer lists (the root, /data/fresh) get the time they were made, like
    // umoci's; listed directories' mtimes are checked in the test above.
    for (i, name) in [(1, "zstd"), (2, "plain")] {
        let d = diff(&trees[0], &trees[i], true);
        assert!(d.is_empty(), "gzip vs {name}:\n{}", d.join("\n"));
    }
}

#[test]
fn xattrs_on_special_files_are_set_without_opening_them() {
    require_root();
    let t = scratch("specialx");
    let rec = image(
        t.path(),
        &[(
            vec![
                // 10:130 is the watchdog: opening it would arm it. Its xattr must still land.
                chardev("watchdog", 10, 130).xattr("trusted.note", b"dev"),
                fifo("fifo").xattr("trusted.note", b"fifo"),
            ],
            Comp::Gzip,
        )],
    );
    let b = t.path().join("b");
    let r = ok_record(&run(
        &As::Root,
        &t.path().join("cache"),
        &[
            "--input",
            rec.to_str().unwrap(),
            "--bundle",
            b.to_str().unwrap(),
        ],
    ));
    let s = snapshot(&rootfs_of(&r));
    assert_eq!(s["/watchdog"].xattrs["trusted.note"], b"dev");
    assert_eq!(s["/fifo"].xattrs["trusted.note"], b"fifo");
}
