//! PAX extended header records (POSIX.1-2001 tar), for the writers of tar streams.

/// PAX records: `<len> <key>=<value>\n`, where `<len>` counts the whole record, itself included.
pub fn body(records: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = 1 + k.len() + 1 + v.len() + 1; // " " key "=" value "\n"
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        body.extend_from_slice(len.to_string().as_bytes());
        body.push(b' ');
        body.extend_from_slice(k);
        body.push(b'=');
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    body
}

#[cfg(test)]
mod tests {
    #[test]
    fn lengths_count_themselves() {
        let b = super::body(&[(b"path".to_vec(), vec![b'a'; 94])]);
        // 3 + 1 + 4 + 1 + 94 + 1 = 104 (a two-digit guess would be one short).
        assert!(
            b.starts_with(b"104 path="),
            "{}",
            String::from_utf8_lossy(&b)
        );
        assert_eq!(b.len(), 104);
    }
}
