//! `--inspect-json`: SingularityCE's `inspect --json` document for a fetched image, printed in
//! place of the image record, for clients that parse it (cwltool checks `data.attributes`).
//!
//! SingularityCE prints `{"data":{"attributes":{...}},"type":"container"}`, tab-indented, with
//! empty attributes left out and map keys sorted. An OCI image's attributes are its labels
//! (`config.Labels`); it has no definition file, runscript, test or help text of its own.

use anyhow::Result;
use common::record::ImageRecord;
use serde::Serialize;
use serde_json::{Map, Value, json};

/// The document, as SingularityCE lays it out.
pub fn metadata(record: &ImageRecord) -> Value {
    let mut attributes = Map::new();
    let labels: Map<String, Value> = record
        .image_config
        .pointer("/config/Labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), Value::from(s))))
                .collect()
        })
        .unwrap_or_default();
    if !labels.is_empty() {
        attributes.insert("labels".into(), Value::Object(labels));
    }
    json!({"data": {"attributes": attributes}, "type": "container"})
}

/// Print the document tab-indented, as Go's json.MarshalIndent(v, "", "\t") does.
pub fn print(record: &ImageRecord) -> Result<()> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    metadata(record).serialize(&mut ser)?;
    out.push(b'\n');
    use std::io::Write;
    std::io::stdout().lock().write_all(&out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::record::Descriptor;

    fn record(config: Value) -> ImageRecord {
        let d = Descriptor {
            media_type: String::new(),
            digest: String::new(),
            size: 0,
            annotations: None,
        };
        ImageRecord::new("oci:x", "oci", "/l".into(), d.clone(), d, vec![], config)
    }

    #[test]
    fn labels_sorted_and_empty_attributes_left_out() {
        let m = metadata(&record(json!({"config": {"Labels": {"b": "2", "a": "1"}}})));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"data":{"attributes":{"labels":{"a":"1","b":"2"}}},"type":"container"}"#
        );
        let m = metadata(&record(json!({"config": {}})));
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"data":{"attributes":{}},"type":"container"}"#
        );
    }
}
