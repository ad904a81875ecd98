//! The container environment, merged as SingularityCE's OCI launcher does: the image's, then
//! `--env-file`, `SINGULARITYENV_`/`APPTAINERENV_` and `--env` (later wins), the PATH and
//! LD_LIBRARY_PATH rules, and which host variables pass in each mode.

use anyhow::{Result, bail};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const LIBS_DIR: &str = "/.singularity.d/libs";

/// Host variables passed in the default (compat) mode when neither the image nor the user set
/// them.
const COMPAT_PASSTHROUGH: &[&str] = &[
    "TERM",
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "ftp_proxy",
    "FTP_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

pub use common::userenv::EnvList;

/// Parse one `--env` value the way pflag's StringToString does: a single `=` means one pair
/// (commas kept); several `=` mean a CSV list of pairs.
pub fn parse_env_option(val: &str) -> Result<Vec<(String, String)>> {
    let pairs: Vec<String> = match val.matches('=').count() {
        0 => bail!("--env {val}: must be formatted as KEY=VALUE"),
        1 => vec![val.trim_matches('"').to_string()],
        _ => csv_fields(val)?,
    };
    pairs
        .into_iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => bail!("--env {p}: must be formatted as KEY=VALUE"),
        })
        .collect()
}

/// One CSV record (RFC 4180 quoting), as Go's encoding/csv reads it.
fn csv_fields(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if c == ',' {
            out.push(std::mem::take(&mut cur));
            at_start = true;
        } else {
            cur.push(c);
            at_start = false;
        }
    }
    if quoted {
        bail!("--env {s}: unterminated quote");
    }
    out.push(cur);
    Ok(out)
}

/// Variables a shell owns, which Singularity drops from an env-file's result.
const SHELL_OWNED: &[&str] = &["EUID", "GID", "HOME", "IFS", "OPTIND", "PWD", "UID"];

/// Evaluate an env-file the way a POSIX shell would for assignments: `[export] K=V` lines,
/// comments, single and double quotes, backslash escapes, `$VAR`, `${VAR}`, `${VAR:-default}`,
/// and `${VAR-default}`. Values expand against `lookup` (the host environment plus
/// SINGULARITY_IMAGE) and the file's own earlier assignments. Command substitution is refused:
/// oci-mkspec never runs code from an env-file.
pub fn eval_env_file(
    text: &str,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>> {
    let mut vars = EnvList::default();
    let mut lex = Lexer {
        s: text.chars().collect(),
        i: 0,
        line: 1,
        pending_newline: false,
        file,
    };
    loop {
        let words =
            lex.command(&|k: &str| vars.get(k).map(str::to_string).or_else(|| lookup(k)))?;
        let Some(words) = words else { break };
        let mut it = words.into_iter().peekable();
        let exporting = it.peek().is_some_and(|w| w == "export" || w == "readonly");
        if exporting {
            it.next();
        }
        for w in it {
            let Some((k, v)) = w.split_once('=') else {
                if exporting && is_name(&w) {
                    continue; // `export NAME`: nothing to assign
                }
                bail!(
                    "{file}: line {}: '{w}' is not an assignment (only KEY=VALUE lines are allowed)",
                    lex.line
                );
            };
            if !is_name(k) {
                bail!(
                    "{file}: line {}: '{k}' is not a valid variable name",
                    lex.line
                );
            }
            vars.set(k, v);
        }
    }
    Ok(vars
        .0
        .into_iter()
        .filter(|(k, _)| !SHELL_OWNED.contains(&k.as_str()))
        .collect())
}

pub(crate) fn is_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch == '_' || ch.is_ascii_alphabetic())
        && c.all(|ch| ch == '_' || ch.is_ascii_alphanumeric())
}

