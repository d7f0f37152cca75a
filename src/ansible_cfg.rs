//! The settings dropship takes from Ansible's configuration, found and read as ansible-core
//! 2.19 does: the first of `$ANSIBLE_CONFIG` (a file, or a directory holding `ansible.cfg`),
//! `./ansible.cfg` (skipped, with Ansible's warning, when the directory is world-writable),
//! `~/.ansible.cfg`, `/etc/ansible/ansible.cfg`; each `ANSIBLE_*` variable over the file.
//!
//! Read: `[defaults] inventory, forks, remote_user, private_key_file, host_key_checking,
//! timeout, retry_files_enabled, retry_files_save_path` and `[ssh_connection] ssh_args` (and
//! the `[ssh_connection]` spellings of `host_key_checking` and `timeout`, which win over
//! `[defaults]` as in Ansible). Everything
//! else in the file is left alone. Hand-written: it must find the same file and read the same
//! values as Ansible's config manager (Python's configparser, raw values, `;` inline comments).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A value that cannot be used, named after where it was read.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct AnsibleCfgError {
    /// `path:line`, or the environment variable.
    pub origin: String,
    pub message: String,
}

/// A value and where it came from (`ANSIBLE_FORKS`, or the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromCfg<T> {
    pub value: T,
    pub origin: String,
}

/// What was found; `None` where neither the file nor the environment sets a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnsibleCfg {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// `inventory` / `ANSIBLE_INVENTORY`: comma-separated, relative to the file's directory.
    pub inventory: Option<FromCfg<Vec<PathBuf>>>,
    pub forks: Option<FromCfg<u64>>,
    pub remote_user: Option<FromCfg<String>>,
    pub private_key_file: Option<FromCfg<PathBuf>>,
    pub host_key_checking: Option<FromCfg<bool>>,
    pub timeout: Option<FromCfg<u64>>,
    pub ssh_args: Option<FromCfg<String>>,
    /// `retry_files_enabled` / `ANSIBLE_RETRY_FILES_ENABLED`.
    pub retry_files_enabled: Option<FromCfg<bool>>,
    /// `retry_files_save_path` / `ANSIBLE_RETRY_FILES_SAVE_PATH`, relative ones resolved
    /// as for `inventory`.
    pub retry_files_save_path: Option<FromCfg<PathBuf>>,
}

/// Where to look, given as values so tests need not touch the process's environment.
pub struct Environment<'a> {
    pub var: &'a dyn Fn(&str) -> Option<String>,
    pub cwd: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl Environment<'_> {
    fn var(&self, name: &str) -> Option<String> {
        (self.var)(name)
    }
}

impl AnsibleCfg {
    /// From the process's environment and working directory.
    pub fn load() -> Result<AnsibleCfg, AnsibleCfgError> {
        let var = |name: &str| std::env::var(name).ok();
        AnsibleCfg::load_from(&Environment {
            var: &var,
            cwd: std::env::current_dir().ok(),
            home: dirs::home_dir(),
        })
    }

    pub fn load_from(env: &Environment) -> Result<AnsibleCfg, AnsibleCfgError> {
        let file = find(env);
        let ini = match &file {
            Some(path) => Ini::read(path)?,
            None => Ini::default(),
        };
        let base = file
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .or_else(|| env.cwd.clone())
            .unwrap_or_default();
        let cwd = env.cwd.clone().unwrap_or_default();
        let text = |vars: &[&str], keys: &[(&str, &str)]| lookup(env, &ini, vars, keys);
        let mut cfg = AnsibleCfg {
            file,
            ..AnsibleCfg::default()
        };
        // Relative paths are read against the file's directory, or the working directory
        // for a variable (Ansible's `type: path`).
        let dir_for = |from_env: bool| if from_env { &cwd } else { &base };
        if let Some((value, origin, from_env)) =
            text(&["ANSIBLE_INVENTORY"], &[("defaults", "inventory")])
        {
            let paths = value
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| resolve_path(p, dir_for(from_env), env))
                .collect();
            cfg.inventory = Some(FromCfg {
                value: paths,
                origin,
            });
        }
        cfg.forks = integer(text(&["ANSIBLE_FORKS"], &[("defaults", "forks")]))?;
        cfg.timeout = integer(text(
            &["ANSIBLE_TIMEOUT", "ANSIBLE_SSH_TIMEOUT"],
            &[("defaults", "timeout"), ("ssh_connection", "timeout")],
        ))?;
        cfg.remote_user = text(&["ANSIBLE_REMOTE_USER"], &[("defaults", "remote_user")])
            .map(|(value, origin, _)| FromCfg { value, origin });
        cfg.private_key_file = text(
            &["ANSIBLE_PRIVATE_KEY_FILE"],
            &[("defaults", "private_key_file")],
        )
        .map(|(value, origin, _)| FromCfg {
            value: crate::inventory::host_vars::expand_home(&value),
            origin,
        });
        cfg.host_key_checking = text(
            &["ANSIBLE_HOST_KEY_CHECKING", "ANSIBLE_SSH_HOST_KEY_CHECKING"],
            &[
                ("defaults", "host_key_checking"),
                ("ssh_connection", "host_key_checking"),
            ],
        )
        .map(boolean);
        cfg.ssh_args = text(&["ANSIBLE_SSH_ARGS"], &[("ssh_connection", "ssh_args")])
            .map(|(value, origin, _)| FromCfg { value, origin });
        cfg.retry_files_enabled = text(
            &["ANSIBLE_RETRY_FILES_ENABLED"],
            &[("defaults", "retry_files_enabled")],
        )
        .map(boolean);
        cfg.retry_files_save_path = text(
            &["ANSIBLE_RETRY_FILES_SAVE_PATH"],
            &[("defaults", "retry_files_save_path")],
        )
        .map(|(value, origin, from_env)| FromCfg {
            value: resolve_path(value.trim(), dir_for(from_env), env),
            origin,
        });
        Ok(cfg)
    }
}

