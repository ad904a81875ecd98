//! SingularityCE's `inspect`: the metadata document (`{"data":{"attributes":{...}},"type":
//! "container"}`) and its text form, for an OCI image (its labels) or for a tree built by
//! Singularity (native SIF, sandbox), whose metadata lives in `/.singularity.d` and, for SCIF
//! apps, in `/scif/apps/NAME/scif`.
//!
//! SingularityCE runs a shell script in the container that prints the files below; this reads
//! the same files directly, each resolved inside the tree (`RootDir`), so a link in the image
//! never leads out of it. The JSON has SingularityCE's field order and Go's escaping (`<`, `>`
//! and `&` as `\u003c`, `\u003e`, `\u0026`), tab-indented, empty attributes left out.

use crate::rootdir::RootDir;
use anyhow::{Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;

/// What to show: SingularityCE's `inspect` flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sections {
    pub labels: bool,
    pub deffile: bool,
    pub helpfile: bool,
    pub runscript: bool,
    pub startscript: bool,
    pub test: bool,
    pub environment: bool,
    pub list_apps: bool,
    /// `--all`: everything, every app included (JSON only).
    pub all: bool,
}

impl Sections {
    /// A comma-separated list of `labels`, `deffile`, `helpfile`, `runscript`, `startscript`,
    /// `test`, `environment`, `list-apps` and `all`. Labels are shown when nothing else is
    /// asked for, as in SingularityCE.
    pub fn parse(list: &str) -> Result<Sections> {
        let mut s = Sections::default();
        for w in list.split(',').filter(|w| !w.is_empty()) {
            match w {
                "labels" => s.labels = true,
                "deffile" => s.deffile = true,
                "helpfile" => s.helpfile = true,
                "runscript" => s.runscript = true,
                "startscript" => s.startscript = true,
                "test" => s.test = true,
                "environment" => s.environment = true,
                "list-apps" => s.list_apps = true,
                "all" => s.all = true,
                _ => bail!(
                    "unknown inspect section '{w}' (labels, deffile, helpfile, runscript, startscript, test, environment, list-apps, all)"
                ),
            }
        }
        if !(s.deffile
            || s.helpfile
            || s.runscript
            || s.startscript
            || s.test
            || s.environment
            || s.list_apps)
        {
            s.labels = true;
        }
        if s.all {
            s = Sections {
                all: true,
                list_apps: s.list_apps,
                ..ALL
            };
        }
        Ok(s)
    }
}

const ALL: Sections = Sections {
    labels: true,
    deffile: true,
    helpfile: true,
    runscript: true,
    startscript: true,
    test: true,
    environment: true,
    list_apps: false,
    all: true,
};

fn empty(s: &str) -> bool {
    s.is_empty()
}

/// One SCIF app's attributes (SingularityCE's `AppAttributes`, in its field order).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppAttributes {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "empty")]
    pub runscript: String,
    #[serde(skip_serializing_if = "empty")]
    pub startscript: String,
    #[serde(skip_serializing_if = "empty")]
    pub test: String,
    #[serde(skip_serializing_if = "empty")]
    pub helpfile: String,
}

