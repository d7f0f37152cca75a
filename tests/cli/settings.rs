//! Where settings come from: the inventory, `-e`, `ansible.cfg` and its `ANSIBLE_*`
//! variables, `~/.ssh/config` and `-F`, the flags; read back from `-v` (which says where each
//! came from) against hosts on loopback ports nothing listens on, and end to end on the test
//! bed.

use super::{Sandbox, shown};

const INVENTORY: &str = "\
n1 ansible_host=127.0.0.1 ansible_port=1
n2 ansible_host=alias2
n3 ansible_host=127.0.0.3 ansible_user=invuser
";

/// `~/.ssh/config` with a Host alias and a wildcard block below it.
fn ssh_config(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.write("home/.ssh/id_test", "not read: nothing listens");
    sandbox.write(
        "home/.ssh/config",
        "Host alias2\n  HostName 127.0.0.2\n  Port 2\n  User sshuser\n  IdentityFile ~/.ssh/id_test\n\
         Host 127.0.0.*\n  User globuser\n  Port 3\n",
    )
}

fn ping(sandbox: &Sandbox, extra: &[&str]) -> super::Run {
    let inventory = sandbox.write("work/hosts.ini", INVENTORY);
    let mut args = vec!["ping", "-v", "-T", "1", "-i", inventory.to_str().unwrap()];
    args.extend(extra);
    sandbox.run(&args)
}

#[test]
fn ssh_config_fills_what_the_inventory_leaves_unset() {
    let sandbox = Sandbox::new();
    let config = shown(&ssh_config(&sandbox));
    let key = shown(&sandbox.path("home/.ssh/id_test"));
    let run = ping(&sandbox, &[]);
    assert_eq!(run.code, 1, "nothing listens: {}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("info: ssh config: reading {config}\n")),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.host_line("n1"),
        format!(
            "info: n1 globuser@127.0.0.1:1 key ssh-agent, ~/.ssh/id_* (address: inventory, port: inventory, \
             user: ssh_config {config}:7, key: default) direct"
        )
    );
    assert_eq!(
        run.host_line("n2"),
        format!(
            "info: n2 sshuser@127.0.0.2:2 key {key} (address: ssh_config {config}:2, port: ssh_config {config}:3, \
             user: ssh_config {config}:4, key: ssh_config {config}:5) direct"
        )
    );
    assert!(
        run.host_line("n3")
            .starts_with("info: n3 invuser@127.0.0.3:3 "),
        "the inventory's user wins, the config's port fills in: {}",
        run.host_line("n3")
    );
    // The destination matched against Host is ansible_host, never the inventory name.
    sandbox.write("home/.ssh/config", "Host n1 n2 n3\n  User byname\n");
    let run = ping(&sandbox, &[]);
    assert!(!run.stderr.contains("byname"), "{}", run.stderr);
}

#[test]
fn ansible_cfg_sits_between_the_inventory_and_ssh_config_and_flags_win() {
    let sandbox = Sandbox::new();
    ssh_config(&sandbox);
    let cfg = sandbox.write(
        "work/ansible.cfg",
        "[defaults]\nremote_user = cfguser\nprivate_key_file = /keys/from-cfg\n",
    );
    let run = ping(&sandbox, &[]);
    assert!(
        run.stderr
            .contains(&format!("info: ansible.cfg: reading {}\n", shown(&cfg))),
        "{}",
        run.stderr
    );
    let n2 = run.host_line("n2");
    assert!(
        n2.starts_with("info: n2 cfguser@127.0.0.2:2 key /keys/from-cfg (")
            && n2.contains("user: ansible.cfg, key: ansible.cfg)"),
        "remote_user and private_key_file beat ssh_config's User and IdentityFile: {n2}"
    );
    assert!(run.host_line("n3").starts_with("info: n3 invuser@"));
    let run = sandbox
        .dropship()
        .env("ANSIBLE_REMOTE_USER", "envuser")
        .args(["ping", "-v", "-T", "1", "-i", "hosts.ini"])
        .output()
        .unwrap();
    let run = super::Run::from(run);
    assert!(
        run.host_line("n1")
            .starts_with("info: n1 envuser@127.0.0.1:1 ")
    );
    let run = ping(&sandbox, &["-u", "flaguser", "-e", "ansible_user=extra"]);
    assert!(
        run.host_line("n3")
            .starts_with("info: n3 flaguser@127.0.0.3:3 "),
        "{}",
        run.host_line("n3")
    );
    assert!(run.host_line("n3").contains("user: flag"));
    let run = ping(&sandbox, &["-e", "ansible_user=extra"]);
    assert!(
        run.host_line("n3")
            .starts_with("info: n3 extra@127.0.0.3:3 "),
        "-e wins over the inventory: {}",
        run.host_line("n3")
    );
}

