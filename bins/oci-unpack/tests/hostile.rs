//! Hostile layers: every one of them must leave everything outside the target untouched.
//! Each case is either refused (FATAL, exit 255, no partial tree left) or neutralised (the
//! entry lands inside the target); which one is asserted per case. A canary directory beside
//! the target, and the whole scratch directory around it, are snapshotted before and after,
//! and the absolute host paths the layers aim at must not appear.

mod support;
use std::path::Path;
use support::tarw::*;
use support::*;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Outcome {
    Refused,
    Neutralised,
}
use Outcome::*;

struct Case {
    name: &'static str,
    layers: Vec<Vec<Ent>>,
    outcome: Outcome,
    /// Host paths that must not exist afterwards.
    never: Vec<String>,
}

fn cases(sandbox: &Path) -> Vec<Case> {
    let canary = sandbox.join("canary");
    let c = canary.display().to_string();
    let cf = format!("{c}/file");
    let pwn = format!("/tmp/oci-unpack-pwned-{}", std::process::id());
    let up = "../".repeat(12);
    let case = |name, layers, outcome| Case {
        name,
        layers,
        outcome,
        never: vec![pwn.clone()],
    };
    vec![
        case("dotdot-file", vec![vec![file("../escape", b"x")]], Refused),
        case(
            "dotdot-inside",
            vec![vec![dir("a"), file("a/../../escape", b"x")]],
            Refused,
        ),
        case(
            "dotdot-pax-path",
            vec![vec![file(
                &format!("{}{}", "d/".repeat(60), "../".repeat(70)),
                b"x",
            )]],
            Refused,
        ),
        case(
            "absolute-file",
            vec![vec![file(&format!("{pwn}/abs"), b"x")]],
            Neutralised,
        ),
        case(
            "absolute-into-canary",
            vec![vec![file(&format!("{c}/file"), b"overwritten?")]],
            Neutralised,
        ),
        case(
            "symlink-up-then-write",
            vec![vec![
                symlink("evil", &format!("{up}{}", c.trim_start_matches('/'))),
                file("evil/pwned", b"x"),
            ]],
            Refused,
        ),
        case(
            "symlink-abs-then-write",
            vec![vec![symlink("evil", &c), file("evil/pwned", b"x")]],
            Refused,
        ),
        case(
            "symlink-abs-then-mkdir",
            vec![vec![
                symlink("evil", &c),
                dir("evil/sub2"),
                file("evil/sub2/f", b"x"),
            ]],
            Refused,
        ),
        case(
            "symlink-root-then-write",
            vec![vec![
                symlink("evil", "/"),
                dir("evil/tmp"),
                file(&format!("evil{pwn}"), b"x"),
            ]],
            Neutralised,
        ),
        case(
            "symlink-to-canary-file-then-overwrite",
            vec![vec![
                symlink("evil", &cf),
                file("evil", b"overwritten?").mode(0o4777),
            ]],
            Neutralised,
        ),
        case(
            "symlink-then-dir-over-it",
            vec![
                vec![symlink("evil", &c)],
                vec![dir("evil").mode(0o777).owner(1234, 1234)],
            ],
            Neutralised,
        ),
        case(
            "symlink-in-lower-then-write-in-upper",
            vec![
                vec![symlink(
                    "evil",
                    &format!("{up}{}", c.trim_start_matches('/')),
                )],
                vec![file("evil/pwned", b"x")],
            ],
            Refused,
        ),
        case(
            "hardlink-dotdot",
            vec![vec![hardlink("h", "../canary/file")]],
            Refused,
        ),
        case(
            "hardlink-absolute-outside",
            vec![vec![hardlink("h", &cf)]],
            Refused,
        ),
        case(
            "hardlink-through-symlink",
            vec![vec![symlink("evil", &c), hardlink("h", "evil/file")]],
            Refused,
        ),
        case(
            "hardlink-to-symlink-to-outside",
            vec![vec![
                symlink("evil", &cf),
                hardlink("h", "evil"),
                file("h", b"rewrite?"),
            ]],
            Neutralised,
        ),
        case(
            "hardlink-to-dir",
            vec![vec![dir("d"), hardlink("h", "d")]],
            Refused,
        ),
        case(
            "whiteout-dotdot",
            vec![vec![dir("a"), file("a/.wh...", b"")]],
            Refused,
        ),
        case("whiteout-dot", vec![vec![file(".wh..", b"")]], Refused),
        case("whiteout-empty", vec![vec![file(".wh.", b"")]], Refused),
        case(
            "whiteout-through-symlink",
            vec![vec![symlink("evil", &c)], vec![whiteout("evil", "file")]],
            Neutralised,
        ),
        case(
            "opaque-through-symlink",
            vec![vec![symlink("evil", &c)], vec![opaque("evil")]],
            Refused,
        ),
        case(
            "opaque-through-dotdot-symlink",
            vec![vec![symlink("evil", &up)], vec![opaque("evil")]],
            Neutralised,
        ),
        case(
            "too-deep",
            vec![vec![file(&"d/".repeat(300).to_string().add("f"), b"x")]],
            Refused,
        ),
        case(
            "name-too-long",
            vec![vec![file(&"n".repeat(300), b"x")]],
            Refused,
        ),
        case(
            "symlink-loop",
            vec![vec![
                symlink("a", "b"),
                symlink("b", "a"),
                file("a/x", b"x"),
            ]],
            Refused,
        ),
        case("root-as-file", vec![vec![file("./", b"x")]], Refused),
        case(
            "proc-magic-link",
            vec![vec![
                symlink("evil", "/proc/self/root"),
                file("evil/pwned", b"x"),
            ]],
            Refused,
        ),
        case(
            "newline-and-control-names",
            vec![vec![
                file("we\nird\x01\x7f name", b"x"),
                symlink("l\n", "../\n"),
            ]],
            Neutralised,
        ),
    ]
}

