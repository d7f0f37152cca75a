//! The SSH transport against the test bed's real sshd servers (bastion + nodes).
//! Run with a test bed up: `TESTBED_ID=<n> scripts/testbed.sh up`, then `TESTBED_ID=<n> cargo test --test tests ssh::`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Runtime, Testbed, on_testbed, runtime};
use dropship::facts;
use dropship::ssh::{ConnectOptions, Connector, ExitStatus, RemoteCommand, Session, SshError};

#[test]
fn every_node_through_one_bastion_connection() {
    on_testbed(async |tb| {
        let connector = Connector::new(ConnectOptions {
            bastion_connections: 1,
            ..tb.connect_options()
        });
        let tasks = tb.nodes.iter().map(|node| {
            let (connector, host) = (connector.clone(), tb.host(node));
            let node = node.name.clone();
            tokio::spawn(async move {
                let session = connector.connect(&host).await?;
                let cat = RemoteCommand::new(["cat"]);
                let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
                let sent = Arc::new(AtomicU64::new(0));
                let echoed = session
                    .exec(&cat)
                    .stdin(&data[..])
                    .count_sent(sent.clone())
                    .run()
                    .await?;
                assert_eq!(echoed.stdout, data, "{node}: cat echoes stdin exactly");
                assert_eq!(sent.load(Ordering::Relaxed), data.len() as u64);
                let facts = facts::gather(&session, Path::new("/tmp/releases"), None)
                    .await
                    .unwrap();
                Ok::<_, SshError>((node, facts))
            })
        });
        let results = futures::future::join_all(tasks).await;
        let flatcar = tb.flatcar_node.clone();
        for result in results {
            let (name, facts) = result.unwrap().unwrap();
            let node = tb.node(&name);
            assert_eq!(facts.arch, node.arch, "{name}: what its uname -m says");
            assert_eq!(
                facts.is_coreos_like(),
                name == flatcar,
                "{name}: {:?}",
                facts.os
            );
            match node.runtime {
                Runtime::Docker => {
                    let docker = facts
                        .docker
                        .as_ref()
                        .unwrap_or_else(|| panic!("{name}: docker answers: {:?}", facts.runtimes));
                    assert_eq!(docker.storage_driver, "overlay2");
                }
                Runtime::Containerd => {
                    let containerd = facts.containerd.as_ref().unwrap();
                    assert!(
                        containerd.answers && containerd.cri,
                        "{name}: {containerd:?}"
                    );
                    assert!(facts.docker.is_none(), "{name}");
                }
                Runtime::Crio => {
                    assert!(facts.has_tool("podman") && facts.crio.is_some(), "{name}");
                    assert!(
                        facts.docker.is_none() && facts.containerd.is_none(),
                        "{name}"
                    );
                }
            }
            assert_eq!(
                dropship::runtime::Runtime::detect(&facts).map(|r| r.name()),
                Some(node.runtime.name()),
                "{name}: the facts alone tell its runtime"
            );
            assert!(
                facts.has_tool("zstd") && facts.has_tool("gzip"),
                "{name}: {:?}",
                facts.tools
            );
            assert!(
                facts.free_space.as_ref().is_some_and(|f| f.bytes > 0),
                "{name}"
            );
        }
    });
}

/// More tunnels than OpenSSH's MaxSessions (10) and MaxStartups (10) over one bastion
/// connection: direct-tcpip channels are not sessions, and handshakes are rate-limited.
#[test]
fn thirty_sessions_at_once_over_one_bastion_connection() {
    on_testbed(async |tb| {
        let connector = Connector::new(ConnectOptions {
            bastion_connections: 1,
            ..tb.connect_options()
        });
        let nodes = &tb.nodes;
        let sessions = (0..30).map(|i| {
            let host = tb.host(&nodes[i % nodes.len()]);
            let connector = connector.clone();
            async move {
                let session = connector.connect(&host).await?;
                let sleep = RemoteCommand::new(["sleep", "0.5"]);
                session
                    .exec(&sleep)
                    .run()
                    .await?
                    .check(session.host(), &sleep)
            }
        });
        for result in futures::future::join_all(sessions).await {
            result.unwrap();
        }
    });
}

