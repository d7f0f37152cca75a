//! Inventories written to a temporary directory, and Ansible Vault vectors, for unit tests.

use super::Inventory;
use super::vault::{DEFAULT_VAULT_ID, VaultSecrets};

/// Writes `files` (path under a fresh temporary directory, text) and loads the first one as the
/// inventory source; the directory lives as long as the returned guard.
pub(crate) fn load_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Inventory) {
    load_files_with(files, VaultSecrets::default())
}

/// Like `load_files`, with vault passwords.
pub(crate) fn load_files_with(
    files: &[(&str, &str)],
    secrets: VaultSecrets,
) -> (tempfile::TempDir, Inventory) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let inventory = Inventory::load_with(&[dir.path().join(files[0].0)], secrets).unwrap();
    (dir, inventory)
}

/// One INI inventory file, `hosts.ini`.
pub(crate) fn load_ini(ini: &str) -> (tempfile::TempDir, Inventory) {
    load_files(&[("hosts.ini", ini)])
}

/// The password of the `VAULTED_*` values, which ansible-core 2.19's `ansible-vault
/// encrypt_string` made.
pub(crate) const FIXTURE_PASSWORD: &str = "fixture-password";

/// "deploy".
pub(crate) const VAULTED_DEPLOY: &str = "$ANSIBLE_VAULT;1.1;AES256
61353438303261383634333665366364313534346330636433613636333536393332386336353561
3864666636323432653664613430383930656265653365660a616361653966343235663763656263
63366361333031613331393739656131323331353665353736326566666563343066376530643231
3231396361303764340a613134376362653262643036396639653034613564303930646665376235
3562
";

/// "deploy" again (another salt: another ciphertext).
pub(crate) const VAULTED_DEPLOY_AGAIN: &str = "$ANSIBLE_VAULT;1.1;AES256
61316131316635393064353566666162373964376138353131656264303635323034333837383662
3665653535393430613434303036646330643965366661630a336634353736383032376334653564
33353365356662633464383339346466663933653765316134626436383135623766303336323338
3832316333326532300a303732303961386165323063393764353637633464613034393739623234
3935
";

/// "yes".
pub(crate) const VAULTED_YES: &str = "$ANSIBLE_VAULT;1.1;AES256
63663537663066633939323164363862626432303136663538623865653430356139613663343033
3637653061363464643532306563666532343766316462350a613537653061343931616331343034
65396630373230643166636439316362363330636432303664366465626434333862653235653162
6635366631373435640a613133343263343764633038303134633332613232613037343262613864
3135
";

/// "/var/cache/vaulted".
pub(crate) const VAULTED_CACHE_DIR: &str = "$ANSIBLE_VAULT;1.1;AES256
37613130666565643566333165613763323832376463323834393734343438626263306334333865
6439313233393264303039636336336261633161356138390a636163633163363839373039393735
39636262353239626665313965613930353366363433373536386534396366366566393234333032
6266313432663735310a393139646463303037373635316238353932326338666534336364356263
34303737363863316538346135376436613764356438343366383232393262306335
";

pub(crate) fn fixture_secrets() -> VaultSecrets {
    let mut secrets = VaultSecrets::default();
    secrets.add(DEFAULT_VAULT_ID, FIXTURE_PASSWORD);
    secrets
}

/// `name: !vault |` and the indented envelope, as encrypt_string prints it.
pub(crate) fn vault_yaml(name: &str, envelope: &str) -> String {
    let mut text = format!("{name}: !vault |\n");
    for line in envelope.lines() {
        text.push_str(&format!("  {line}\n"));
    }
    text
}
