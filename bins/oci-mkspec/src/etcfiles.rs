//! The generated `/etc/passwd`, `/etc/group` and `/etc/resolv.conf`: the image's files with the
//! caller's user and group added, and the host's name servers, as SingularityCE writes them.

use anyhow::{Result, bail};
use common::identity::{PasswdEntry, parse_passwd_line};
use std::net::IpAddr;

/// Find a user in a passwd file's text: a number by uid, anything else by name.
pub fn find_user(passwd: &str, user: &str) -> Option<PasswdEntry> {
    let by_uid = user.parse::<u32>().ok();
    passwd
        .lines()
        .filter_map(parse_passwd_line)
        .find(|e| match by_uid {
            Some(uid) => e.uid == uid,
            None => e.name == user,
        })
}

/// The container's passwd with the process user's line replaced or appended.
/// `host` is the host's entry for the process uid; `home` is the home destination. The container's
/// shell is kept when the container already has that uid.
pub fn passwd(container: &str, host: &PasswdEntry, home: &str) -> String {
    let mut out = String::new();
    let mut shell = host.shell.clone();
    let mut replaced = false;
    let mut lines: Vec<String> = Vec::new();
    for line in container.lines() {
        match parse_passwd_line(line) {
            Some(e) if e.uid == host.uid && !replaced => {
                if !e.shell.is_empty() {
                    shell = e.shell.clone();
                }
                replaced = true;
                lines.push(String::new()); // placeholder, filled below
            }
            _ => lines.push(line.to_string()),
        }
    }
    let entry = format!(
        "{}:x:{}:{}:{}:{}:{}",
        host.name, host.uid, host.gid, host.gecos, home, shell
    );
    if replaced {
        for l in lines {
            out.push_str(if l.is_empty() { &entry } else { &l });
            out.push('\n');
        }
    } else {
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
        out.push_str(&entry);
        out.push('\n');
    }
    out
}

/// The container's group file plus `<grname>:x:<gid>:<username>` for the process gid. Beyond
/// Singularity: when the container already has that gid, the user is added to its member list
/// instead of appending a second line for the same gid.
pub fn group(container: &str, gid: u32, group_name: &str, user_name: &str) -> String {
    let mut out = String::new();
    let mut merged = false;
    for l in container.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if !merged && f.len() == 4 && f[2].parse::<u32>().ok() == Some(gid) {
            merged = true;
            let mut members: Vec<&str> = f[3].split(',').filter(|m| !m.is_empty()).collect();
            if !user_name.is_empty() && !members.contains(&user_name) {
                members.push(user_name);
            }
            out.push_str(&format!(
                "{}:{}:{}:{}\n",
                f[0],
                f[1],
                f[2],
                members.join(",")
            ));
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    if !merged {
        out.push_str(&format!("{group_name}:x:{gid}:{user_name}\n"));
    }
    out
}

/// Parse `--dns` (comma separated, spaces stripped) into addresses.
pub fn parse_dns(dns: &str) -> Result<Vec<IpAddr>> {
    dns.split(',')
        .map(|s| s.replace(' ', ""))
        .filter(|s| !s.is_empty())
        .map(|s| match s.parse::<IpAddr>() {
            Ok(ip) => Ok(ip),
            Err(_) => bail!("DNS nameserver {s} is not a valid IP address"),
        })
        .collect()
}

/// `nameserver` lines for `--dns`, else a copy of the host's resolv.conf.
pub fn resolv_conf(dns: &[IpAddr], host: &[u8]) -> Vec<u8> {
    if dns.is_empty() {
        return host.to_vec();
    }
    dns.iter()
        .map(|ip| format!("nameserver {ip}\n"))
        .collect::<String>()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> PasswdEntry {
        PasswdEntry {
            name: "alice".into(),
            uid: 1000,
            gid: 1000,
            gecos: "Alice".into(),
            home: "/home/alice".into(),
            shell: "/bin/bash".into(),
        }
    }

    #[test]
    fn appends_with_host_shell() {
        let p = passwd("root:x:0:0:root:/root:/bin/ash\n", &host(), "/home/alice");
        assert_eq!(
            p,
            "root:x:0:0:root:/root:/bin/ash\nalice:x:1000:1000:Alice:/home/alice:/bin/bash\n"
        );
    }

    #[test]
    fn replaces_keeping_container_shell() {
        let root = PasswdEntry {
            name: "root".into(),
            uid: 0,
            gid: 0,
            gecos: "root".into(),
            home: "/root".into(),
            shell: "/bin/bash".into(),
        };
        let p = passwd(
            "root:x:0:0:root:/root:/bin/ash\nbin:x:1:1::/:/sbin/nologin\n",
            &root,
            "/root",
        );
        assert_eq!(
            p,
            "root:x:0:0:root:/root:/bin/ash\nbin:x:1:1::/:/sbin/nologin\n"
        );
    }

    #[test]
    fn group_line() {
        assert_eq!(
            group("root:x:0:\n", 1000, "alice", "alice"),
            "root:x:0:\nalice:x:1000:alice\n"
        );
        assert_eq!(
            group("root:x:0:\nwheel:x:10:bob\n", 10, "w", "alice"),
            "root:x:0:\nwheel:x:10:bob,alice\n"
        );
        assert_eq!(group("root:x:0:\n", 0, "root", "root"), "root:x:0:root\n");
    }

    #[test]
    fn find_by_name_or_uid() {
        let f = "root:x:0:0::/root:/bin/sh\ntestuser:x:2000:2000::/home/testuser:/bin/sh\n";
        assert_eq!(find_user(f, "testuser").unwrap().uid, 2000);
        assert_eq!(find_user(f, "2000").unwrap().name, "testuser");
        assert!(find_user(f, "nobody").is_none());
    }

    #[test]
    fn dns() {
        let d = parse_dns("8.8.8.8, 8.8.4.4").unwrap();
        assert_eq!(
            resolv_conf(&d, b"host"),
            b"nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        assert_eq!(resolv_conf(&[], b"host"), b"host");
        let e = parse_dns("1.1.1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "DNS nameserver 1.1.1 is not a valid IP address"
        );
    }
}