#[test]
fn exit_codes_signals_and_stderr_come_back() {
    on_testbed(async |tb| {
        let session = node1_session(tb).await;
        let failing = RemoteCommand::shell("echo out; echo 'it broke' >&2; exit 3");
        let output = session.exec(&failing).run().await.unwrap();
        assert_eq!(output.status, ExitStatus::Code(3));
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.stderr_text(), "it broke");
        let error = output.check("node1", &failing).unwrap_err();
        assert!(
            error.to_string().contains("exit code 3") && error.to_string().contains("it broke"),
            "{error}"
        );

        let killed = session
            .exec(&RemoteCommand::shell("kill -TERM $$"))
            .run()
            .await
            .unwrap();
        assert_eq!(
            killed.status,
            ExitStatus::Signal {
                name: "TERM".into(),
                core_dumped: false
            }
        );

        // A word with quotes, spaces and `;` reaches the program as one argument.
        let tricky = "it's a; $(rm -rf /) `x` \"y\"";
        let echoed = session
            .exec(&RemoteCommand::new(["printf", "%s", tricky]))
            .run()
            .await
            .unwrap();
        assert_eq!(String::from_utf8(echoed.stdout).unwrap(), tricky);

        // stderr is bounded to its tail.
        let noisy = RemoteCommand::shell("head -c 300000 /dev/zero | tr '\\0' e >&2; echo END >&2");
        let tail = session.exec(&noisy).run().await.unwrap();
        assert_eq!(tail.stderr.len(), dropship::ssh::STDERR_TAIL);
        assert!(tail.stderr_text().ends_with("eEND"));
    });
}

#[test]
fn dropping_a_running_command_closes_its_channel() {
    on_testbed(async |tb| {
        let session = node1_session(tb).await;
        let marker = format!("dropship-cancel-{}", std::process::id());
        let endless = RemoteCommand::shell(format!("cat >/dev/null; : {marker}"));
        let running = session.exec(&endless).stdin(tokio::io::repeat(b'x')).run();
        assert!(
            tokio::time::timeout(Duration::from_millis(500), running)
                .await
                .is_err()
        );
        assert_remote_command_ended(&session, &marker).await;
    });
}

#[test]
fn stdout_streams_into_a_writer_and_capture_is_bounded() {
    on_testbed(async |tb| {
        let session = node1_session(tb).await;
        let big = RemoteCommand::shell("head -c 20000000 /dev/zero");
        let mut sink = std::io::Cursor::new(Vec::new());
        let streamed = session.exec(&big).stdout_to(&mut sink).run().await.unwrap();
        assert_eq!(
            (streamed.stdout_bytes, streamed.stdout.len()),
            (20_000_000, 0)
        );
        assert_eq!(sink.into_inner().len(), 20_000_000);
        let error = session
            .exec(&big)
            .capture_limit(1_000_000)
            .run()
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                SshError::OutputTooLarge {
                    limit: 1_000_000,
                    ..
                }
            ),
            "{error}"
        );
    });
}

#[test]
fn a_failing_stdin_source_ends_the_command_with_an_error() {
    on_testbed(async |tb| {
        let session = node1_session(tb).await;
        let marker = format!("dropship-stdin-error-{}", std::process::id());
        let waiting = RemoteCommand::shell(format!("cat >/dev/null; : {marker}"));
        let chunks: Vec<std::io::Result<bytes::Bytes>> = vec![
            Ok(bytes::Bytes::from_static(b"partial")),
            Err(std::io::Error::other("cache file vanished")),
        ];
        let source = tokio_util::io::StreamReader::new(futures::stream::iter(chunks));
        let run = session.exec(&waiting).stdin(source).run();
        let error = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("no hang")
            .unwrap_err();
        assert!(
            matches!(error, SshError::Stdin { .. })
                && error.to_string().contains("cache file vanished"),
            "{error}"
        );
        assert!(!error.is_transient());
        assert_remote_command_ended(&session, &marker).await;
    });
}

