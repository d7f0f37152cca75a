//! Ansible Vault from the command line: a vaulted connection setting is decrypted with the
//! password (file, script, ANSIBLE_VAULT_PASSWORD_FILE, --ask-vault-pass) and refused with a
//! clear message without it; a vaulted become password never shows up anywhere.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "fixture-password";
/// What ansible_become_password decrypts to: it must never be printed.
const BECOME_PASSWORD: &str = "become-secret";

/// group_vars/all.yml: `ansible_user` ("deploy") and `ansible_become_password` vaulted with
/// PASSWORD by ansible-vault encrypt_string.
const VAULTED_VARS: &str = "ansible_user: !vault |
  $ANSIBLE_VAULT;1.1;AES256
  61353438303261383634333665366364313534346330636433613636333536393332386336353561
  3864666636323432653664613430383930656265653365660a616361653966343235663763656263
  63366361333031613331393739656131323331353665353736326566666563343066376530643231
  3231396361303764340a613134376362653262643036396639653034613564303930646665376235
  3562
ansible_become: true
ansible_become_password: !vault |
  $ANSIBLE_VAULT;1.1;AES256
  32653136633363376461313762366336353863346433616665313965633931396361373464393666
  3166376437306530393266306139333564373632323037610a303461616538636334396535616538
  66653031613830386263393563303538393237356431633132333036373737613037626534373936
  6133393761326562360a316437386331363436316566376533353762623366323365623630313364
  3838
";

/// An inventory whose one node is a loopback port that accepts TCP and never speaks SSH, so
/// `ping` fails after the connect timeout and prints the user it logged in as.
struct Setup {
    dir: tempfile::TempDir,
    _listener: TcpListener,
}

impl Setup {
    fn new() -> Setup {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "hosts.ini",
            &format!("[kube_node]\nnode1 ansible_host=127.0.0.1 ansible_port={port}\n"),
        );
        write("group_vars/all.yml", VAULTED_VARS);
        write("vault-password", &format!("{PASSWORD}\n"));
        Setup {
            dir,
            _listener: listener,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = crate::support::dropship();
        command
            .args(args)
            .arg("-i")
            .arg(self.path("hosts.ini"))
            .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
            .env_remove("SSH_AUTH_SOCK");
        command
    }

    fn ping(&self, extra: &[&str]) -> Output {
        let mut args = vec!["ping", "--connect-timeout", "1"];
        args.extend(extra);
        self.command(&args).output().unwrap()
    }
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

#[test]
fn a_vaulted_ansible_user_is_used_with_the_password_file() {
    let setup = Setup::new();
    let password_file = setup.path("vault-password");
    let out = setup.ping(&["--vault-password-file", password_file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("node1  FAILED  deploy@127.0.0.1"),
        "{}",
        text(&out)
    );
}

#[test]
fn without_a_password_a_vaulted_setting_is_a_clear_error() {
    let setup = Setup::new();
    let out = setup.ping(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = setup
        .dir
        .path()
        .canonicalize()
        .unwrap()
        .join("group_vars/all.yml");
    for part in [
        "host 'node1'",
        "ansible_user",
        &format!("encrypted with Ansible Vault in {}", file.display()),
        "--vault-password-file FILE",
        "--ask-vault-pass",
    ] {
        assert!(stderr.contains(part), "{part:?} missing: {stderr}");
    }
    // Nothing was attempted: no host line.
    assert!(out.stdout.is_empty(), "{}", text(&out));
}

#[test]
fn the_password_comes_from_the_environment_or_a_script() {
    let setup = Setup::new();
    let from_env = setup
        .command(&["ping", "--connect-timeout", "1"])
        .env("ANSIBLE_VAULT_PASSWORD_FILE", setup.path("vault-password"))
        .output()
        .unwrap();
    assert!(
        text(&from_env).contains("deploy@127.0.0.1"),
        "{}",
        text(&from_env)
    );
    let script = setup.path("vault-pass.sh");
    std::fs::write(&script, format!("#!/bin/sh\necho '{PASSWORD}'\n")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    let from_script = setup.ping(&["--vault-id", &format!("ops@{}", script.display())]);
    assert!(
        text(&from_script).contains("deploy@127.0.0.1"),
        "{}",
        text(&from_script)
    );
    let wrong = setup.path("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let out = setup.ping(&["--vault-password-file", wrong.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("HMAC mismatch: wrong vault password (tried vault id 'default')"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_vaulted_become_password_never_appears_in_any_output() {
    let setup = Setup::new();
    let password_file = setup.path("vault-password");
    let vault = ["--vault-password-file", password_file.to_str().unwrap()];
    let runs = [
        setup
            .command(&[&["inventory", "--list"][..], &vault].concat())
            .output()
            .unwrap(),
        setup
            .command(&[&["inventory", "--host", "node1"][..], &vault].concat())
            .output()
            .unwrap(),
        setup.ping(&[&vault[..], &["-vvv"]].concat()),
    ];
    for out in &runs {
        let all = text(out);
        assert!(!all.contains(BECOME_PASSWORD), "{all}");
        assert!(!all.contains(PASSWORD), "{all}");
    }
    // It stays as ansible-inventory shows it: the ciphertext.
    let host: serde_json::Value = serde_json::from_slice(&runs[1].stdout).unwrap();
    let shown = host["ansible_become_password"]["__ansible_vault"]
        .as_str()
        .unwrap();
    assert!(shown.starts_with("$ANSIBLE_VAULT;1.1;AES256\n"), "{host}");
    assert!(
        text(&runs[2]).contains("deploy@127.0.0.1"),
        "{}",
        text(&runs[2])
    );
}

/// `--ask-vault-pass` on a real terminal: util-linux `script` gives dropship a pseudo-terminal
/// whose input is this test's pipe; the password is typed once the prompt shows.
#[test]
fn ask_vault_pass_prompts_on_the_terminal_without_echo() {
    let inventory = crate::support::repo().join("tests/inventories/vault-files/hosts.ini");
    let command = format!(
        "{} inventory -i {} --host n1 --ask-vault-pass",
        env!("CARGO_BIN_EXE_dropship"),
        inventory.display()
    );
    let mut script = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env_remove("ANSIBLE_VAULT_PASSWORD_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("util-linux script(1)");
    let transcript = read_in_background(script.stdout.take().unwrap());
    let mut seen = String::new();
    wait_for(&transcript, &mut seen, "Vault password: ");
    let mut stdin = script.stdin.take().unwrap();
    writeln!(stdin, "{PASSWORD}").unwrap();
    let status = script.wait().unwrap();
    drop(stdin);
    wait_for(&transcript, &mut seen, "}");
    assert!(status.success(), "{seen}");
    assert!(seen.contains(r#""ansible_user": "ops""#), "{seen}");
    assert!(!seen.contains(PASSWORD), "the password was echoed: {seen}");
}

fn read_in_background(mut output: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = output.read(&mut buffer) {
            if n == 0 || send.send(buffer[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    receive
}

fn wait_for(transcript: &mpsc::Receiver<Vec<u8>>, seen: &mut String, wanted: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.contains(wanted) {
        let left = deadline.saturating_duration_since(Instant::now());
        match transcript.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(_) => panic!("no {wanted:?} on the terminal: {seen}"),
        }
    }
}