#[test]
fn dash_f_replaces_the_default_ssh_config_and_a_host_may_name_its_own() {
    let sandbox = Sandbox::new();
    ssh_config(&sandbox);
    let other = sandbox.write("other.conf", "Host *\n  User fromdashf\n");
    let own = sandbox.write("own.conf", "Host 127.0.0.3\n  Port 33\n");
    let inventory = sandbox.write(
        "work/hosts.ini",
        &format!(
            "{INVENTORY}n4 ansible_host=127.0.0.4 ansible_ssh_common_args='-F {}'\n",
            own.display()
        ),
    );
    let run = sandbox.run(&[
        "ping",
        "-v",
        "-T",
        "1",
        "-i",
        inventory.to_str().unwrap(),
        "-F",
        other.to_str().unwrap(),
    ]);
    assert!(
        run.host_line("n2")
            .starts_with("info: n2 fromdashf@alias2:22 ")
    );
    assert!(
        run.host_line("n4").starts_with(&format!(
            "info: n4 {}@127.0.0.4:22 ",
            std::env::var("USER").unwrap_or_else(|_| "root".into())
        )),
        "its own -F, not the flag's file: {}",
        run.host_line("n4")
    );
    let run = sandbox.run(&["ping", "-i", "hosts.ini", "-F", "/nonexistent/config"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error: /nonexistent/config: cannot read: "),
        "{}",
        run.stderr
    );
}

#[test]
fn a_proxy_jump_from_ssh_config_gets_its_own_block() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "home/.ssh/config",
        "Host 127.0.0.1\n  ProxyJump gw\nHost gw\n  HostName 127.0.0.9\n  User jumper\n  Port 2222\n",
    );
    let run = ping(&sandbox, &[]);
    let n1 = run.host_line("n1");
    assert!(
        n1.contains(" via gw jumper@127.0.0.9:2222 "),
        "the jump host's own Host block applies: {n1}"
    );
    assert!(run.host_line("n3").ends_with(" direct"));
}

#[test]
fn match_blocks_are_skipped_with_one_warning() {
    let sandbox = Sandbox::new();
    let config = sandbox.write(
        "home/.ssh/config",
        "Match host 127.0.0.*\n  User matched\nHost *\n  User star\n",
    );
    let run = ping(&sandbox, &[]);
    let warning = format!(
        "warning: {}:1: `Match` blocks in ssh config are not evaluated by dropship; the settings under it are ignored",
        shown(&config)
    );
    assert_eq!(run.stderr.matches(&warning).count(), 1, "{}", run.stderr);
    assert!(run.host_line("n1").starts_with("info: n1 star@"));
}

