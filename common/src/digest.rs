//! Content digests (`sha256:<hex>`) and hashing while streaming.

use anyhow::{Result, bail};
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

/// A validated `algorithm:hex` digest. Only sha256 is accepted: it is what every registry and
/// layout in use produces, and refusing others keeps the cache paths predictable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Digest> {
        let Some(hex) = s.strip_prefix("sha256:") else {
            match s.split_once(':') {
                Some((alg, _)) => bail!("unsupported digest algorithm '{alg}' in '{s}'"),
                None => bail!("malformed digest '{s}' (expected sha256:<64 hex digits>)"),
            }
        };
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            bail!("malformed digest '{s}' (expected sha256:<64 lowercase hex digits>)");
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Digest of a byte slice.
    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// Check `bytes` against this digest.
    pub fn verify_bytes(&self, bytes: &[u8], what: &str) -> Result<()> {
        let got = Digest::of_bytes(bytes);
        if &got != self {
            bail!("digest mismatch for {what}: expected {self}, got {got}");
        }
        Ok(())
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// A reader that hashes and counts everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Read the rest of the stream (hashing it), then return the digest and total size.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.count,
        ))
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest {
                hex: hex::encode(self.hasher.finalize()),
            },
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Check that a finished stream matched the expected digest and size.
pub fn check_stream(
    expected: &Digest,
    expected_size: Option<u64>,
    got: &Digest,
    got_size: u64,
    what: &str,
) -> Result<()> {
    if let Some(size) = expected_size
        && size != got_size
    {
        bail!("size mismatch for {what}: expected {size} bytes, got {got_size}");
    }
    if got != expected {
        bail!("digest mismatch for {what}: expected {expected}, got {got}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let d = Digest::of_bytes(b"");
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
    }

    #[test]
    fn rejects_bad_digests() {
        for s in [
            "sha256:xyz",
            "md5:00",
            "nocolon",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        ] {
            assert!(Digest::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn hashing_reader_counts() {
        let r = HashingReader::new(&b"abc"[..]);
        let (d, n) = r.finish().unwrap();
        assert_eq!(n, 3);
        assert_eq!(d, Digest::of_bytes(b"abc"));
    }
}
