//! Bad inventories: each refused with exit code 2 and a message naming the file (and line)
//! and what is wrong, never a panic.

use std::path::Path;

use crate::support::ansible::dropship;

struct BadInput {
    name: &'static str,
    files: &'static [(&'static str, &'static str)],
    /// Extra arguments after `inventory -i <first file>` (`{dir}` is the case directory).
    args: &'static [&'static str],
    /// Every one of these must appear in stderr (`{dir}` is the case directory).
    expect: &'static [&'static str],
}

/// "deploy", encrypted by ansible-vault with the password "fixture-password".
const VAULTED_DEPLOY: &str = "$ANSIBLE_VAULT;1.1;AES256
61353438303261383634333665366364313534346330636433613636333536393332386336353561
3864666636323432653664613430383930656265653365660a616361653966343235663763656263
63366361333031613331393739656131323331353665353736326566666563343066376530643231
3231396361303764340a613134376362653262643036396639653034613564303930646665376235
3562
";

const CASES: &[BadInput] = &[
    BadInput {
        name: "unknown section suffix",
        files: &[("hosts.ini", "[g]\nh1\n[g:bogus]\nx\n")],
        args: &["--list"],
        expect: &["{dir}/hosts.ini:3:", "unknown type: bogus"],
    },
    BadInput {
        name: "bad range widths",
        files: &[("hosts.ini", "[g]\nnode[01:100]\n")],
        args: &["--list"],
        expect: &["{dir}/hosts.ini:2:", "equal-length"],
    },
    BadInput {
        name: "backwards letter range",
        files: &[("hosts.ini", "[g]\n\nnode[z:a]\n")],
        args: &["--list"],
        expect: &["{dir}/hosts.ini:3:", "begin <= end"],
    },
    BadInput {
        name: "range without end",
        files: &[("hosts.yml", "all:\n  hosts:\n    node[1:]:\n")],
        args: &["--list"],
        expect: &["{dir}/hosts.yml", "must specify end value"],
    },
    BadInput {
        name: "vars for an undefined group",
        files: &[("hosts.ini", "[g]\nh1\n\n[ghost:vars]\nx=1\n")],
        args: &["--list"],
        expect: &[
            "{dir}/hosts.ini:4:",
            "[ghost:vars] not valid for undefined group 'ghost'",
        ],
    },
    BadInput {
        name: "children naming an undefined group",
        files: &[("hosts.ini", "[parent:children]\nmissing\n")],
        args: &["--list"],
        expect: &["{dir}/hosts.ini:2:", "includes undefined group 'missing'"],
    },
    BadInput {
        name: "section with spaces",
        files: &[("hosts.ini", "[my group]\nh1\n")],
        args: &["--list"],
        expect: &["{dir}/hosts.ini:1:", "Invalid section entry"],
    },
    BadInput {
        name: "unclosed quote on a host line",
        files: &[("hosts.ini", "[g]\nh1 a='x\n")],
        args: &["--list"],
        expect: &["{dir}/hosts.ini:2:", "No closing quotation"],
    },
    BadInput {
        name: "vault-encrypted group_vars file without a password",
        files: &[
            ("hosts.ini", "[g]\nh1\n"),
            ("group_vars/all.yml", VAULTED_DEPLOY),
        ],
        args: &["--list"],
        expect: &[
            "{dir}/group_vars/all.yml: encrypted with Ansible Vault",
            "no vault password given",
            "--vault-password-file",
        ],
    },
    BadInput {
        name: "vault-encrypted inventory without a password",
        files: &[("hosts.yml", VAULTED_DEPLOY)],
        args: &["--list"],
        expect: &[
            "{dir}/hosts.yml: encrypted with Ansible Vault",
            "--vault-password-file",
        ],
    },
    BadInput {
        name: "wrong vault password",
        files: &[
            ("hosts.ini", "[g]\nh1\n"),
            ("group_vars/all.yml", VAULTED_DEPLOY),
            ("wrong-password", "not-the-password\n"),
        ],
        args: &["--list", "--vault-password-file", "{dir}/wrong-password"],
        expect: &[
            "{dir}/group_vars/all.yml: encrypted with Ansible Vault",
            "HMAC mismatch: wrong vault password (tried vault id 'default')",
        ],
    },
    BadInput {
        name: "missing vault password file",
        files: &[("hosts.ini", "[g]\nh1\n")],
        args: &["--list", "--vault-id", "prod@{dir}/absent"],
        expect: &["vault password from file {dir}/absent", "No such file"],
    },
    BadInput {
        name: "inline !vault tag on a number",
        files: &[
            ("hosts.ini", "[g]\nh1\n"),
            ("host_vars/h1.yml", "ok: 1\nsecret: !vault 12\n"),
        ],
        args: &["--list"],
        expect: &[
            "{dir}/host_vars/h1.yml:2:",
            "the '!vault' tag requires a string value",
        ],
    },
    BadInput {
        name: "unparsable YAML inventory",
        files: &[(
            "hosts.yml",
            "all:\n  hosts:\n    h1: {a: 1\n  children: x\n",
        )],
        args: &["--list"],
        expect: &["{dir}/hosts.yml:"],
    },
    BadInput {
        name: "unparsable YAML group_vars",
        files: &[
            ("hosts.ini", "[g]\nh1\n"),
            ("group_vars/g.yml", "a: 1\nb: [1, 2\nc: 3\n"),
        ],
        args: &["--list"],
        expect: &["{dir}/group_vars/g.yml:"],
    },
    BadInput {
        name: "group_vars that are not a mapping",
        files: &[
            ("hosts.ini", "[g]\nh1\n"),
            ("group_vars/g.yml", "- a\n- b\n"),
        ],
        args: &["--list"],
        expect: &["{dir}/group_vars/g.yml", "mapping"],
    },
    BadInput {
        name: "YAML inventory that is a list",
        files: &[("hosts.yml", "- a\n- b\n")],
        args: &["--list"],
        expect: &["{dir}/hosts.yml", "should be a dictionary"],
    },
    BadInput {
        name: "YAML children entry that is not a group",
        files: &[("hosts.yml", "all:\n  children:\n    bad: [1, 2]\n")],
        args: &["--list"],
        expect: &["{dir}/hosts.yml", "bad is not a known host nor group"],
    },
    BadInput {
        name: "missing inventory file",
        files: &[],
        args: &["--list"],
        expect: &["{dir}/absent.ini", "does not exist"],
    },
    BadInput {
        name: "unknown host for --host",
        files: &[("hosts.ini", "[g]\nh1\n")],
        args: &["--host", "nosuch"],
        expect: &["nosuch", "matches no host or group"],
    },
    BadInput {
        name: "unknown group for --graph",
        files: &[("hosts.ini", "[g]\nh1\n")],
        args: &["--graph", "nosuch"],
        expect: &["nosuch", "valid group name"],
    },
    BadInput {
        name: "limit naming an unknown group",
        files: &[("hosts.ini", "[g]\nh1\n")],
        args: &["--list", "-l", "g:!typo"],
        expect: &["typo", "matches no host or group"],
    },
    BadInput {
        name: "subscript past the end",
        files: &[("hosts.ini", "[g]\nh1\n")],
        args: &["--list", "-l", "g[5]"],
        expect: &["g[5]", "No hosts matched"],
    },
];