struct Lexer<'a> {
    s: Vec<char>,
    i: usize,
    line: usize,
    /// The newline that ended the previous command: counted when the next one is read, so an
    /// error about a command names the line it is on.
    pending_newline: bool,
    file: &'a str,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }
    fn err<T>(&self, msg: &str) -> Result<T> {
        bail!("{}: line {}: {msg}", self.file, self.line)
    }

    /// Read one command (a list of words up to a newline or `;`). `None` at end of input.
    fn command(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<Vec<String>>> {
        if std::mem::take(&mut self.pending_newline) {
            self.line += 1;
        }
        let mut words = Vec::new();
        loop {
            // skip blanks
            while matches!(self.peek(), Some(' ' | '\t')) {
                self.i += 1;
            }
            match self.peek() {
                None => return Ok(if words.is_empty() { None } else { Some(words) }),
                Some('\n') => {
                    self.i += 1;
                    if !words.is_empty() {
                        self.pending_newline = true;
                        return Ok(Some(words));
                    }
                    self.line += 1;
                }
                Some(';') => {
                    self.i += 1;
                    if !words.is_empty() {
                        return Ok(Some(words));
                    }
                }
                Some('#') => {
                    while !matches!(self.peek(), None | Some('\n')) {
                        self.i += 1;
                    }
                }
                Some(_) => words.push(self.word(lookup)?),
            }
        }
    }

    fn word(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
        let mut w = String::new();
        while let Some(c) = self.peek() {
            match c {
                ' ' | '\t' | '\n' | ';' => break,
                '\\' => {
                    self.i += 1;
                    match self.peek() {
                        Some('\n') => {
                            self.i += 1;
                            self.line += 1;
                        }
                        Some(n) => {
                            w.push(n);
                            self.i += 1;
                        }
                        None => {}
                    }
                }
                '\'' => {
                    self.i += 1;
                    loop {
                        match self.peek() {
                            None => return self.err("unterminated single quote"),
                            Some('\'') => {
                                self.i += 1;
                                break;
                            }
                            Some(ch) => {
                                if ch == '\n' {
                                    self.line += 1;
                                }
                                w.push(ch);
                                self.i += 1;
                            }
                        }
                    }
                }
                '"' => {
                    self.i += 1;
                    loop {
                        match self.peek() {
                            None => return self.err("unterminated double quote"),
                            Some('"') => {
                                self.i += 1;
                                break;
                            }
                            Some('\\') => {
                                self.i += 1;
                                match self.peek() {
                                    Some(n @ ('$' | '`' | '"' | '\\')) => {
                                        w.push(n);
                                        self.i += 1;
                                    }
                                    Some('\n') => {
                                        self.i += 1;
                                        self.line += 1;
                                    }
                                    _ => w.push('\\'),
                                }
                            }
                            Some('$') => w.push_str(&self.dollar(lookup)?),
                            Some('`') => {
                                return self
                                    .err("command substitution is not allowed in an env-file");
                            }
                            Some(ch) => {
                                if ch == '\n' {
                                    self.line += 1;
                                }
                                w.push(ch);
                                self.i += 1;
                            }
                        }
                    }
                }
                '$' => w.push_str(&self.dollar(lookup)?),
                '`' => return self.err("command substitution is not allowed in an env-file"),
                '|' | '&' | '<' | '>' | '(' | ')' => {
                    return self.err(&format!(
                        "'{c}' is not allowed in an env-file (only assignments)"
                    ));
                }
                _ => {
                    w.push(c);
                    self.i += 1;
                }
            }
        }
        Ok(w)
    }

    /// Expand a `$...` at the cursor.
    fn dollar(&mut self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
        self.i += 1; // '$'
        match self.peek() {
            Some('(') => self.err("command substitution is not allowed in an env-file"),
            Some('{') => {
                self.i += 1;
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c == '_' || c.is_ascii_alphanumeric())
                {
                    self.i += 1;
                }
                let name: String = self.s[start..self.i].iter().collect();
                if name.is_empty() {
                    return self.err("bad substitution");
                }
                let value = lookup(&name);
                let (colon, op) = match (self.peek(), self.s.get(self.i + 1).copied()) {
                    (Some('}'), _) => {
                        self.i += 1;
                        return Ok(value.unwrap_or_default());
                    }
                    (Some(':'), Some(op @ ('-' | '+' | '='))) => {
                        self.i += 2;
                        (true, op)
                    }
                    (Some(op @ ('-' | '+' | '=')), _) => {
                        self.i += 1;
                        (false, op)
                    }
                    _ => return self.err("bad substitution"),
                };
                // The word up to the matching brace (no nesting beyond `$VAR` inside).
                let mut arg = String::new();
                loop {
                    match self.peek() {
                        None => return self.err("missing '}'"),
                        Some('}') => {
                            self.i += 1;
                            break;
                        }
                        Some('$') => arg.push_str(&self.dollar(lookup)?),
                        Some(c) => {
                            arg.push(c);
                            self.i += 1;
                        }
                    }
                }
                let set = match &value {
                    Some(v) => !(colon && v.is_empty()),
                    None => false,
                };
                Ok(match op {
                    '+' => {
                        if set {
                            arg
                        } else {
                            String::new()
                        }
                    }
                    _ => {
                        if set {
                            value.unwrap_or_default()
                        } else {
                            arg
                        }
                    }
                })
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let start = self.i;
                while self
                    .peek()
                    .is_some_and(|c| c == '_' || c.is_ascii_alphanumeric())
                {
                    self.i += 1;
                }
                let name: String = self.s[start..self.i].iter().collect();
                Ok(lookup(&name).unwrap_or_default())
            }
            _ => Ok("$".to_string()),
        }
    }
}

