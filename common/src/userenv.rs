//! The user's variables for the container, given in the caller's environment as
//! `APPTAINERENV_NAME` and `SINGULARITYENV_NAME` (the latter wins, as in SingularityCE).

/// The prefixes, in ascending priority.
pub const PREFIXES: [&str; 2] = ["APPTAINERENV_", "SINGULARITYENV_"];

/// An ordered key/value list where a later set replaces the value in place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EnvList(pub Vec<(String, String)>);

impl EnvList {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn set(&mut self, k: &str, v: &str) {
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(e) => e.1 = v.to_string(),
            None => self.0.push((k.to_string(), v.to_string())),
        }
    }
    pub fn contains(&self, k: &str) -> bool {
        self.get(k).is_some()
    }
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// `(NAME, VALUE)` for every prefixed variable of `host_env`, in ascending priority (a later
/// pair for the same name wins). A prefix with no name after it is reported through `warn` and
/// skipped.
pub fn prefixed(
    host_env: &[(String, String)],
    warn: &mut dyn FnMut(String),
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for prefix in PREFIXES {
        for (k, v) in host_env {
            let Some(key) = k.strip_prefix(prefix) else {
                continue;
            };
            if key.is_empty() {
                warn(format!(
                    "ignoring {k}: the variable name after {prefix} is empty"
                ));
                continue;
            }
            out.push((key.to_string(), v.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_value_wins_and_each_name_comes_once() {
        let mut l = EnvList::default();
        for (k, v) in [("A", "1"), ("B", "2"), ("A", "3")] {
            l.set(k, v);
        }
        assert_eq!(l.to_strings(), ["A=3", "B=2"]);
    }

    #[test]
    fn singularity_wins_over_apptainer_and_empty_names_are_skipped() {
        let host: Vec<(String, String)> = [
            ("SINGULARITYENV_A", "s"),
            ("APPTAINERENV_A", "a"),
            ("APPTAINERENV_B", "b"),
            ("SINGULARITYENV_", "x"),
            ("PATH", "/bin"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut warnings = Vec::new();
        let got = prefixed(&host, &mut |w| warnings.push(w));
        let pairs: Vec<(&str, &str)> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("A", "a"), ("B", "b"), ("A", "s")]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
    }
}