/// The image's attributes (SingularityCE's `Attributes`, in its field order).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Attributes {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, AppAttributes>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "empty")]
    pub runscript: String,
    #[serde(skip_serializing_if = "empty")]
    pub test: String,
    #[serde(skip_serializing_if = "empty")]
    pub helpfile: String,
    #[serde(skip_serializing_if = "empty")]
    pub deffile: String,
    #[serde(skip_serializing_if = "empty")]
    pub startscript: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Data {
    pub attributes: Attributes,
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metadata {
    pub data: Data,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl Metadata {
    fn new(attributes: Attributes) -> Metadata {
        Metadata {
            data: Data { attributes },
            kind: "container",
        }
    }
}

/// An OCI image's document: its labels (it has no definition file, scripts or help).
pub fn from_labels(labels: BTreeMap<String, String>, sections: Sections) -> Metadata {
    let mut a = Attributes::default();
    if sections.labels {
        a.labels = labels;
    }
    Metadata::new(a)
}

/// The labels of an image configuration (`config.Labels`, string values).
pub fn config_labels(image_config: &serde_json::Value) -> BTreeMap<String, String> {
    image_config
        .pointer("/config/Labels")
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

const SINGULARITY_D: &str = "/.singularity.d";

/// The document of a tree built by Singularity. `app` selects one SCIF app (ignored with
/// `all`, which takes every app).
pub fn from_tree(root: &RootDir, sections: Sections, app: Option<&str>) -> Metadata {
    let app = app.filter(|_| !sections.all);
    let mut a = Attributes::default();
    let apps: Vec<String> = root
        .list_dir("/scif/apps")
        .into_iter()
        .filter(|n| root.is_dir(&format!("/scif/apps/{n}/scif")))
        .collect();
    for n in &apps {
        a.apps.entry(n.clone()).or_default();
    }
    // Where the files are looked for, each with the app it belongs to.
    let mut prefixes: Vec<(String, Option<String>)> = vec![match app {
        Some(n) => (format!("/scif/apps/{n}/scif"), Some(n.to_string())),
        None => (SINGULARITY_D.to_string(), None),
    }];
    if sections.all {
        prefixes.extend(
            apps.iter()
                .map(|n| (format!("/scif/apps/{n}/scif"), Some(n.clone()))),
        );
    }
    let read = |p: &str| -> Option<String> {
        let text = root.read_file(p).ok().flatten()?;
        Some(text.trim_end_matches('\n').to_string())
    };
    for (prefix, owner) in &prefixes {
        let file = |name: &str| read(&format!("{prefix}/{name}"));
        let set = |a: &mut Attributes, field: &str, value: String| {
            let app = owner.as_ref().map(|n| a.apps.entry(n.clone()).or_default());
            match (field, app) {
                ("runscript", Some(x)) => x.runscript = value,
                ("runscript", None) => a.runscript = value,
                ("startscript", Some(x)) => x.startscript = value,
                ("startscript", None) => a.startscript = value,
                ("test", Some(x)) => x.test = value,
                ("test", None) => a.test = value,
                ("helpfile", Some(x)) => x.helpfile = value,
                ("helpfile", None) => a.helpfile = value,
                _ => {}
            }
        };
        if sections.labels
            && let Some(text) = file("labels.json")
        {
            let labels = parse_labels(&text);
            match owner {
                Some(n) => a.apps.entry(n.clone()).or_default().labels = labels,
                None => a.labels = labels,
            }
        }
        if sections.deffile
            && a.deffile.is_empty()
            && let Some(text) = file("Singularity")
        {
            a.deffile = text;
        }
        for (wanted, field, name) in [
            (sections.helpfile, "helpfile", "runscript.help"),
            (sections.runscript, "runscript", "runscript"),
            (sections.startscript, "startscript", "startscript"),
            (sections.test, "test", "test"),
        ] {
            if wanted && let Some(text) = file(name) {
                set(&mut a, field, text);
            }
        }
        if sections.environment {
            let env_dir = format!("{prefix}/env");
            let names = root.list_dir(&env_dir);
            let docker = names
                .iter()
                .filter(|n| prefix == SINGULARITY_D && n.starts_with("10-docker"));
            let own = names
                .iter()
                .filter(|n| n.starts_with('9') && n.ends_with("-environment.sh"));
            for n in docker.chain(own).filter(|n| n.ends_with(".sh")) {
                let path = format!("{env_dir}/{n}");
                if let Some(text) = read(&path) {
                    match owner {
                        Some(o) => a
                            .apps
                            .entry(o.clone())
                            .or_default()
                            .environment
                            .insert(path, text),
                        None => a.environment.insert(path, text),
                    };
                }
            }
        }
    }
    if !sections.list_apps && !sections.all {
        a.apps.retain(|n, _| Some(n.as_str()) == app);
    }
    Metadata::new(a)
}

/// `labels.json`: a JSON object of strings. Other values are left out, with one warning, as
/// SingularityCE warns that it cannot parse them.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_str(text) else {
        crate::cli::warn("Unable to parse labels: labels.json is not a JSON object");
        return BTreeMap::new();
    };
    let labels: BTreeMap<String, String> = m
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect();
    if labels.len() != m.len() {
        crate::cli::warn("Unable to parse labels: some values of labels.json are not strings");
    }
    labels
}

/// The document as SingularityCE prints it with `--json`: Go's `json.MarshalIndent(v, "",
/// "\t")`, which also escapes `<`, `>`, `&`, U+2028 and U+2029 (they can appear only inside
/// strings, so replacing them in the output is exact).
pub fn to_json(m: &Metadata) -> Result<String> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    m.serialize(&mut ser)?;
    let s = String::from_utf8(out)?
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    Ok(s + "\n")
}

