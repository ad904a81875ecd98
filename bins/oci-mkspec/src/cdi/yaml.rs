//! A CDI spec written in YAML, read into the same JSON value the JSON specs give, so one set of
//! types (and one strictness) serves both. Built from yaml-rust2's parser events rather than its
//! document loader: the loader copies the node behind every alias, so a small hostile file of
//! nested aliases could take gigabytes; CDI specs use no anchors, and an alias is refused.
//! Plain scalars are typed by YAML 1.2's core schema (`0o644` is octal, `0644` is decimal).

use anyhow::{Result, bail};
use serde_json::{Map, Number, Value};
use yaml_rust2::Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

enum Frame {
    Seq(Vec<Value>),
    Map(Map<String, Value>, Option<String>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    done: Option<Value>,
    error: Option<String>,
}

fn scalar(text: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::String(text);
    }
    match Yaml::from_str(&text) {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(b),
        Yaml::Integer(i) => Value::Number(i.into()),
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map_or(Value::String(r), Value::Number),
        _ => Value::String(text),
    }
}

impl Builder {
    fn fail(&mut self, what: String, mark: Marker) {
        if self.error.is_none() {
            self.error = Some(format!(
                "line {} column {}: {what}",
                mark.line(),
                mark.col()
            ));
        }
    }

    /// Place a finished node in its parent (or as the document).
    fn place(&mut self, v: Value, key_text: Option<String>, mark: Marker) {
        match self.stack.last_mut() {
            None => {
                if self.done.is_none() {
                    self.done = Some(v);
                }
            }
            Some(Frame::Seq(items)) => items.push(v),
            Some(Frame::Map(map, key)) => match key.take() {
                None => match key_text {
                    Some(k) => *key = Some(k),
                    None => self.fail("a mapping key must be a scalar".into(), mark),
                },
                Some(k) => {
                    if map.insert(k.clone(), v).is_some() {
                        self.fail(format!("duplicated key {k:?}"), mark);
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Alias(_) => {
                self.fail("YAML aliases are not supported in CDI specs".into(), mark)
            }
            Event::Scalar(text, style, _, _) => {
                let key = text.clone();
                self.place(scalar(text, style), Some(key), mark);
            }
            Event::SequenceStart(..) => self.stack.push(Frame::Seq(Vec::new())),
            Event::MappingStart(..) => self.stack.push(Frame::Map(Map::new(), None)),
            Event::SequenceEnd | Event::MappingEnd => {
                let v = match self.stack.pop() {
                    Some(Frame::Seq(items)) => Value::Array(items),
                    Some(Frame::Map(map, _)) => Value::Object(map),
                    None => return,
                };
                self.place(v, None, mark);
            }
            _ => {}
        }
    }
}

/// The first YAML document of `bytes` as a JSON value.
pub fn to_json(bytes: &[u8]) -> Result<Value> {
    let text = std::str::from_utf8(bytes).map_err(|_| anyhow::anyhow!("the file is not UTF-8"))?;
    let mut b = Builder::default();
    if let Err(e) = Parser::new(text.chars()).load(&mut b, false) {
        bail!("invalid YAML: {e}");
    }
    if let Some(e) = b.error {
        bail!("invalid YAML: {e}");
    }
    match b.done {
        Some(v) => Ok(v),
        None => bail!("no YAML document"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdi_spec_in_yaml() {
        let v = to_json(
            br#"---
cdiVersion: "0.7.0"
kind: vendor.com/device
devices:
  - name: "0"
    containerEdits:
      deviceNodes:
        - path: /dev/vendor0
          hostPath: /dev/zero
          fileMode: 0o640
          major: 1
      env: [A=1, 'B=two words']
containerEdits:
  mounts:
    - {hostPath: /opt/x, containerPath: /opt/x, options: [ro, bind]}
  additionalGids: [5]
  intelRdt: ~
"#,
        )
        .unwrap();
        assert_eq!(v["cdiVersion"], "0.7.0");
        assert_eq!(v["devices"][0]["name"], "0");
        let node = &v["devices"][0]["containerEdits"]["deviceNodes"][0];
        assert_eq!(node["fileMode"], 0o640);
        assert_eq!(node["major"], 1);
        assert_eq!(
            v["devices"][0]["containerEdits"]["env"],
            serde_json::json!(["A=1", "B=two words"])
        );
        assert_eq!(v["containerEdits"]["mounts"][0]["options"][1], "bind");
        assert_eq!(v["containerEdits"]["intelRdt"], Value::Null);
        let spec: crate::cdi::schema::Spec = serde_json::from_value(v).unwrap();
        spec.validate().unwrap();
    }

    #[test]
    fn aliases_duplicates_and_junk_are_refused() {
        let e = to_json(b"a: &x [1, 2]\nb: *x\n").unwrap_err().to_string();
        assert!(e.contains("aliases"), "{e}");
        let e = to_json(b"a: 1\na: 2\n").unwrap_err().to_string();
        assert!(e.contains("duplicated key"), "{e}");
        let e = to_json(b"a: [1, 2\n").unwrap_err().to_string();
        assert!(e.contains("invalid YAML"), "{e}");
        let e = to_json(b"? [1]\n: 2\n").unwrap_err().to_string();
        assert!(e.contains("mapping key"), "{e}");
        assert!(to_json(b"").is_err());
        assert!(to_json(b"\xff\xfe").is_err());
    }
}