/// Everything the environment depends on.
pub struct EnvInputs<'a> {
    pub image_env: &'a [String],
    /// The host environment, in order.
    pub host_env: &'a [(String, String)],
    pub image_ref: &'a str,
    /// Evaluated env-files, each in file order, files in command-line order.
    pub env_files: &'a [Vec<(String, String)>],
    /// `--env` pairs in command-line order.
    pub env_opts: &'a [(String, String)],
    /// `HOME=<home dest>`, unless the image declares USER (then `None`).
    pub home: Option<&'a str>,
    /// HOME of an image USER (from the container's passwd), used only when nothing else set it.
    pub user_home: Option<&'a str>,
    pub no_compat: bool,
    pub cleanenv: bool,
    /// A Singularity-built image (native SIF, sandbox): its `/.singularity.d/env` scripts
    /// build PATH and LD_LIBRARY_PATH, and the user's variables are applied again after them
    /// (`singularity_d`).
    pub native: bool,
    /// `--no-eval`: with `--no-compat`, a native image's user values are not evaluated.
    pub no_eval: bool,
}

/// Build `process.env` (pure).
pub fn build(i: &EnvInputs, warn: &mut dyn FnMut(String)) -> Vec<String> {
    // 1..5: the user map in ascending priority.
    let mut user = EnvList::default();
    user.set("SINGULARITY_CONTAINER", i.image_ref);
    user.set("SINGULARITY_NAME", i.image_ref);
    for (k, v) in common::userenv::prefixed(i.host_env, warn) {
        user.set(&k, &v);
    }
    for file in i.env_files {
        for (k, v) in file {
            user.set(k, v);
        }
    }
    for (k, v) in i.env_opts {
        user.set(k, v);
    }
    if let Some(h) = i.home {
        user.set("HOME", h);
    }

    // The image env, with PATH and LD_LIBRARY_PATH set aside.
    let mut env = EnvList::default();
    for e in i.image_env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        env.set(k, v);
    }
    let image_path = env.get("PATH").map(str::to_string);
    let image_ld = env.get("LD_LIBRARY_PATH").map(str::to_string);
    let mut user_path = None;
    let mut user_ld = None;
    let mut append = None;
    let mut prepend = None;
    for (k, v) in &user.0 {
        match k.as_str() {
            "PATH" => user_path = Some(v.clone()),
            "LD_LIBRARY_PATH" => user_ld = Some(v.clone()),
            "APPEND_PATH" => append = Some(v.clone()),
            "PREPEND_PATH" => prepend = Some(v.clone()),
            _ => env.set(k, v),
        }
    }
    if i.native {
        crate::singularity_d::native_env(
            &mut env,
            &user,
            user_path,
            append,
            prepend,
            user_ld,
            i.no_compat && !i.no_eval,
        );
        // The host's variables are exported by the action script after the image's scripts
        // and the user's variables, only where those left them unset (SingularityCE's
        // `98-singularityenv.sh`), not given to the process from the start.
        let held: Vec<String> = i
            .host_env
            .iter()
            .filter(|(k, _)| host_var_passes(i, k) && !env.contains(k))
            .map(|(k, _)| k.clone())
            .collect();
        pass_host_vars(&mut env, i);
        crate::singularity_d::hold_host_vars(&mut env, held.iter().map(String::as_str));
        return env.to_strings();
    }
    let mut path = user_path
        .or(image_path)
        .unwrap_or_else(|| DEFAULT_PATH.to_string());
    if let Some(a) = append {
        path = format!("{}:{a}", path.trim_end_matches(':'));
    }
    if let Some(p) = prepend {
        path = format!("{p}:{path}");
    }
    env.set("PATH", &path);
    let ld = match user_ld.or(image_ld).filter(|v| !v.is_empty()) {
        Some(v) if v.split(':').any(|d| d == LIBS_DIR) => v,
        Some(v) => format!("{v}:{LIBS_DIR}"),
        None => LIBS_DIR.to_string(),
    };
    env.set("LD_LIBRARY_PATH", &ld);
    pass_host_vars(&mut env, i);
    env.to_strings()
}

