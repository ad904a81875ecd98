//! Detach keys: the Docker syntax (`ctrl-p,ctrl-q`) and a matcher that finds the sequence
//! anywhere in the input stream, however it is split into reads.
//!
//! SingularityCE only noticed the keys when each arrived in a read of its own; in raw mode a
//! paste or a fast typist puts several bytes in one read, so the matcher works byte by byte and
//! holds back a partial match until the next byte decides it.

use anyhow::{Result, bail};

pub const DEFAULT_KEYS: &str = "ctrl-p,ctrl-q";

/// Parse `ctrl-<c>` or single-character keys separated by commas. An empty string disables
/// detaching.
pub fn parse(spec: &str) -> Result<Vec<u8>> {
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys = Vec::new();
    for tok in spec.split(',') {
        let b = if let Some(c) = tok.strip_prefix("ctrl-") {
            match c.as_bytes() {
                [x @ b'a'..=b'z'] => x - b'a' + 1,
                [x @ b'A'..=b'Z'] => x - b'A' + 1,
                [b'@'] => 0,
                [b'['] => 27,
                [b'\\'] => 28,
                [b']'] => 29,
                [b'^'] => 30,
                [b'_'] => 31,
                _ => bail!(
                    "invalid detach key '{tok}' (use ctrl-a..ctrl-z, ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_ or one character)"
                ),
            }
        } else {
            match tok.as_bytes() {
                [x] if x.is_ascii() => *x,
                _ => bail!(
                    "invalid detach key '{tok}' (use ctrl-<key> or one ASCII character, separated by commas)"
                ),
            }
        };
        keys.push(b);
    }
    Ok(keys)
}

/// Finds the detach sequence in a stream of input chunks.
pub struct Matcher {
    keys: Vec<u8>,
    held: Vec<u8>,
}

/// What to do with one chunk of input.
#[derive(Debug, PartialEq, Eq)]
pub struct Filtered {
    /// Bytes to forward to the container (everything before the sequence).
    pub forward: Vec<u8>,
    /// The whole sequence was seen: detach after forwarding.
    pub detach: bool,
}

impl Matcher {
    pub fn new(keys: Vec<u8>) -> Matcher {
        Matcher {
            keys,
            held: Vec::new(),
        }
    }

    pub fn feed(&mut self, input: &[u8]) -> Filtered {
        let mut forward = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            forward.extend_from_slice(input);
            return Filtered {
                forward,
                detach: false,
            };
        }
        let mut pending: std::collections::VecDeque<u8> = input.iter().copied().collect();
        while let Some(b) = pending.pop_front() {
            if b == self.keys[self.held.len()] {
                self.held.push(b);
                if self.held.len() == self.keys.len() {
                    self.held.clear();
                    return Filtered {
                        forward,
                        detach: true,
                    };
                }
            } else if self.held.is_empty() {
                forward.push(b);
            } else {
                // The held prefix was not the sequence after all: its first byte is plain input,
                // and the rest (plus this byte) may still start a match.
                let held = std::mem::take(&mut self.held);
                forward.push(held[0]);
                pending.push_front(b);
                for &h in held[1..].iter().rev() {
                    pending.push_front(h);
                }
            }
        }
        Filtered {
            forward,
            detach: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> Matcher {
        Matcher::new(parse(DEFAULT_KEYS).unwrap())
    }

    #[test]
    fn parses_docker_syntax() {
        assert_eq!(parse("ctrl-p,ctrl-q").unwrap(), vec![0x10, 0x11]);
        assert_eq!(parse("ctrl-a,x,ctrl-@").unwrap(), vec![1, b'x', 0]);
        assert_eq!(parse("").unwrap(), Vec::<u8>::new());
        assert!(parse("ctrl-").is_err());
        assert!(parse("ctrl-pp").is_err());
        assert!(parse("ab").is_err());
    }

    #[test]
    fn whole_sequence_in_one_read_after_text() {
        let f = m().feed(b"ls\r\x10\x11more");
        assert_eq!(f.forward, b"ls\r");
        assert!(f.detach);
    }

    #[test]
    fn sequence_split_across_reads() {
        let mut x = m();
        let a = x.feed(b"a\x10");
        assert_eq!((a.forward.as_slice(), a.detach), (&b"a"[..], false));
        let b = x.feed(b"\x11");
        assert_eq!((b.forward.as_slice(), b.detach), (&b""[..], true));
    }

    #[test]
    fn partial_match_is_forwarded_when_broken() {
        let mut x = m();
        let f = x.feed(b"\x10z");
        assert_eq!(f.forward, b"\x10z");
        assert!(!f.detach);
        // ctrl-p ctrl-p ctrl-q: the first ctrl-p is plain input, the rest detaches.
        let g = m().feed(b"\x10\x10\x11");
        assert_eq!(g.forward, b"\x10");
        assert!(g.detach);
    }

    #[test]
    fn overlapping_prefix_keys() {
        let mut x = Matcher::new(parse("a,a,b").unwrap());
        let f = x.feed(b"aaab");
        assert_eq!(f.forward, b"a");
        assert!(f.detach);
    }

    #[test]
    fn disabled_forwards_everything() {
        let f = Matcher::new(Vec::new()).feed(b"\x10\x11");
        assert_eq!(f.forward, b"\x10\x11");
        assert!(!f.detach);
    }
}