#[test]
fn a_wrong_key_fails_naming_host_user_and_methods() {
    let (tb, _lock) = testbed!();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong_ed25519");
    keygen(&wrong, "");
    runtime().block_on(async {
        let connector = Connector::new(ConnectOptions {
            private_key: Some(wrong.clone()),
            ..tb.connect_options()
        });
        let error = connector
            .connect(&tb.host(tb.node("node1")))
            .await
            .err()
            .expect("a wrong key is refused");
        let SshError::Bastion { source, .. } = &error else {
            panic!("the bastion refuses first: {error}")
        };
        assert!(matches!(**source, SshError::Auth { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("bastion")
                && message.contains("\"root\"")
                && message.contains("wrong_ed25519"),
            "{message}"
        );
        assert!(!error.is_transient());
    });
}

#[test]
fn an_agent_holding_the_key_is_enough() {
    let (tb, _lock) = testbed!();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&socket)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    crate::support::succeed(
        std::process::Command::new("ssh-add")
            .arg(&tb.key)
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap(),
    );
    let result = runtime().block_on(async {
        let connector = Connector::new(ConnectOptions {
            agent_socket: Some(socket.clone()),
            ..tb.connect_options()
        });
        let mut host = tb.host(tb.node("node2"));
        host.hop.private_key = None;
        host.jump.as_mut().unwrap().private_key = None;
        let session = connector.connect(&host).await?;
        session.exec(&RemoteCommand::new(["true"])).run().await
    });
    agent.kill().unwrap();
    let _ = agent.wait();
    assert!(result.unwrap().success());
}

/// RSA user keys must sign with rsa-sha2 (OpenSSH refuses ssh-rsa/SHA-1 by default).
#[test]
fn an_rsa_key_signs_with_sha2() {
    let (tb, _lock) = testbed!();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_rsa");
    let status = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "rsa",
            "-b",
            "2048",
            "-N",
            "",
            "-C",
            "dropship-ssh-test-rsa",
            "-f",
        ])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let authorized = tb.state_dir.join("keys/authorized_keys");
    let original = std::fs::read_to_string(&authorized).unwrap();
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    std::fs::write(&authorized, format!("{original}{public}")).unwrap();
    let result = runtime().block_on(async {
        let options = ConnectOptions {
            private_key: Some(key.clone()),
            ..tb.connect_options()
        };
        let session = Connector::new(options)
            .connect(&tb.host(tb.node("node1")))
            .await?;
        session.exec(&RemoteCommand::new(["true"])).run().await
    });
    std::fs::write(&authorized, original).unwrap();
    assert!(result.unwrap().success());
}

#[test]
fn unknown_host_refused_then_learned_with_accept_new() {
    let (tb, _lock) = testbed!();
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(&known_hosts, bastion_line(&tb)).unwrap();
    runtime().block_on(async {
        let strict = Connector::new(ConnectOptions {
            known_hosts: Some(known_hosts.clone()),
            ..tb.connect_options()
        });
        let error = strict
            .connect(&tb.host(tb.node("node1")))
            .await
            .err()
            .expect("unknown host refused");
        let SshError::UnknownHostKey { line, .. } = &error else {
            panic!("{error}")
        };
        assert!(
            line.starts_with(&format!("{} ssh-ed25519 AAAA", tb.node("node1").address)),
            "{line}"
        );
        assert!(
            error.to_string().contains(line.as_str()),
            "the message gives the line to add"
        );

        let learning = Connector::new(ConnectOptions {
            known_hosts: Some(known_hosts.clone()),
            accept_new: true,
            ..tb.connect_options()
        });
        learning.connect(&tb.host(tb.node("node1"))).await.unwrap();
        let text = std::fs::read_to_string(&known_hosts).unwrap();
        assert!(text.lines().any(|l| l == line), "learned: {text}");

        // Learned once: a strict run now trusts it.
        strict.connect(&tb.host(tb.node("node1"))).await.unwrap();
    });
}