/// Ansible's `find_ini_config_file`.
fn find(env: &Environment) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = env.var("ANSIBLE_CONFIG") {
        let path = expand(&path, env);
        candidates.push(if path.is_dir() {
            path.join("ansible.cfg")
        } else {
            path
        });
    }
    if let Some(cwd) = &env.cwd {
        let in_cwd = cwd.join("ansible.cfg");
        if world_writable(cwd) {
            // Ansible still looks, to say why it is skipped (unless ANSIBLE_CONFIG named one).
            if in_cwd.exists() {
                crate::logging::warn_once(format!(
                    "Ansible is being run in a world writable directory ({}), ignoring it as an \
                     ansible.cfg source.",
                    cwd.display()
                ));
            }
        } else {
            candidates.push(in_cwd);
        }
    }
    if let Some(home) = &env.home {
        candidates.push(home.join(".ansible.cfg"));
    }
    candidates.push(PathBuf::from("/etc/ansible/ansible.cfg"));
    candidates
        .into_iter()
        .find(|path| std::fs::File::open(path).is_ok())
}

#[cfg(unix)]
fn world_writable(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o002 != 0)
}

#[cfg(not(unix))]
fn world_writable(_dir: &Path) -> bool {
    false
}

/// The last set of `vars`, else the last set of the file's `keys` (Ansible's loop over its
/// entries keeps the last one found): value, origin, and whether it came from the environment.
fn lookup(
    env: &Environment,
    ini: &Ini,
    vars: &[&str],
    keys: &[(&str, &str)],
) -> Option<(String, String, bool)> {
    if let Some((name, value)) = vars
        .iter()
        .filter_map(|name| env.var(name).map(|v| (*name, v)))
        .next_back()
    {
        return Some((value, name.to_string(), true));
    }
    keys.iter()
        .filter_map(|(section, key)| ini.get(section, key))
        .next_back()
        .map(|(value, origin)| (value, origin, false))
}

/// Ansible's `boolean(value, strict=False)`: what is not a true spelling is false.
fn boolean((value, origin, _): (String, String, bool)) -> FromCfg<bool> {
    FromCfg {
        value: matches!(
            value.trim().to_ascii_lowercase().as_str(),
            "y" | "yes" | "on" | "1" | "true" | "t" | "1.0"
        ),
        origin,
    }
}

fn integer(found: Option<(String, String, bool)>) -> Result<Option<FromCfg<u64>>, AnsibleCfgError> {
    let Some((value, origin, _)) = found else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(n) => Ok(Some(FromCfg { value: n, origin })),
        Err(_) => Err(AnsibleCfgError {
            origin,
            message: format!("'{value}' is not a whole number"),
        }),
    }
}

/// `~` and `$VAR` expanded, absolute (Ansible's `unfrackpath`, without resolving links).
fn expand(path: &str, env: &Environment) -> PathBuf {
    let mut text = String::new();
    let mut rest = path;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = match after.strip_prefix('{').and_then(|a| a.split_once('}')) {
            Some((name, tail)) => (name, tail),
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        match env.var(name).filter(|_| !name.is_empty()) {
            Some(value) => text.push_str(&value),
            // Python's expandvars leaves unknown variables as written.
            None => text.push_str(&rest[at..rest.len() - tail.len()]),
        }
        rest = tail;
    }
    text.push_str(rest);
    let path = match (text.strip_prefix("~/"), &env.home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ if text == "~" => env.home.clone().unwrap_or_default(),
        _ => PathBuf::from(text),
    };
    if path.is_absolute() {
        path
    } else {
        env.cwd.clone().unwrap_or_default().join(path)
    }
}

