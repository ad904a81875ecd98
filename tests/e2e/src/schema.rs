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

/// Panic unless `record` validates against `schemas/<schema>`, naming every error and the record.
pub fn assert_record_valid(schema: &str, record: &Value) {
    let errors = record_schema_errors(schema, record);
    assert!(
        errors.is_empty(),
        "record does not match schemas/{schema}:\n  {}\n{record}",
        errors.join("\n  ")
    );
}

#[cfg(test)]
mod tests {
    use super::record_schema_errors;
    use common::record::{
        BundleRecord, ContainerPlace, ContainerRecord, Descriptor, ImageRecord, Instance,
        InstanceStatus, InstancesRecord, Kind, ListedInstance, Record, RootfsRecord, SifObject,
        SifSource,
    };
    use serde_json::Value;

    fn descriptor(media_type: &str, byte: char) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: format!("sha256:{}", byte.to_string().repeat(64)),
            size: 2,
            annotations: None,
        }
    }

    fn image() -> ImageRecord {
        ImageRecord::new(
            "oci:/l:latest",
            "oci",
            "/l".into(),
            descriptor("application/vnd.oci.image.manifest.v1+json", 'a'),
            descriptor("application/vnd.oci.image.config.v1+json", 'b'),
            vec![descriptor(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                'c',
            )],
            serde_json::json!({"os": "linux", "architecture": "amd64"}),
        )
    }

    fn rootfs() -> RootfsRecord {
        RootfsRecord::new("/c/rootfs/k/rootfs".into(), true, false, "keep", image())
    }

    fn bundle() -> BundleRecord {
        BundleRecord {
            rootfs_lower: Some("/c/rootfs/k/rootfs".into()),
            etc_files: vec!["/b/etc/passwd".into()],
            ..BundleRecord::new(
                "/b".into(),
                "1:2".into(),
                "/b/config.json".into(),
                rootfs(),
                1000,
                1000,
                vec!["id".into()],
            )
        }
    }

    fn container() -> ContainerRecord {
        let place = ContainerPlace {
            id: "c1".into(),
            bundle: "/b".into(),
            runtime: "/usr/bin/crun".into(),
            runtime_root: "/run/singularity-oci".into(),
            state_dir: "/run/singularity-oci/containers/c1".into(),
        };
        ContainerRecord {
            terminal: true,
            pid_file: Some("/tmp/c1.pid".into()),
            ..ContainerRecord::created(place, 42, 41)
        }
    }

    fn instances() -> InstancesRecord {
        let instance = Instance {
            name: "web".into(),
            pid: 42,
            conmon_pid: 41,
            image: "docker://nginx".into(),
            started: 1_796_223_909,
            start_time: common::instance::rfc3339(1_796_223_909),
            runtime: "/usr/bin/crun".into(),
            runtime_root: "/run/singularity-oci".into(),
            bundle: "/tmp/singularity-oci.1".into(),
            bundle_inode: "1:2".into(),
            state_dir: "/run/singularity-oci/containers/web".into(),
            log_out_path: "/root/.singularity/instances/logs/h/root/web.out".into(),
            log_err_path: "/root/.singularity/instances/logs/h/root/web.err".into(),
        };
        InstancesRecord::new(vec![
            ListedInstance {
                instance: instance.clone(),
                status: InstanceStatus::Running,
                exit_status: None,
            },
            ListedInstance {
                instance,
                status: InstanceStatus::Exited,
                exit_status: Some(143),
            },
        ])
    }

    /// The schema file of a kind of record: `schemas/<kind>-record.schema.json`.
    fn schema_of(kind: Kind) -> String {
        format!("{kind}-record.schema.json")
    }

    fn assert_valid<T: Record>(record: &T) -> Value {
        let v = serde_json::to_value(record).unwrap();
        let errors = record_schema_errors(&schema_of(T::KIND), &v);
        assert!(
            errors.is_empty(),
            "{}:\n  {}\n{v}",
            T::KIND,
            errors.join("\n  ")
        );
        v
    }

    #[test]
    fn every_kind_of_record_built_by_its_constructor_validates() {
        assert_valid(&image());
        assert_valid(&rootfs());
        assert_valid(&bundle());
        assert_valid(&container());
        assert_valid(&instances());
        let plain = ContainerRecord {
            pid_file: None,
            ..container()
        };
        assert_valid(&plain);
    }

    #[test]
    fn every_kind_has_a_schema_that_names_it() {
        for kind in Kind::ALL {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../schemas")
                .join(schema_of(kind));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let schema: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(schema["properties"]["kind"]["const"], kind.as_str());
            assert_eq!(schema["properties"]["schemaVersion"]["const"], 1);
        }
    }

    #[test]
    fn a_sif_image_record_validates() {
        let sif = SifSource {
            path: "/i.sif".into(),
            dev: 1,
            ino: 2,
            size: 3,
            mtime_ns: 4,
            ctime_ns: 5,
            objects: vec![SifObject { offset: 0, size: 2 }],
        };
        let mut r = image().with_sif(sif);
        r.transport = "sif".into();
        assert_valid(&r);
    }

    /// The schemas are strict: a record with a wrong kind, a foreign field or a missing one is
    /// refused, so a test that validates records notices a change of format.
    #[test]
    fn the_container_schema_refuses_what_the_reader_would() {
        let good = serde_json::to_value(container()).unwrap();
        let schema = schema_of(Kind::Container);
        let mut wrong_kind = good.clone();
        wrong_kind["kind"] = "bundle".into();
        assert!(!record_schema_errors(&schema, &wrong_kind).is_empty());
        let mut extra = good.clone();
        extra["surprise"] = true.into();
        assert!(!record_schema_errors(&schema, &extra).is_empty());
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("conmonPid");
        assert!(!record_schema_errors(&schema, &missing).is_empty());
        let mut relative = good;
        relative["stateDir"] = "containers/c1".into();
        assert!(!record_schema_errors(&schema, &relative).is_empty());
    }
}