trait Add {
    fn add(self, s: &str) -> String;
}
impl Add for String {
    fn add(mut self, s: &str) -> String {
        self.push_str(s);
        self
    }
}

fn setup_canary(sandbox: &Path) {
    let c = sandbox.join("canary");
    std::fs::create_dir_all(c.join("sub")).unwrap();
    std::fs::write(c.join("file"), b"canary\n").unwrap();
    std::fs::write(c.join("sub/inner"), b"inner\n").unwrap();
}

fn check_all(who: As, user: Option<&str>) {
    require_root();
    let mut failures = vec![];
    let t = scratch("hostile");
    let n = cases(&t.path().join("probe")).len();
    assert!(n >= 20, "at least 20 hostile layers ({n})");
    for i in 0..n {
        let sandbox = t.path().join(format!("case{i}"));
        std::fs::create_dir(&sandbox).unwrap();
        setup_canary(&sandbox);
        let case = cases(&sandbox).remove(i);
        let layers: Vec<(Vec<Ent>, Comp)> = case
            .layers
            .iter()
            .map(|l| (l.clone(), Comp::Gzip))
            .collect();
        let img = sandbox.join("img");
        std::fs::create_dir(&img).unwrap();
        let rec = image(&img, &layers);
        let bundle = sandbox.join("bundle");
        let cache = sandbox.join("cache");
        std::fs::create_dir(&bundle).unwrap();
        std::fs::create_dir(&cache).unwrap();
        if let Some(u) = user {
            let id = uid_of(u);
            for d in [&sandbox, &bundle, &cache] {
                std::os::unix::fs::chown(d, Some(id), Some(id)).unwrap();
            }
        }
        let before = snapshot(&sandbox);
        let o = run(
            &who,
            &cache,
            &[
                "--input",
                rec.to_str().unwrap(),
                "--bundle",
                bundle.to_str().unwrap(),
            ],
        );
        let got = if o.status.success() {
            Neutralised
        } else {
            Refused
        };
        if got != case.outcome {
            failures.push(format!(
                "{}: expected {:?}, got {:?}: {}",
                case.name,
                case.outcome,
                got,
                stderr(&o)
            ));
        }
        if got == Refused {
            if o.status.code() != Some(255)
                || stderr(&o).lines().count() != 1
                || !stderr(&o).starts_with("FATAL: oci-unpack: ")
            {
                failures.push(format!(
                    "{}: not one FATAL line / 255: {:?} {}",
                    case.name,
                    o.status,
                    stderr(&o)
                ));
            }
            let left: Vec<_> = std::fs::read_dir(&bundle).unwrap().collect();
            if !left.is_empty() {
                failures.push(format!(
                    "{}: partial tree left in the bundle: {left:?}",
                    case.name
                ));
            }
        }
        // Everything outside the bundle is as it was.
        let mut after = snapshot(&sandbox);
        after.retain(|k, _| !k.starts_with("/bundle/") && !k.starts_with("/cache/"));
        let mut before = before;
        before.retain(|k, _| !k.starts_with("/bundle/") && !k.starts_with("/cache/"));
        for k in ["/bundle", "/cache", "/"] {
            after.remove(k);
            before.remove(k);
        }
        let d = diff(&after, &before, false);
        if !d.is_empty() {
            failures.push(format!(
                "{}: changed outside the target:\n{}",
                case.name,
                d.join("\n")
            ));
        }
        for p in &case.never {
            if Path::new(p).exists() {
                failures.push(format!("{}: created {p} on the host", case.name));
                let _ = std::fs::remove_dir_all(p);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn nothing_escapes_as_root() {
    check_all(As::Root, None);
}

#[test]
fn nothing_escapes_unprivileged() {
    check_all(As::User(UNPRIV_NOSUB), Some(UNPRIV_NOSUB));
}