/// A config path, relative ones against `dir` (the file's directory, or the working directory
/// for an environment variable).
fn resolve_path(path: &str, dir: &Path, env: &Environment) -> PathBuf {
    let expanded = expand(
        path,
        &Environment {
            var: env.var,
            cwd: Some(dir.to_path_buf()),
            home: env.home.clone(),
        },
    );
    normalize(&expanded)
}

/// `a/./b/../c` → `a/c`, as `os.path.normpath`.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The sections and keys of an ini file as Python's configparser reads them (raw values:
/// Ansible reads with `raw=True`): `key = value` or `key: value`, keys lowercased, comment lines
/// `#`/`;`, `;` inline comments after whitespace, indented continuation lines.
#[derive(Debug, Default)]
struct Ini {
    path: PathBuf,
    values: HashMap<(String, String), (String, usize)>,
}

impl Ini {
    fn read(path: &Path) -> Result<Ini, AnsibleCfgError> {
        let text = std::fs::read_to_string(path).map_err(|e| AnsibleCfgError {
            origin: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        let mut ini = Ini {
            path: path.to_path_buf(),
            values: HashMap::new(),
        };
        let error = |line: usize, message: &str| AnsibleCfgError {
            origin: format!("{}:{line}", path.display()),
            message: message.to_string(),
        };
        let mut section: Option<String> = None;
        let mut last: Option<(String, String)> = None;
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            let line = strip_inline_comment(raw);
            let trimmed = line.trim();
            if trimmed.is_empty() || raw.trim_start().starts_with(['#', ';']) {
                // configparser ends a multi-line value at an empty line only when the value is
                // followed by a non-indented line; keeping it simple: blank lines end it.
                if trimmed.is_empty() {
                    last = None;
                }
                continue;
            }
            let indented = raw.starts_with([' ', '\t']);
            if indented && let Some(key) = &last {
                let entry = ini.values.get_mut(key).expect("the last key was stored");
                entry.0.push('\n');
                entry.0.push_str(trimmed);
                continue;
            }
            if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                section = Some(name.to_string());
                last = None;
                continue;
            }
            let Some(at) = trimmed.find(['=', ':']) else {
                return Err(error(number, "not a `key = value` line"));
            };
            let Some(section) = &section else {
                return Err(error(number, "a value before any [section]"));
            };
            let key = trimmed[..at].trim().to_ascii_lowercase();
            let value = trimmed[at + 1..].trim().to_string();
            let slot = (section.clone(), key.clone());
            if ini.values.insert(slot.clone(), (value, number)).is_some() {
                // configparser is strict: a duplicate key makes the file unreadable.
                return Err(error(
                    number,
                    &format!("option '{key}' in section '{section}' already exists"),
                ));
            }
            last = Some(slot);
        }
        Ok(ini)
    }

    fn get(&self, section: &str, key: &str) -> Option<(String, String)> {
        self.values
            .get(&(section.to_string(), key.to_string()))
            .map(|(value, line)| (value.clone(), format!("{}:{line}", self.path.display())))
    }
}