/// Host variables, only where neither the image nor the user set them; HOME of an image USER.
fn pass_host_vars(env: &mut EnvList, i: &EnvInputs) {
    for (k, v) in i.host_env {
        if host_var_passes(i, k) && !env.contains(k) {
            env.set(k, v);
        }
    }
    if let Some(h) = i.user_home.filter(|_| !env.contains("HOME")) {
        env.set("HOME", h);
    }
}

/// Whether host variable `k` passes in the mode `i` asks for.
fn host_var_passes(i: &EnvInputs, k: &str) -> bool {
    if i.no_compat && !i.cleanenv {
        host_var_passes_no_compat(k)
    } else {
        COMPAT_PASSTHROUGH.contains(&k) || crate::launch::is_wiring_var(k)
    }
}

/// `--no-compat` passes the host environment, except what belongs to the launcher. Unlike
/// SingularityCE, which passes everything, its own `SINGULARITY_*`/`APPTAINER_*` settings and
/// the internal `_SINGULARITY_*`/`_CONTAINERS_ROOTLESS_*` markers are not passed either: they
/// describe the launcher's host side, and a nested launcher would misread them.
fn host_var_passes_no_compat(k: &str) -> bool {
    !(k.starts_with("SINGULARITYENV_")
        || k.starts_with("APPTAINERENV_")
        || k.starts_with("SINGULARITY_")
        || k.starts_with("APPTAINER_")
        || k.starts_with("_SINGULARITY_")
        || k.starts_with("_CONTAINERS_ROOTLESS_")
        || matches!(k, "HOME" | "PATH" | "LD_LIBRARY_PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base<'a>(host: &'a [(String, String)], image: &'a [String]) -> EnvInputs<'a> {
        EnvInputs {
            image_env: image,
            host_env: host,
            image_ref: "oci:/img:latest",
            env_files: &[],
            env_opts: &[],
            home: Some("/home/u"),
            user_home: None,
            no_compat: false,
            cleanenv: false,
            native: false,
            no_eval: false,
        }
    }

    fn get<'a>(env: &'a [String], k: &str) -> Option<&'a str> {
        env.iter().find_map(|e| e.strip_prefix(&format!("{k}=")))
    }

    fn build_q(i: &EnvInputs) -> Vec<String> {
        build(i, &mut |_| {})
    }

    #[test]
    fn defaults() {
        let host = kv(&[("TERM", "xterm"), ("FOO", "bar"), ("http_proxy", "p")]);
        let e = build_q(&base(&host, &[]));
        assert_eq!(get(&e, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&e, "LD_LIBRARY_PATH"), Some(LIBS_DIR));
        assert_eq!(get(&e, "TERM"), Some("xterm"));
        assert_eq!(get(&e, "http_proxy"), Some("p"));
        assert_eq!(get(&e, "FOO"), None);
        assert_eq!(get(&e, "HOME"), Some("/home/u"));
        assert_eq!(get(&e, "SINGULARITY_NAME"), Some("oci:/img:latest"));
        assert_eq!(get(&e, "SINGULARITY_CONTAINER"), Some("oci:/img:latest"));
    }

    #[test]
    fn precedence_env_beats_files_beats_singularityenv_beats_apptainerenv() {
        let host = kv(&[
            ("APPTAINERENV_A", "apptainer"),
            ("APPTAINERENV_B", "apptainer"),
            ("SINGULARITYENV_B", "singularity"),
            ("SINGULARITYENV_C", "singularity"),
            ("SINGULARITYENV_D", "singularity"),
            ("CGO_ENABLED", "1"),
        ]);
        let image = vec!["CGO_ENABLED=0".to_string()];
        let files = vec![kv(&[("D", "file1"), ("E", "file1")]), kv(&[("E", "file2")])];
        let opts = kv(&[("D", "opt")]);
        let mut i = base(&host, &image);
        i.env_files = &files;
        i.env_opts = &opts;
        let e = build_q(&i);
        assert_eq!(get(&e, "A"), Some("apptainer"));
        assert_eq!(get(&e, "B"), Some("singularity"));
        assert_eq!(get(&e, "C"), Some("singularity"));
        assert_eq!(get(&e, "D"), Some("opt"));
        assert_eq!(get(&e, "E"), Some("file2"));
        // A plain host variable never overrides the image.
        assert_eq!(get(&e, "CGO_ENABLED"), Some("0"));
    }

    #[test]
    fn path_rules() {
        let host = kv(&[("SINGULARITYENV_APPEND_PATH", "/foo")]);
        let e = build_q(&base(&host, &[]));
        assert_eq!(get(&e, "PATH").unwrap(), format!("{DEFAULT_PATH}:/foo"));
        let host = kv(&[("SINGULARITYENV_PREPEND_PATH", "/foo")]);
        let e = build_q(&base(&host, &[]));
        assert_eq!(get(&e, "PATH").unwrap(), format!("/foo:{DEFAULT_PATH}"));
        let host = kv(&[("SINGULARITYENV_PATH", "/usr/bin:/bin,")]);
        let e = build_q(&base(&host, &["PATH=/img".into()]));
        assert_eq!(get(&e, "PATH"), Some("/usr/bin:/bin,"));
        let e = build_q(&base(&[], &["PATH=/img:".into()]));
        assert_eq!(get(&e, "PATH"), Some("/img:"));
        let opts = kv(&[("APPEND_PATH", "/x")]);
        let image = vec!["PATH=/img:".to_string()];
        let mut i = base(&[], &image);
        i.env_opts = &opts;
        assert_eq!(get(&build_q(&i), "PATH"), Some("/img:/x"));
    }

    #[test]
    fn ld_library_path() {
        let opts = kv(&[("LD_LIBRARY_PATH", "/foo")]);
        let mut i = base(&[], &[]);
        i.env_opts = &opts;
        assert_eq!(
            get(&build_q(&i), "LD_LIBRARY_PATH"),
            Some("/foo:/.singularity.d/libs")
        );
        let image = vec![format!("LD_LIBRARY_PATH=/a:{LIBS_DIR}")];
        let e = build_q(&base(&[], &image));
        assert_eq!(
            get(&e, "LD_LIBRARY_PATH").unwrap(),
            format!("/a:{LIBS_DIR}")
        );
    }

    #[test]
    fn term_override() {
        let host = kv(&[("TERM", "xterm"), ("SINGULARITYENV_TERM", "vt100")]);
        assert_eq!(get(&build_q(&base(&host, &[])), "TERM"), Some("vt100"));
    }

    #[test]
    fn no_compat_host_env() {
        let host = kv(&[
            ("WHO", "ME"),
            ("SINGULARITY_BIND", "/x"),
            ("_CONTAINERS_ROOTLESS_UID", "1000"),
            ("HOME", "/home/host"),
            ("PATH", "/host/bin"),
        ]);
        let mut i = base(&host, &[]);
        i.no_compat = true;
        let e = build_q(&i);
        assert_eq!(get(&e, "WHO"), Some("ME"));
        assert_eq!(get(&e, "SINGULARITY_BIND"), None);
        assert_eq!(get(&e, "_CONTAINERS_ROOTLESS_UID"), None);
        assert_eq!(get(&e, "HOME"), Some("/home/u"));
        assert_eq!(get(&e, "PATH"), Some(DEFAULT_PATH));
        i.cleanenv = true;
        assert_eq!(get(&build_q(&i), "WHO"), None);
    }

    /// A Singularity-built image gets the passing host variables named for the action script
    /// to hold back; what the user sets is not among them.
    #[test]
    fn native_images_hold_the_host_variables_back() {
        let host = kv(&[
            ("WHO", "ME"),
            ("TERM", "xterm"),
            ("SINGULARITYENV_TERM", "vt100"),
            ("BASH_FUNC_ml%%", "() { :; }"),
        ]);
        let mut i = base(&host, &[]);
        i.native = true;
        i.no_compat = true;
        let e = build_q(&i);
        assert_eq!(get(&e, "WHO"), Some("ME"));
        assert_eq!(get(&e, "TERM"), Some("vt100"));
        assert_eq!(get(&e, crate::singularity_d::HOST_ENV_KEYS), Some("WHO"));
        i.no_compat = false;
        assert_eq!(get(&build_q(&i), crate::singularity_d::HOST_ENV_KEYS), None);
    }

    #[test]
    fn compat_passes_job_wiring() {
        let host = kv(&[
            ("SLURM_PROCID", "2"),
            ("PMIX_RANK", "2"),
            ("OMPI_MCA_x", "y"),
            ("WHO", "ME"),
        ]);
        let image = vec!["OMPI_MCA_x=image".to_string()];
        let e = build_q(&base(&host, &image));
        assert_eq!(get(&e, "SLURM_PROCID"), Some("2"));
        assert_eq!(get(&e, "PMIX_RANK"), Some("2"));
        assert_eq!(get(&e, "OMPI_MCA_x"), Some("image"));
        assert_eq!(get(&e, "WHO"), None);
    }

    #[test]
    fn user_image_home() {
        let mut i = base(&[], &[]);
        i.home = None;
        i.user_home = Some("/home/testuser");
        assert_eq!(get(&build_q(&i), "HOME"), Some("/home/testuser"));
        let image = vec!["HOME=/img".to_string()];
        let mut i = base(&[], &image);
        i.home = None;
        i.user_home = Some("/home/testuser");
        assert_eq!(get(&build_q(&i), "HOME"), Some("/img"));
    }

    #[test]
    fn env_option_forms() {
        assert_eq!(parse_env_option("A=1").unwrap(), kv(&[("A", "1")]));
        assert_eq!(parse_env_option("A=1,2").unwrap(), kv(&[("A", "1,2")]));
        assert_eq!(
            parse_env_option("A=1,B=2").unwrap(),
            kv(&[("A", "1"), ("B", "2")])
        );
        assert_eq!(parse_env_option("A=").unwrap(), kv(&[("A", "")]));
        assert_eq!(parse_env_option("A=x\ny").unwrap(), kv(&[("A", "x\ny")]));
        assert!(parse_env_option("novalue").is_err());
    }

    #[test]
    fn env_file_errors_name_the_line_they_are_on() {
        let none = |_: &str| None;
        for (text, line) in [
            ("A=1\nB=2\nnot-an-assignment\nC=3\n", 3),
            ("\n\nA=1\n1X=2\n", 4),
            ("A=1; B=2\nC=3 oops\n", 2),
        ] {
            let e = eval_env_file(text, "f", &none).unwrap_err().to_string();
            assert!(e.contains(&format!("f: line {line}:")), "{text:?}: {e}");
        }
    }

    #[test]
    fn env_file_shell_rules() {
        let host = |k: &str| match k {
            "YOU" => Some("host-you".to_string()),
            _ => None,
        };
        let text = "# comment\nexport A=1\nHELLO=$YOU\nB=\"x ${A}y\" C='lit $A'\nD=${NOPE:-def}\nE=$NOPE\nF=a\\ b\nHOME=/nope\n";
        let v = eval_env_file(text, "f", &host).unwrap();
        assert_eq!(
            v,
            kv(&[
                ("A", "1"),
                ("HELLO", "host-you"),
                ("B", "x 1y"),
                ("C", "lit $A"),
                ("D", "def"),
                ("E", ""),
                ("F", "a b"),
            ])
        );
        assert!(eval_env_file("A=$(id -u)\n", "f", &host).is_err());
        assert!(eval_env_file("echo hi\n", "f", &host).is_err());
        assert!(eval_env_file("A='x\n", "f", &host).is_err());
    }
}
