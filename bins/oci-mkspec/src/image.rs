//! The parts of the OCI image configuration that shape the container.

use serde_json::Value;
use std::collections::HashMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageFacts {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    pub user: String,
    pub has_volumes: bool,
    pub has_exposed_ports: bool,
    /// config.json's `annotations`: `org.opencontainers.image.*` facts, then the image labels
    /// (labels win). Values are strings, as the runtime-spec wants them.
    pub annotations: HashMap<String, String>,
    /// A Singularity-built image (native SIF, sandbox) whose `/.singularity.d` defines the
    /// actions (see `singularity_d`).
    pub singularity_d: bool,
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn non_empty_object(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_some_and(|o| !o.is_empty())
}

impl ImageFacts {
    pub fn from_config(cfg: &Value) -> ImageFacts {
        let c = cfg.get("config").cloned().unwrap_or(Value::Null);
        let mut ann = HashMap::new();
        let mut put = |k: &str, v: Option<&Value>| {
            if let Some(s) = v.and_then(Value::as_str).filter(|s| !s.is_empty()) {
                ann.insert(format!("org.opencontainers.image.{k}"), s.to_string());
            }
        };
        put("os", cfg.get("os"));
        put("architecture", cfg.get("architecture"));
        put("variant", cfg.get("variant"));
        put("os.version", cfg.get("os.version"));
        let features = Value::String(strings(cfg.get("os.features")).join(","));
        put("os.features", Some(&features));
        put("author", cfg.get("author"));
        put("created", cfg.get("created"));
        put("stopSignal", c.get("StopSignal"));
        if let Some(labels) = c.get("Labels").and_then(Value::as_object) {
            for (k, v) in labels {
                if let Some(s) = v.as_str() {
                    ann.insert(k.clone(), s.to_string());
                }
            }
        }
        ImageFacts {
            env: strings(c.get("Env")),
            entrypoint: strings(c.get("Entrypoint")),
            cmd: strings(c.get("Cmd")),
            working_dir: c
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            user: c
                .get("User")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            has_volumes: non_empty_object(c.get("Volumes")),
            has_exposed_ports: non_empty_object(c.get("ExposedPorts")),
            annotations: ann,
            singularity_d: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn facts_and_annotations() {
        let f = ImageFacts::from_config(&json!({
            "os": "linux", "architecture": "amd64", "os.features": ["a", "b"],
            "created": "2024-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "User": "2000",
                       "WorkingDir": "/w", "StopSignal": "SIGTERM",
                       "Labels": {"org.opencontainers.image.os": "label-wins", "x": "y"}}
        }));
        assert_eq!(f.env, vec!["PATH=/bin"]);
        assert_eq!(f.cmd, vec!["/bin/sh"]);
        assert!(f.entrypoint.is_empty());
        assert_eq!((f.user.as_str(), f.working_dir.as_str()), ("2000", "/w"));
        assert_eq!(f.annotations["org.opencontainers.image.os"], "label-wins");
        assert_eq!(f.annotations["org.opencontainers.image.os.features"], "a,b");
        assert_eq!(
            f.annotations["org.opencontainers.image.stopSignal"],
            "SIGTERM"
        );
        assert_eq!(f.annotations["x"], "y");
    }
}