#[test]
fn the_inventory_comes_from_ansible_inventory_or_ansible_cfg() {
    let sandbox = Sandbox::new();
    sandbox.write("work/inv/hosts.ini", "[web]\nw1\n");
    sandbox.write("work/other.ini", "[db]\nd1\n");
    let run = sandbox.run(&["inventory", "--graph"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("no inventory given"), "{}", run.stderr);
    sandbox.write(
        "work/ansible.cfg",
        "[defaults]\ninventory = inv/hosts.ini\n",
    );
    let run = sandbox.run(&["inventory", "--graph"]);
    assert!(
        run.stdout.contains("|--@web:\n  |  |--w1"),
        "{}",
        run.stdout
    );
    let run = super::Run::from(
        sandbox
            .dropship()
            .env("ANSIBLE_INVENTORY", "other.ini")
            .args(["-v", "inventory", "--graph"])
            .output()
            .unwrap(),
    );
    assert!(run.stdout.contains("|--d1") && !run.stdout.contains("w1"));
    assert!(
        run.stderr.contains(&format!(
            "info: inventory: reading {} (from ANSIBLE_INVENTORY)",
            shown(&sandbox.path("work/other.ini"))
        )),
        "{}",
        run.stderr
    );
    let run = sandbox.run(&["inventory", "--graph", "-i", "other.ini"]);
    assert!(run.stdout.contains("|--d1"), "-i wins: {}", run.stdout);
}

#[test]
fn extra_vars_are_the_highest_precedence_as_in_ansible() {
    let sandbox = Sandbox::new();
    sandbox.write("work/hosts.ini", "[all]\nh1 a=1 ansible_user=inv\n");
    sandbox.write("work/vars.yml", "ansible_user: fromfile\nlist: [1, 2]\n");
    let run = sandbox.run(&[
        "inventory",
        "-i",
        "hosts.ini",
        "--host",
        "h1",
        "-e",
        "a=9 b='two words'",
        "-e",
        "@vars.yml",
        "-e",
        r#"{"n": 1}"#,
    ]);
    let vars: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        vars,
        serde_json::json!({"a": "9", "b": "two words", "ansible_user": "fromfile", "list": [1, 2], "n": 1})
    );
    let run = sandbox.run(&["inventory", "-i", "hosts.ini", "--list", "-e", "oops"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "error: reading the inventory: -e 'oops': 'oops' is not KEY=VALUE (nor a YAML/JSON mapping, nor @FILE)"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn list_hosts_prints_the_targets_and_contacts_nothing() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "work/hosts.ini",
        "[bastion]\nbastion ansible_host=127.0.0.1 ansible_port=1\n[kube_node]\nnode1 ansible_host=127.0.0.1 ansible_port=1\nnode2\nlocal ansible_connection=local\n",
    );
    for command in ["ping", "push"] {
        let run = sandbox.run(&[command, "-i", "hosts.ini", "--list-hosts"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(
            run.stdout, "  hosts (2):\n    node1\n    node2\n",
            "{command}"
        );
        let run = sandbox.run(&[command, "-i", "hosts.ini", "--list-hosts", "-l", "node2"]);
        assert_eq!(run.stdout, "  hosts (1):\n    node2\n", "{command}");
    }
}

/// End to end: a node reached only through names ~/.ssh/config defines (the node and the
/// bastion as Host aliases, the user, key and known_hosts from it), and an inventory without
/// any user or key that ansible.cfg completes.
#[test]
fn ssh_config_aliases_and_ansible_cfg_reach_the_test_bed() {
    let (tb, _lock) = testbed!();
    let node = tb.node("node2");
    let sandbox = Sandbox::new();
    sandbox.write(
        "home/.ssh/config",
        &format!(
            "Host tb-node2\n  HostName {}\n  ProxyJump tb-bastion\n\
             Host tb-*\n  User root\n  IdentityFile {}\n  UserKnownHostsFile {}\n\
             Host tb-bastion\n  HostName {}\n",
            node.address,
            tb.key.display(),
            tb.known_hosts.display(),
            tb.bastion
        ),
    );
    sandbox.write("work/aliases.ini", "node2 ansible_host=tb-node2\n");
    let run = sandbox.run(&["ping", "-v", "-i", "aliases.ini"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("node2  ok      root@"),
        "{}",
        run.stdout
    );
    assert!(
        run.host_line("node2").contains(" via tb-bastion root@"),
        "{}",
        run.host_line("node2")
    );
    // No user, no key in the inventory: ansible.cfg gives them; the bastion from the inventory.
    sandbox.write("home/.ssh/config", "");
    sandbox.write(
        "work/ansible.cfg",
        &format!(
            "[defaults]\nremote_user = root\nprivate_key_file = {}\n[ssh_connection]\nssh_args = -o UserKnownHostsFile={}\n",
            tb.key.display(),
            tb.known_hosts.display()
        ),
    );
    sandbox.write(
        "work/bare.ini",
        &format!(
            "[bastion]\nbastion\n[kube_node]\nnode2 ansible_host={}\n",
            node.address
        ),
    );
    sandbox.write(
        "work/host_vars/bastion.yml",
        &format!("ansible_host: {}\n", tb.bastion),
    );
    let run = sandbox.run(&["ping", "-v", "-i", "bare.ini"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.host_line("node2")
            .contains("user: ansible.cfg, key: ansible.cfg)"),
        "{}",
        run.host_line("node2")
    );
}
