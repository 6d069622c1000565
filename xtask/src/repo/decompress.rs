//! Compressed files by their names' suffix: `.xz`, `.zst`, `.gz`.

use anyhow::{bail, Context, Result};
use std::io::Read;

/// A decompressing reader for `name` (by its suffix).
pub fn decompressor<'a, R: Read + 'a>(name: &str, reader: R) -> Result<Box<dyn Read + 'a>> {
    Ok(if name.ends_with(".xz") {
        Box::new(liblzma::read::XzDecoder::new_multi_decoder(reader))
    } else if name.ends_with(".zst") {
        Box::new(
            ruzstd::decoding::StreamingDecoder::new(reader)
                .map_err(|e| anyhow::anyhow!("zstd: {e}"))?,
        )
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(reader))
    } else if name.ends_with(".tar") || name.ends_with(".ko") || name.ends_with(".xml") {
        Box::new(reader)
    } else {
        bail!("unsupported compression for {name}")
    })
}

/// Decompress a whole in-memory file according to its name's suffix.
pub fn decompress(name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decompressor(name, bytes)?
        .read_to_end(&mut out)
        .with_context(|| format!("decompressing {name}"))?;
    Ok(out)
}
