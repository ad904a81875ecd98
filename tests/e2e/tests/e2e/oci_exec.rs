//! `oci exec` runs the command as the container's own process would run: its user, working
//! directory and environment, with crun as with runc (crun's plain `exec` flags start from uid 0
//! in `/` with an empty environment).

use crate::runtime_support as support;

use e2e::{Profile, matrix_with};
use std::time::Duration;
use support::*;

#[test]
fn exec_honours_the_image_user_cwd_and_env() {
    for ctx in matrix_with(&[Profile::Root, Profile::User]) {
        let b = bundle_of(
            &ctx,
            "user",
            "b",
            &["--env", "GREETING=hi"],
            &["sh", "-c", "echo started; while :; do sleep 1; done"],
        );
        let bs = b.display().to_string();
        let id = &unique_id("execuser");
        let id = id.as_str();
        chain(&ctx, &b, &["create", "--bundle", &bs, id]).assert_success();
        shim(&ctx, &["start", id]).assert_success();
        let sd = state_dir(&ctx, id);
        assert!(wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(sd.join("container.log")).is_ok_and(|s| s.contains("started"))
        }));
        shim(
            &ctx,
            &[
                "exec",
                id,
                "sh",
                "-c",
                "id -u; id -g; pwd; echo \"$GREETING\"",
            ],
        )
        .assert_success()
        .assert_stdout_eq("2000\n2000\n/home/testuser\nhi");
        // The caller's --env and --cwd still apply on top.
        shim(
            &ctx,
            &[
                "exec",
                "--env",
                "GREETING=yo",
                "--cwd",
                "/tmp",
                id,
                "sh",
                "-c",
                "id -u; pwd; echo \"$GREETING\"; echo \"$PATH\"",
            ],
        )
        .assert_success()
        .assert_stdout_contains("2000\n/tmp\nyo\n/");
        shim(&ctx, &["kill", id, "KILL"]).assert_success();
        assert!(wait_until(Duration::from_secs(10), || status(&ctx, id) == "stopped"));
        shim(&ctx, &["delete", id]).assert_success();
        std::fs::remove_dir_all(&b).unwrap();
        ctx.assert_no_leftovers();
    }
}
