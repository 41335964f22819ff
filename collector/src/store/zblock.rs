//! The part the event store's segments and the incident database's alert blocks share: a
//! zstd-compressed NDJSON payload whose raw length its header gives. Each keeps its own header;
//! decompression is bounded by that length and checked against it here.

/// Decompresses `payload`, which its header says is `raw_len` bytes of NDJSON: at most that
/// much is allocated, and any other length is an error.
pub(crate) fn decompress(payload: &[u8], raw_len: usize) -> Result<Vec<u8>, String> {
    let raw = zstd::bulk::decompress(payload, raw_len)
        .map_err(|e| format!("payload does not decompress: {e}"))?;
    if raw.len() != raw_len {
        return Err(format!(
            "payload is {} bytes, header says {raw_len}",
            raw.len()
        ));
    }
    Ok(raw)
}

/// The non-empty lines of decompressed NDJSON.
pub(crate) fn lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    raw.split(|b| *b == b'\n').filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompression_is_held_to_the_headers_length() {
        let raw = b"{\"a\":1}\n\n{\"a\":2}\n";
        let z = zstd::bulk::compress(raw, 1).unwrap();
        let back = decompress(&z, raw.len()).unwrap();
        assert_eq!(lines(&back).count(), 2);
        let short = decompress(&z, raw.len() - 1).unwrap_err();
        assert!(short.contains("does not decompress"), "{short}");
        let long = decompress(&z, raw.len() + 5).unwrap_err();
        assert!(long.contains("header says"), "{long}");
        assert!(decompress(b"not zstd", 10).is_err());
    }
}