#[test]
fn changed_host_key_refused_even_with_accept_new() {
    let (tb, _lock) = testbed!();
    let dir = tempfile::tempdir().unwrap();
    let known_hosts = dir.path().join("known_hosts");
    // node1's address recorded with node3's key: what a man in the middle would look like.
    let node3_key = line_for(&tb, &tb.node("node3").address)
        .split_once(' ')
        .unwrap()
        .1
        .to_string();
    std::fs::write(
        &known_hosts,
        format!(
            "{}{} {node3_key}\n",
            bastion_line(&tb),
            tb.node("node1").address
        ),
    )
    .unwrap();
    runtime().block_on(async {
        let options = ConnectOptions {
            known_hosts: Some(known_hosts.clone()),
            accept_new: true,
            insecure_ignore_host_keys: true,
            ..tb.connect_options()
        };
        let error = Connector::new(options)
            .connect(&tb.host(tb.node("node1")))
            .await
            .err()
            .expect("changed key refused");
        assert!(
            matches!(error, SshError::HostKeyChanged { ref lines, .. } if **lines == [2]),
            "{error}"
        );
        assert!(error.to_string().contains("ssh-keygen -R"), "{error}");
        assert!(!error.is_transient());
    });
}

#[test]
fn a_dead_bastion_fails_within_the_timeout() {
    let Some(tb) = crate::support::testbed() else {
        return;
    };
    runtime().block_on(async {
        // sshd not listening: refused at once.
        let mut host = tb.host(tb.node("node1"));
        host.jump.as_mut().unwrap().port = Some(2);
        let started = Instant::now();
        let error = Connector::new(tb.connect_options()).connect(&host).await.err().unwrap();
        assert!(matches!(&error, SshError::Bastion { source, .. } if matches!(**source, SshError::Connect { .. })), "{error}");
        assert!(error.is_transient() && started.elapsed() < Duration::from_secs(2), "{error}");

        // A host that never answers (no such machine on the bastion's network): the timeout.
        let mut host = tb.host(tb.node("node1"));
        host.jump.as_mut().unwrap().address = tb.bastion.rsplit_once('.').unwrap().0.to_string() + ".99";
        let options = ConnectOptions { connect_timeout: Duration::from_secs(2), ..tb.connect_options() };
        let started = Instant::now();
        let error = Connector::new(options).connect(&host).await.err().unwrap();
        let elapsed = started.elapsed();
        assert!(error.to_string().contains("timed out after 2s"), "{error}");
        assert!(error.is_transient() && elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(4), "{elapsed:?}");
    });
}

#[test]
fn a_node_with_sshd_stopped_fails_and_the_others_pass() {
    let (tb, _lock) = testbed!();
    let node2 = tb.node("node2");
    tb.stop_sshd(node2);
    let _restart = crate::support::defer(|| tb.start_sshd(node2));
    runtime().block_on(async {
        let connector = Connector::new(tb.connect_options());
        for node in &tb.nodes {
            let result = connector.connect(&tb.host(node)).await;
            match (node.name.as_str(), result) {
                ("node2", Err(error)) => {
                    assert!(matches!(error, SshError::Tunnel { .. }), "{error}");
                    assert!(
                        error.is_transient() && error.to_string().contains("node2"),
                        "{error}"
                    );
                }
                ("node2", Ok(_)) => panic!("node2's sshd is stopped"),
                (_, result) => drop(result.unwrap()),
            }
        }
    });
}

/// A session to node1 with the tests' options.
async fn node1_session(tb: &Testbed) -> Session {
    Connector::new(tb.connect_options())
        .connect(&tb.host(tb.node("node1")))
        .await
        .unwrap()
}

/// Half a second on, no process on the session's host has `marker` in its command line.
async fn assert_remote_command_ended(session: &Session, marker: &str) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let check = RemoteCommand::shell(format!(
        "ps -eo args | grep -v grep | grep -c {marker} || true"
    ));
    let left = session.exec(&check).run().await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&left.stdout).trim(),
        "0",
        "the remote command ended"
    );
}

fn keygen(path: &Path, passphrase: &str) {
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The test bed's known_hosts line for `address` (without the host field's address).
fn line_for(tb: &Testbed, address: &str) -> String {
    std::fs::read_to_string(&tb.known_hosts)
        .unwrap()
        .lines()
        .find(|l| l.split_whitespace().next() == Some(address))
        .unwrap_or_else(|| panic!("{address} in the test bed's known_hosts"))
        .to_string()
}

fn bastion_line(tb: &Testbed) -> String {
    format!("{}\n", line_for(tb, &tb.bastion))
}