/// configparser's `inline_comment_prefixes=(';',)`: a `;` after whitespace starts a comment.
fn strip_inline_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b';' && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &Path, vars: &[(&str, &str)]) -> Result<AnsibleCfg, AnsibleCfgError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let var = move |name: &str| vars.get(name).cloned();
        AnsibleCfg::load_from(&Environment {
            var: &var,
            cwd: Some(dir.join("work")),
            home: Some(dir.join("home")),
        })
    }

    fn layout() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["work", "home", "elsewhere"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        dir
    }

    #[test]
    fn first_file_found_and_the_environment_over_it() {
        let dir = layout();
        let d = dir.path();
        std::fs::write(
            d.join("home/.ansible.cfg"),
            "[defaults]\nremote_user = fromhome\n",
        )
        .unwrap();
        assert_eq!(load(d, &[]).unwrap().remote_user.unwrap().value, "fromhome");
        std::fs::write(
            d.join("work/ansible.cfg"),
            concat!(
                "# comment\n[defaults]\nremote_user = ops ; inline\ninventory = inv/hosts.ini, ../other\n",
                "forks: 25\nprivate_key_file = ~/.ssh/deploy\nhost_key_checking = False\ntimeout = 5\n",
                "[ssh_connection]\nssh_args = -o ControlMaster=auto\n  -o ControlPersist=60s\ntimeout = 7\n",
            ),
        )
        .unwrap();
        let cfg = load(d, &[]).unwrap();
        let cfg_file = d.join("work/ansible.cfg");
        assert_eq!(cfg.file.as_deref(), Some(cfg_file.as_path()));
        let user = cfg.remote_user.unwrap();
        assert_eq!(user.value, "ops");
        assert_eq!(user.origin, format!("{}:3", cfg_file.display()));
        assert_eq!(
            cfg.inventory.unwrap().value,
            [d.join("work/inv/hosts.ini"), d.join("other")]
        );
        assert_eq!(cfg.forks.unwrap().value, 25);
        assert_eq!(
            cfg.private_key_file.unwrap().value,
            dirs::home_dir().unwrap().join(".ssh/deploy")
        );
        assert!(!cfg.host_key_checking.unwrap().value);
        assert_eq!(cfg.timeout.unwrap().value, 7, "[ssh_connection] wins");
        assert_eq!(
            cfg.ssh_args.unwrap().value,
            "-o ControlMaster=auto\n-o ControlPersist=60s"
        );
        let cfg = load(
            d,
            &[
                ("ANSIBLE_REMOTE_USER", "envuser"),
                ("ANSIBLE_INVENTORY", "a.ini,/abs/b"),
                ("ANSIBLE_TIMEOUT", "3"),
                ("ANSIBLE_SSH_TIMEOUT", "4"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.remote_user.unwrap().origin, "ANSIBLE_REMOTE_USER");
        assert_eq!(
            cfg.inventory.unwrap().value,
            [d.join("work/a.ini"), PathBuf::from("/abs/b")],
            "relative to the working directory"
        );
        assert_eq!(cfg.timeout.unwrap().value, 4);
        std::fs::write(d.join("elsewhere/ansible.cfg"), "[defaults]\nforks=2\n").unwrap();
        let elsewhere = d.join("elsewhere").display().to_string();
        let cfg = load(d, &[("ANSIBLE_CONFIG", &elsewhere)]).unwrap();
        assert_eq!(cfg.forks.unwrap().value, 2);
        assert_eq!(cfg.remote_user, None);
    }

    #[test]
    fn retry_file_settings_come_from_the_file_or_the_environment() {
        let dir = layout();
        let d = dir.path();
        std::fs::write(
            d.join("work/ansible.cfg"),
            "[defaults]\nretry_files_enabled = no\nretry_files_save_path = retries\n",
        )
        .unwrap();
        let cfg = load(d, &[]).unwrap();
        assert!(!cfg.retry_files_enabled.unwrap().value);
        assert_eq!(
            cfg.retry_files_save_path.unwrap().value,
            d.join("work/retries")
        );
        let cfg = load(
            d,
            &[
                ("ANSIBLE_RETRY_FILES_ENABLED", "True"),
                ("ANSIBLE_RETRY_FILES_SAVE_PATH", "~/r"),
            ],
        )
        .unwrap();
        let enabled = cfg.retry_files_enabled.unwrap();
        assert!(enabled.value);
        assert_eq!(enabled.origin, "ANSIBLE_RETRY_FILES_ENABLED");
        assert_eq!(cfg.retry_files_save_path.unwrap().value, d.join("home/r"));
    }

    #[cfg(unix)]
    #[test]
    fn a_world_writable_working_directory_is_skipped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = layout();
        let d = dir.path();
        std::fs::write(d.join("work/ansible.cfg"), "[defaults]\nforks=3\n").unwrap();
        std::fs::set_permissions(d.join("work"), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(load(d, &[]).unwrap(), AnsibleCfg::default());
        let named = d.join("work/ansible.cfg").display().to_string();
        let cfg = load(d, &[("ANSIBLE_CONFIG", &named)]).unwrap();
        assert_eq!(
            cfg.forks.unwrap().value,
            3,
            "unless ANSIBLE_CONFIG names it"
        );
    }

    #[test]
    fn bad_values_name_their_origin() {
        let dir = layout();
        let d = dir.path();
        std::fs::write(d.join("work/ansible.cfg"), "[defaults]\nforks = many\n").unwrap();
        let err = load(d, &[]).unwrap_err().to_string();
        assert!(
            err.ends_with("ansible.cfg:2: 'many' is not a whole number"),
            "{err}"
        );
        let err = load(d, &[("ANSIBLE_FORKS", "x")]).unwrap_err().to_string();
        assert_eq!(err, "ANSIBLE_FORKS: 'x' is not a whole number");
        std::fs::write(d.join("work/ansible.cfg"), "[defaults]\na=1\nA=2\n").unwrap();
        let err = load(d, &[]).unwrap_err().to_string();
        assert!(
            err.contains(":3: option 'a' in section 'defaults' already exists"),
            "{err}"
        );
    }
}
