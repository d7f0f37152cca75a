//! What users read: warnings once each on stderr, no colour in a pipe (unless forced), and
//! snapshots of every `--help` and of the inventory warnings, so that a change in what users
//! read shows as a diff (insta: the snapshots are plain files under tests/cli/snapshots/,
//! reviewed with `cargo insta review` or rewritten with INSTA_UPDATE=always).

use super::Sandbox;

const COLLISION: &str = "[bastion]\nbastion ansible_host=127.0.0.1 ansible_port=1\n[web]\nw1\n";

#[test]
fn a_warning_is_printed_once_however_often_it_is_met() {
    let sandbox = Sandbox::new();
    sandbox.write("work/a.ini", COLLISION);
    sandbox.write("work/b.ini", COLLISION);
    let run = sandbox.run(&["inventory", "-i", "a.ini", "-i", "b.ini", "--graph"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr,
        "warning: Found both group and host with same name: bastion\n"
    );
}

#[test]
fn no_colour_in_a_pipe_unless_forced() {
    let sandbox = Sandbox::new();
    sandbox.write("work/hosts.ini", COLLISION);
    let run = sandbox.run(&["-v", "inventory", "-i", "hosts.ini", "--graph"]);
    assert!(!run.stderr.contains('\x1b'), "{:?}", run.stderr);
    assert!(
        run.stderr.contains("\nwarning: Found both group"),
        "{}",
        run.stderr
    );
    let forced = |vars: &[(&str, &str)]| {
        let mut command = sandbox.dropship();
        command.args(["inventory", "-i", "hosts.ini", "--graph"]);
        for (k, v) in vars {
            command.env(k, v);
        }
        super::Run::from(command.output().unwrap()).stderr
    };
    assert_eq!(
        forced(&[("CLICOLOR_FORCE", "1")]),
        "\x1b[1;33mwarning\x1b[0m: Found both group and host with same name: bastion\n"
    );
    assert!(!forced(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).contains('\x1b'));
}

#[test]
fn the_inventory_warnings_read_like_ansibles() {
    let run = Sandbox::new().run(&[
        "inventory",
        "-i",
        crate::support::repo()
            .join("tests/inventories/warnings/hosts.yml")
            .to_str()
            .unwrap(),
        "--graph",
    ]);
    insta::assert_snapshot!(run.stderr);
}

#[test]
fn help_texts() {
    let sandbox = Sandbox::new();
    for command in [
        &[][..],
        &["inventory"],
        &["ping"],
        &["push"],
        &["cache"],
        &["cache", "list"],
        &["cache", "import"],
        &["cache", "export"],
        &["cache", "verify"],
        &["cache", "prune"],
        &["completions"],
    ] {
        let mut args = command.to_vec();
        args.push("--help");
        let run = sandbox
            .dropship()
            .args(&args)
            .env("COLUMNS", "100")
            .output()
            .unwrap();
        let run = super::Run::from(run);
        assert_eq!(run.code, 0, "{args:?}");
        let name = if command.is_empty() {
            "help".to_string()
        } else {
            format!("help-{}", command.join("-"))
        };
        insta::assert_snapshot!(name, run.stdout);
    }
}

#[test]
fn completions_and_man_pages_come_from_the_cli() {
    let sandbox = Sandbox::new();
    for (shell, marker) in [
        ("bash", "_dropship()"),
        ("zsh", "#compdef dropship"),
        ("fish", "complete -c dropship"),
    ] {
        let run = sandbox.run(&["completions", shell]);
        assert_eq!(run.code, 0);
        assert!(run.stdout.contains(marker), "{shell}");
        assert!(
            run.stdout.contains("list-hosts"),
            "{shell}: every flag is there"
        );
    }
    let dir = sandbox.path("man");
    let run = sandbox.run(&["man", dir.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let page = std::fs::read_to_string(dir.join("dropship-push.1")).unwrap();
    assert!(page.starts_with(".ie \\n(.g .ds Aq \\(aq"), "{page}");
    assert!(page.contains("\\-\\-list\\-hosts"), "{page}");
    assert!(dir.join("dropship-cache-prune.1").is_file());
}
