//! Flags in sensible ranges, refused by the parser with a message naming the flag and the
//! range (exit 2, nothing read or contacted); the same ranges for ansible.cfg's values.

use super::Sandbox;

#[test]
fn numbers_out_of_range_are_refused_naming_the_flag() {
    let sandbox = Sandbox::new();
    for (args, message) in [
        (
            &["push", "-f", "0"][..],
            "error: invalid value '0' for '--forks <N>': 0 is not in 1..=1000",
        ),
        (
            &["ping", "--forks", "1001"],
            "error: invalid value '1001' for '--forks <N>': 1001 is not in 1..=1000",
        ),
        (
            &["push", "--zstd-level", "25"],
            "error: invalid value '25' for '--zstd-level <1-19>': 25 is not in 1..=19",
        ),
        (
            &["push", "--connect-timeout", "0"],
            "error: invalid value '0' for '--connect-timeout <SECONDS>': 0 is not in 1..=86400",
        ),
        (
            &["ping", "-T", "0"],
            "error: invalid value '0' for '--connect-timeout <SECONDS>': 0 is not in 1..=86400",
        ),
        (
            &["push", "--retries", "0"],
            "error: invalid value '0' for '--retries <N>': 0 is not in 1..=4294967295",
        ),
        (
            &["push", "--retry-stagger", "3601"],
            "error: invalid value '3601' for '--retry-stagger <SECONDS>': 3601 is not in 0..=3600",
        ),
    ] {
        let run = sandbox.run(args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with(message), "{args:?}:\n{}", run.stderr);
    }
}

#[test]
fn ansible_spellings_are_accepted() {
    let sandbox = Sandbox::new();
    sandbox.write("work/hosts.ini", "n1\n");
    for args in [
        &["push", "-i", "hosts.ini", "-C", "--list-hosts"][..],
        &["push", "-i", "hosts.ini", "--timeout", "5", "--list-hosts"],
        &[
            "ping",
            "-i",
            "hosts.ini",
            "-T",
            "5",
            "--key-file",
            "/k",
            "--list-hosts",
        ],
    ] {
        let run = sandbox.run(args);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (0, "  hosts (1):\n    n1\n"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn ansible_cfg_values_out_of_range_are_refused_naming_the_file() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "work/hosts.ini",
        "n1 ansible_host=127.0.0.1 ansible_port=1\n",
    );
    let cfg = sandbox.write("work/ansible.cfg", "[defaults]\nforks = 0\n");
    let run = sandbox.run(&["ping", "-i", "hosts.ini"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(
        run.stderr,
        format!("error: {}:2: forks 0 is not in 1..=1000\n", cfg.display())
    );
    sandbox.write("work/ansible.cfg", "[defaults]\nforks = many\n");
    let run = sandbox.run(&["ping", "-i", "hosts.ini"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .ends_with("ansible.cfg:2: 'many' is not a whole number\n"),
        "{}",
        run.stderr
    );
}

/// `--offline` with an image the cache lacks fails at once, naming every missing image, and
/// contacts nothing: the host (and its would-be bastion) is a listener that sees no connection.
#[test]
fn offline_without_the_images_fails_fast_contacting_nothing() {
    let sandbox = Sandbox::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    sandbox.write(
        "work/hosts.ini",
        &format!(
            "n1 ansible_host=127.0.0.1 ansible_port={port}\n\
             [bastion]\nbastion ansible_host=127.0.0.1 ansible_port={port}\n"
        ),
    );
    let started = std::time::Instant::now();
    let run = sandbox.run(&[
        "push",
        "-i",
        "hosts.ini",
        "--offline",
        "--cache-dir",
        "cache",
        "--image",
        "registry.example/a:1",
        "--image",
        "registry.example/b:2",
    ]);
    let took = started.elapsed();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("--offline: not in the cache")
            && run
                .stderr
                .contains("registry.example/a:1, registry.example/b:2"),
        "{}",
        run.stderr
    );
    assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
    assert_eq!(
        listener.accept().map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::WouldBlock),
        "something connected"
    );
}
