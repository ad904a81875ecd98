//! `--inspect-json`: SingularityCE's `inspect --json` document for a fetched image, printed in
//! place of the image record, for clients that parse it (cwltool checks `data.attributes`).
//! An OCI image's attributes are its labels; a sandbox directory's are read from its
//! `/.singularity.d` (`common::inspect`). The other sections, and native SIFs, are answered by
//! `oci-unpack --inspect`, which has the tree.

use anyhow::Result;
use common::inspect::{self, Metadata, Sections};
use common::record::ImageRecord;
use common::rootdir::RootDir;

/// The document: labels only, as `inspect --json` shows by default.
pub fn metadata(record: &ImageRecord) -> Result<Metadata> {
    let sections = Sections::parse("labels")?;
    if let Some(sb) = &record.sandbox {
        return Ok(inspect::from_tree(
            &RootDir::open(&sb.path)?,
            sections,
            None,
        ));
    }
    Ok(inspect::from_labels(
        inspect::config_labels(&record.image_config),
        sections,
    ))
}

/// Print the document as SingularityCE does.
pub fn print(record: &ImageRecord) -> Result<()> {
    use std::io::Write;
    let text = inspect::to_json(&metadata(record)?)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}
