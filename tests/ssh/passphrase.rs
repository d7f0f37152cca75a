//! Encrypted keys: the passphrase comes from the options (DROPSHIP_SSH_PASSPHRASE by default;
//! there is no TTY in tests).

use dropship::ssh::{ConnectOptions, Connector, Passphrase, RemoteCommand, SshError};

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
        let options = ConnectOptions {
            private_key: Some(key.clone()),
            key_passphrase: Some(Passphrase(passphrase.to_string())),
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
