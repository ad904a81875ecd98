//! JSON-schema validation against the vendored OCI schemas (`$SIOCI_SCHEMAS`), offline.

use crate::schemas_dir;
use jsonschema::{Draft, Retrieve, Uri};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Resolves `file://` references, and the image-spec's `https://opencontainers.org/schema/...`
/// ids, to the vendored files. Nothing is fetched from the network.
struct LocalSchemas {
    image_spec: PathBuf,
}

impl Retrieve for LocalSchemas {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let s = uri.as_str();
        let s = s.split('#').next().unwrap_or(s);
        let path = if let Some(p) = s.strip_prefix("file://") {
            PathBuf::from(p)
        } else if let Some(rest) = s.strip_prefix("https://opencontainers.org/schema/") {
            let file = rest.rsplit('/').next().unwrap_or(rest);
            self.image_spec.join(file)
        } else {
            return Err(format!("refusing to fetch {s}: only vendored schemas are used").into());
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Validate `instance` against the draft-4 schema file `schema_file` (absolute path);
/// returns one message per error, empty when valid. Panics if the schema itself is broken.
pub fn schema_errors(schema_file: &Path, instance: &Value) -> Vec<String> {
    let schema = read_json(schema_file);
    let validator = jsonschema::options()
        .with_draft(Draft::Draft4)
        .with_base_uri(format!("file://{}", schema_file.display()))
        .with_retriever(LocalSchemas {
            image_spec: schemas_dir().join("image-spec"),
        })
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {} does not compile: {e}", schema_file.display()));
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect()
}

/// Errors of a runtime-spec `config.json` value against `runtime-spec/config-schema.json`.
pub fn runtime_config_errors(config: &Value) -> Vec<String> {
    schema_errors(
        &schemas_dir().join("runtime-spec/config-schema.json"),
        config,
    )
}

/// Panic unless the file `path` is a `config.json` valid against the runtime-spec schema.
pub fn validate_runtime_config(path: impl AsRef<Path>) {
    let path = path.as_ref();
    let errors = runtime_config_errors(&read_json(path));
    assert!(
        errors.is_empty(),
        "{} does not validate against runtime-spec/config-schema.json:\n  {}",
        path.display(),
        errors.join("\n  ")
    );
}

/// Errors of an image-spec document: `schema` is a file of `image-spec/`, e.g.
/// `image-manifest-schema.json`, `image-index-schema.json`, `config-schema.json`,
/// `image-layout-schema.json`.
pub fn image_schema_errors(schema: &str, doc: &Value) -> Vec<String> {
    schema_errors(&schemas_dir().join("image-spec").join(schema), doc)
}

/// Panic unless the JSON file `path` validates against image-spec schema `schema`.
pub fn validate_image_json(schema: &str, path: impl AsRef<Path>) {
    let path = path.as_ref();
    let errors = image_schema_errors(schema, &read_json(path));
    assert!(
        errors.is_empty(),
        "{} does not validate against image-spec/{schema}:\n  {}",
        path.display(),
        errors.join("\n  ")
    );
}

/// Errors of a stage record against the project's draft-07 schema `schemas/<name>` (its refs
/// resolve to the sibling files).
pub fn record_schema_errors(name: &str, record: &Value) -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../schemas")
        .join(name)
        .canonicalize()
        .unwrap_or_else(|e| panic!("schemas/{name}: {e}"));
    let schema = read_json(&path);
    let validator = jsonschema::options()
        .with_draft(Draft::Draft7)
        .with_base_uri(format!("file://{}", path.display()))
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {} does not compile: {e}", path.display()));
    validator
        .iter_errors(record)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect()
}