fn run_case(case: &BadInput) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in case.files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let first = case.files.first().map_or("absent.ini", |(name, _)| name);
    let mut args = vec![
        "inventory".to_string(),
        "-i".into(),
        dir.path().join(first).display().to_string(),
    ];
    let dir_text = dir.path().display().to_string();
    args.extend(case.args.iter().map(|a| a.replace("{dir}", &dir_text)));
    let out = dropship(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let missing: Vec<String> = case
        .expect
        .iter()
        .map(|e| e.replace("{dir}", &dir_text))
        .filter(|e| !stderr.contains(e.as_str()))
        .collect();
    if out.status.code() != Some(2) || !missing.is_empty() || stderr.contains("panicked") {
        return Err(format!(
            "{}: exit {:?}, missing {missing:?} in stderr:\n{stderr}",
            case.name,
            out.status.code()
        ));
    }
    Ok(())
}

#[test]
fn bad_inventories_exit_2_with_file_line_and_cause() {
    let failures: Vec<String> = crate::support::ansible::parallel_map(CASES, run_case)
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn no_inventory_is_a_usage_error() {
    let out = dropship(&["inventory".to_string(), "--list".to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-i PATH"));
}

#[test]
fn executable_inventory_scripts_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("inventory.py");
    std::fs::write(&script, "#!/bin/sh\necho '{}'\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dropship(&[
        "inventory".into(),
        "-i".into(),
        script.display().to_string(),
        "--list".into(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&script.display().to_string()) && stderr.contains("not supported"),
        "{stderr}"
    );
    assert!(Path::new(&script).exists());
}
