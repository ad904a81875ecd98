//! A raw tar writer for tests: it writes whatever names, link targets and types it is told,
//! including the hostile ones a safe writer (the `tar` crate's Builder) refuses to produce.

/// One entry of a test layer.
#[derive(Clone, Debug)]
pub struct Ent {
    pub name: Vec<u8>,
    pub kind: u8,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub dev: (u32, u32),
    pub pax: Vec<(String, Vec<u8>)>,
    /// Lie about the size in the header (for truncation tests); `None` = data length.
    pub size_override: Option<u64>,
}

pub const MTIME: u64 = 1_700_000_000;

fn base(name: &[u8], kind: u8, mode: u32) -> Ent {
    Ent {
        name: name.to_vec(),
        kind,
        data: vec![],
        link: vec![],
        mode,
        uid: 0,
        gid: 0,
        mtime: MTIME,
        dev: (0, 0),
        pax: vec![],
        size_override: None,
    }
}

pub fn file(name: &str, data: &[u8]) -> Ent {
    let mut e = base(name.as_bytes(), b'0', 0o644);
    e.data = data.to_vec();
    e
}
pub fn file_b(name: &[u8], data: &[u8]) -> Ent {
    let mut e = base(name, b'0', 0o644);
    e.data = data.to_vec();
    e
}
pub fn dir(name: &str) -> Ent {
    base(name.as_bytes(), b'5', 0o755)
}
pub fn symlink(name: &str, target: &str) -> Ent {
    let mut e = base(name.as_bytes(), b'2', 0o777);
    e.link = target.as_bytes().to_vec();
    e
}
pub fn hardlink(name: &str, target: &str) -> Ent {
    let mut e = base(name.as_bytes(), b'1', 0o644);
    e.link = target.as_bytes().to_vec();
    e
}
pub fn fifo(name: &str) -> Ent {
    base(name.as_bytes(), b'6', 0o644)
}
pub fn chardev(name: &str, major: u32, minor: u32) -> Ent {
    let mut e = base(name.as_bytes(), b'3', 0o666);
    e.dev = (major, minor);
    e
}
pub fn whiteout(dir: &str, name: &str) -> Ent {
    let p = if dir.is_empty() {
        format!(".wh.{name}")
    } else {
        format!("{dir}/.wh.{name}")
    };
    file(&p, b"")
}
pub fn opaque(dir: &str) -> Ent {
    file(&format!("{dir}/.wh..wh..opq"), b"")
}

impl Ent {
    pub fn mode(mut self, m: u32) -> Ent {
        self.mode = m;
        self
    }
    pub fn owner(mut self, uid: u32, gid: u32) -> Ent {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn mtime(mut self, t: u64) -> Ent {
        self.mtime = t;
        self
    }
    pub fn xattr(mut self, k: &str, v: &[u8]) -> Ent {
        self.pax.push((format!("SCHILY.xattr.{k}"), v.to_vec()));
        self
    }
    pub fn size_override(mut self, s: u64) -> Ent {
        self.size_override = Some(s);
        self
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}", v, w = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
    field[s.len()] = 0;
}

fn header(name: &[u8], kind: u8, size: u64, e: &Ent, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], e.mode as u64);
    octal(&mut h[108..116], e.uid as u64);
    octal(&mut h[116..124], e.gid as u64);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], e.mtime);
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], e.dev.0 as u64);
    octal(&mut h[337..345], e.dev.1 as u64);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    let r = out.len() % 512;
    if r != 0 {
        out.resize(out.len() + 512 - r, 0);
    }
}

fn pax_record(k: &str, v: &[u8]) -> Vec<u8> {
    let body_len = k.len() + v.len() + 3; // ' ' '=' '\n'
    let mut n = body_len + 1;
    loop {
        let total = body_len + n.to_string().len();
        if total == n {
            break;
        }
        n = total;
    }
    let mut r = format!("{n} {k}=").into_bytes();
    r.extend_from_slice(v);
    r.push(b'\n');
    r
}

/// Serialise entries into a tar stream (PAX headers for long names and xattrs), with the
/// end-of-archive marker unless `end` is false.
pub fn tar(entries: &[Ent], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut pax: Vec<u8> = Vec::new();
        if e.name.len() > 100 {
            pax.extend(pax_record("path", &e.name));
        }
        if e.link.len() > 100 {
            pax.extend(pax_record("linkpath", &e.link));
        }
        for (k, v) in &e.pax {
            pax.extend(pax_record(k, v));
        }
        if !pax.is_empty() {
            let h = header(b"PaxHeaders/x", b'x', pax.len() as u64, e, b"");
            out.extend_from_slice(&h);
            out.extend_from_slice(&pax);
            pad(&mut out);
        }
        let size = e.size_override.unwrap_or(e.data.len() as u64);
        out.extend_from_slice(&header(&e.name, e.kind, size, e, &e.link));
        out.extend_from_slice(&e.data);
        pad(&mut out);
    }
    if end {
        out.extend_from_slice(&[0u8; 1024]);
    }
    out
}
