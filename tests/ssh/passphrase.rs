//! Encrypted keys: the passphrase comes from DROPSHIP_SSH_PASSPHRASE (no TTY in tests).
//! Alone in its test binary because it sets a process environment variable.

use dropship::ssh::{ConnectOptions, Connector, PASSPHRASE_ENV, RemoteCommand, SshError};

#[test]
fn an_encrypted_key_needs_its_passphrase() {
    let (tb, _lock) = testbed!();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id_ed25519");
    std::fs::copy(&tb.key, &key).unwrap();
    // The test bed's own (authorized) key, re-encrypted.
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-p", "-P", "", "-N", "s3cret pass", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    let connect = |passphrase: &str| {
        // SAFETY: the only test of this binary; no other thread reads the environment meanwhile.
        unsafe { std::env::set_var(PASSPHRASE_ENV, passphrase) };
        let options = ConnectOptions {
            private_key: Some(key.clone()),
            ..tb.connect_options()
        };
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let session = Connector::new(options)
                .connect(&tb.host(tb.node("node1")))
                .await?;
            session.exec(&RemoteCommand::new(["true"])).run().await
        })
    };
    let error = connect("wrong").unwrap_err();
    assert!(
        matches!(&error, SshError::Bastion { source, .. } if matches!(**source, SshError::Key { .. })),
        "{error}"
    );
    assert!(
        error.to_string().contains("wrong passphrase") && !error.to_string().contains("s3cret"),
        "{error}"
    );
    assert!(connect("s3cret pass").unwrap().success());
}