/// The text SingularityCE prints without `--json`: app names (`--list-apps`), then the
/// definition file, runscript, startscript, test and help text (the app's when `--app` names
/// one and the image has none), the environment files (`=== FILE ===`), and the labels
/// (`KEY: VALUE`), each sorted by name.
pub fn to_text(m: &Metadata, sections: Sections, app: Option<&str>) -> String {
    let a = &m.data.attributes;
    let app_attr = app.and_then(|n| a.apps.get(n));
    let mut out = String::new();
    if sections.list_apps {
        for n in a.apps.keys() {
            out.push_str(&format!("{n}\n"));
        }
    }
    if !a.deffile.is_empty() {
        out.push_str(&format!("{}\n", a.deffile));
    }
    let pick = |own: &str, of_app: fn(&AppAttributes) -> &str| -> Option<String> {
        if !own.is_empty() {
            return Some(own.to_string());
        }
        app_attr
            .map(of_app)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    for text in [
        pick(&a.runscript, |x| &x.runscript),
        pick(&a.startscript, |x| &x.startscript),
        pick(&a.test, |x| &x.test),
        pick(&a.helpfile, |x| &x.helpfile),
    ]
    .into_iter()
    .flatten()
    {
        out.push_str(&format!("{text}\n"));
    }
    let env = if !a.environment.is_empty() {
        Some(&a.environment)
    } else {
        app_attr.map(|x| &x.environment).filter(|e| !e.is_empty())
    };
    for (k, v) in env.into_iter().flatten() {
        out.push_str(&format!("=== {k} ===\n{v}\n\n"));
    }
    let labels = if !a.labels.is_empty() {
        Some(&a.labels)
    } else {
        app_attr.map(|x| &x.labels).filter(|l| !l.is_empty())
    };
    for (k, v) in labels.into_iter().flatten() {
        out.push_str(&format!("{k}: {v}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let w = |p: &str, s: &str| {
            let p = r.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, s).unwrap();
        };
        w(
            ".singularity.d/labels.json",
            r#"{"b": "2", "a": "x<y & z"}"#,
        );
        w(".singularity.d/runscript", "#!/bin/sh\nexec echo run\n\n");
        w(".singularity.d/test", "#!/bin/sh\nexit 3\n");
        w(".singularity.d/env/01-base.sh", "not shown\n");
        w(
            ".singularity.d/env/10-docker2singularity.sh",
            "export D=1\n",
        );
        w(".singularity.d/env/90-environment.sh", "export E=2\n");
        w("scif/apps/hello/scif/runscript", "#!/bin/sh\necho hello\n");
        w(
            "scif/apps/hello/scif/env/90-environment.sh",
            "export APP=1\n",
        );
        w("scif/apps/other/scif/labels.json", r#"{"app": "other"}"#);
        // A link out of the tree stays inside it: /etc/hostname of the tree does not exist.
        std::os::unix::fs::symlink("/etc/hostname", r.join(".singularity.d/runscript.help"))
            .unwrap();
        d
    }

    fn json(m: &Metadata) -> serde_json::Value {
        serde_json::from_str(&to_json(m).unwrap()).unwrap()
    }

    #[test]
    fn labels_by_default_and_sections_on_request() {
        let d = tree();
        let root = RootDir::open(d.path()).unwrap();
        let m = from_tree(&root, Sections::parse("").unwrap(), None);
        let out = to_json(&m).unwrap();
        assert!(
            out.starts_with("{\n\t\"data\": {\n\t\t\"attributes\": {\n\t\t\t\"labels\""),
            "{out}"
        );
        assert!(out.contains("\"x\\u003cy \\u0026 z\""), "{out}");
        assert_eq!(
            to_text(&m, Sections::parse("").unwrap(), None),
            "a: x<y & z\nb: 2\n"
        );
        let s = Sections::parse("runscript,environment,test").unwrap();
        let m = from_tree(&root, s, None);
        let v = json(&m);
        assert_eq!(
            v["data"]["attributes"]["runscript"],
            "#!/bin/sh\nexec echo run"
        );
        assert_eq!(v["data"]["attributes"]["test"], "#!/bin/sh\nexit 3");
        assert_eq!(
            v["data"]["attributes"]["environment"],
            serde_json::json!({
                "/.singularity.d/env/10-docker2singularity.sh": "export D=1",
                "/.singularity.d/env/90-environment.sh": "export E=2",
            })
        );
        assert!(v["data"]["attributes"].get("labels").is_none());
        assert!(v["data"]["attributes"].get("helpfile").is_none());
        assert_eq!(
            to_text(&m, s, None),
            "#!/bin/sh\nexec echo run\n#!/bin/sh\nexit 3\n=== /.singularity.d/env/10-docker2singularity.sh ===\nexport D=1\n\n=== /.singularity.d/env/90-environment.sh ===\nexport E=2\n\n"
        );
    }

    #[test]
    fn apps_and_all() {
        let d = tree();
        let root = RootDir::open(d.path()).unwrap();
        let s = Sections::parse("runscript,environment").unwrap();
        let m = from_tree(&root, s, Some("hello"));
        let v = json(&m);
        assert_eq!(
            v["data"]["attributes"]["apps"],
            serde_json::json!({"hello": {
                "environment": {"/scif/apps/hello/scif/env/90-environment.sh": "export APP=1"},
                "runscript": "#!/bin/sh\necho hello",
            }})
        );
        assert_eq!(
            to_text(&m, s, Some("hello")),
            "#!/bin/sh\necho hello\n=== /scif/apps/hello/scif/env/90-environment.sh ===\nexport APP=1\n\n"
        );
        let list = Sections::parse("list-apps").unwrap();
        assert_eq!(
            to_text(&from_tree(&root, list, None), list, None),
            "hello\nother\n"
        );
        let v = json(&from_tree(&root, Sections::parse("all").unwrap(), None));
        let a = &v["data"]["attributes"];
        assert_eq!(a["apps"]["other"]["labels"]["app"], "other");
        assert_eq!(a["apps"]["hello"]["runscript"], "#!/bin/sh\necho hello");
        assert_eq!(a["labels"]["b"], "2");
        assert_eq!(a["test"], "#!/bin/sh\nexit 3");
    }

    #[test]
    fn oci_labels() {
        let cfg = serde_json::json!({"config": {"Labels": {"b": "2", "a": "1", "n": 3}}});
        let m = from_labels(config_labels(&cfg), Sections::parse("").unwrap());
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"data":{"attributes":{"labels":{"a":"1","b":"2"}}},"type":"container"}"#
        );
        let m = from_labels(BTreeMap::new(), Sections::parse("").unwrap());
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"data":{"attributes":{}},"type":"container"}"#
        );
        assert!(Sections::parse("bogus").is_err());
    }
}
