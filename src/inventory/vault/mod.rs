//! Ansible Vault data (`$ANSIBLE_VAULT;1.1;AES256`, `$ANSIBLE_VAULT;1.2;AES256;<vault-id>`)
//! decrypted as ansible-core's `parsing/vault` does, with the passwords the user gave.
//!
//! The envelope, the two hexlify layers, the key split and the padding check are written out
//! here because they must match Ansible byte for byte; the primitives are RustCrypto's (AES-256
//! in CTR mode, HMAC-SHA256, PBKDF2).

mod passwords;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;

use aes::Aes256;
use ctr::Ctr128BE;
use ctr::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The label of a password given without one (Ansible's `DEFAULT_VAULT_IDENTITY`).
pub const DEFAULT_VAULT_ID: &str = "default";

const HEADER: &[u8] = b"$ANSIBLE_VAULT";
const PBKDF2_ROUNDS: u32 = 10_000;
const KEY_LEN: usize = 32;
const BLOCK_LEN: usize = 16;

/// Why vault data could not be decrypted. Never holds a password or a plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VaultError {
    #[error(
        "no vault password given: pass --vault-password-file FILE, --vault-id [LABEL@]FILE or \
         --ask-vault-pass (or set ANSIBLE_VAULT_PASSWORD_FILE)"
    )]
    NoPassword,
    #[error("not Ansible Vault data (it must start with $ANSIBLE_VAULT)")]
    NotVault,
    #[error("malformed vault data: {0}")]
    Format(&'static str),
    #[error("vault cipher '{0}' is not supported (only AES256)")]
    Cipher(String),
    #[error("HMAC mismatch: wrong vault password (tried vault id {})", quoted(.tried))]
    WrongPassword { tried: Vec<String> },
    #[error("the decrypted data has invalid PKCS#7 padding")]
    Padding,
    #[error("the decrypted value is not UTF-8 text")]
    NotText,
}

fn quoted(labels: &[String]) -> String {
    let quoted: Vec<String> = labels.iter().map(|l| format!("'{l}'")).collect();
    quoted.join(", ")
}

/// The vault passwords given, each with its vault id label, in the order Ansible tries them.
#[derive(Clone, Default)]
pub struct VaultSecrets {
    secrets: Vec<Secret>,
}

#[derive(Clone)]
struct Secret {
    label: String,
    password: Vec<u8>,
}

impl fmt::Debug for VaultSecrets {
    /// Labels only: a password never reaches a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<&str> = self.secrets.iter().map(|s| s.label.as_str()).collect();
        f.debug_struct("VaultSecrets")
            .field("labels", &labels)
            .finish()
    }
}

impl VaultSecrets {
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Adds a password under a vault id label (`DEFAULT_VAULT_ID` when the user gave none).
    pub fn add(&mut self, label: impl Into<String>, password: impl Into<Vec<u8>>) {
        self.secrets.push(Secret {
            label: label.into(),
            password: password.into(),
        });
    }

    /// The plaintext of vault data (a whole encrypted file, or an inline `!vault` value).
    ///
    /// Like Ansible (with `ANSIBLE_VAULT_ID_MATCH` off, its default) every password is tried:
    /// the vault id in a 1.2 header is only a hint, so the passwords with that label go first.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, VaultError> {
        let envelope = Envelope::parse(data)?;
        if envelope.cipher != "AES256" {
            return Err(VaultError::Cipher(envelope.cipher));
        }
        if self.secrets.is_empty() {
            return Err(VaultError::NoPassword);
        }
        let payload = Payload::parse(&envelope.payload)?;
        let (matching, others): (Vec<&Secret>, Vec<&Secret>) = self
            .secrets
            .iter()
            .partition(|s| s.label == envelope.vault_id);
        for secret in matching.iter().chain(&others) {
            if let Some(plaintext) = payload.decrypt(&secret.password)? {
                return Ok(plaintext);
            }
        }
        Err(VaultError::WrongPassword {
            tried: self.secrets.iter().map(|s| s.label.clone()).collect(),
        })
    }
}

/// Ansible's `is_encrypted`: ASCII data starting with `$ANSIBLE_VAULT`.
pub fn is_encrypted(data: &[u8]) -> bool {
    data.starts_with(HEADER) && data.is_ascii()
}

/// The header line (`$ANSIBLE_VAULT;version;cipher[;vault-id]`) and the hex lines after it.
struct Envelope {
    cipher: String,
    vault_id: String,
    /// The lines after the header, joined (`b''.join(lines[1:])`).
    payload: Vec<u8>,
}

impl Envelope {
    fn parse(data: &[u8]) -> Result<Envelope, VaultError> {
        if !is_encrypted(data) {
            return Err(VaultError::NotVault);
        }
        let text = std::str::from_utf8(data).map_err(|_| VaultError::NotVault)?;
        // Python's bytes.splitlines() ends lines at \n, \r and \r\n; the payload lines are
        // joined, so dropping every \r and \n after the header gives the same bytes.
        let (header, rest) = text.split_once(['\r', '\n']).unwrap_or((text, ""));
        let fields: Vec<&str> = header.trim().split(';').map(str::trim).collect();
        let (Some(_version), Some(cipher)) = (fields.get(1), fields.get(2)) else {
            return Err(VaultError::Format("the header lacks a version or a cipher"));
        };
        Ok(Envelope {
            cipher: cipher.to_string(),
            vault_id: fields.get(3).unwrap_or(&DEFAULT_VAULT_ID).to_string(),
            payload: rest
                .bytes()
                .filter(|b| !matches!(b, b'\r' | b'\n'))
                .collect(),
        })
    }
}

/// The AES256 vaulttext: hex of `hex(salt) \n hex(hmac) \n hex(ciphertext)`.
struct Payload {
    salt: Vec<u8>,
    hmac: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl Payload {
    fn parse(hexlified: &[u8]) -> Result<Payload, VaultError> {
        let unhex = |part: &[u8]| hex::decode(part).map_err(|_| VaultError::Format("not hex"));
        let inner = unhex(hexlified)?;
        let mut parts = inner.splitn(3, |b| *b == b'\n');
        let (Some(salt), Some(hmac), Some(ciphertext)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(VaultError::Format(
                "expected salt, HMAC and ciphertext on three lines",
            ));
        };
        Ok(Payload {
            salt: unhex(salt)?,
            hmac: unhex(hmac)?,
            ciphertext: unhex(ciphertext)?,
        })
    }

    /// The plaintext with `password`; `None` when the HMAC says the password is wrong.
    fn decrypt(&self, password: &[u8]) -> Result<Option<Vec<u8>>, VaultError> {
        // 80 bytes: the AES key, the HMAC key, then the initial counter block.
        let mut keys = [0u8; 2 * KEY_LEN + BLOCK_LEN];
        pbkdf2::pbkdf2_hmac::<Sha256>(password, &self.salt, PBKDF2_ROUNDS, &mut keys);
        let (cipher_key, rest) = keys.split_at(KEY_LEN);
        let (hmac_key, iv) = rest.split_at(KEY_LEN);
        let mut mac =
            Hmac::<Sha256>::new_from_slice(hmac_key).expect("HMAC accepts keys of any length");
        mac.update(&self.ciphertext);
        // verify_slice compares in constant time, like Ansible's (cryptography's) verify.
        if mac.verify_slice(&self.hmac).is_err() {
            return Ok(None);
        }
        let mut plaintext = self.ciphertext.clone();
        Ctr128BE::<Aes256>::new_from_slices(cipher_key, iv)
            .expect("32-byte key and 16-byte counter block")
            .apply_keystream(&mut plaintext);
        unpad(plaintext).map(Some)
    }
}

/// PKCS#7 for 16-byte blocks as `cryptography`'s unpadder checks it: whole blocks, a last
/// byte `n` in 1..=16, and the last `n` bytes all equal to `n`.
fn unpad(mut data: Vec<u8>) -> Result<Vec<u8>, VaultError> {
    let n = usize::from(*data.last().ok_or(VaultError::Padding)?);
    let valid = data.len().is_multiple_of(BLOCK_LEN)
        && (1..=BLOCK_LEN).contains(&n)
        && data[data.len() - n..].iter().all(|b| usize::from(*b) == n);
    if !valid {
        return Err(VaultError::Padding);
    }
    data.truncate(data.len() - n);
    Ok(data)
}

/// An inline `!vault` value that could not be decrypted: the file it came from, and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("encrypted with Ansible Vault{}: {reason}", .origin.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
pub struct VaultedValueError {
    pub origin: Option<PathBuf>,
    pub reason: VaultError,
}

/// The inline `!vault` values of one inventory: decrypted when a reader needs one, once each
/// (key derivation is slow on purpose, and one group_vars value serves many hosts).
#[derive(Default)]
pub(crate) struct InlineValues {
    secrets: VaultSecrets,
    /// The file each ciphertext was read from, for messages (the first, for one copied into
    /// several files).
    origins: HashMap<String, PathBuf>,
    plaintexts: Mutex<HashMap<String, String>>,
}

impl fmt::Debug for InlineValues {
    /// No plaintexts: they are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InlineValues")
            .field("secrets", &self.secrets)
            .field("values", &self.origins.len())
            .finish()
    }
}

impl InlineValues {
    pub(crate) fn new(secrets: VaultSecrets, origins: HashMap<String, PathBuf>) -> InlineValues {
        InlineValues {
            secrets,
            origins,
            plaintexts: Mutex::default(),
        }
    }

    pub(crate) fn plaintext(&self, ciphertext: &str) -> Result<String, VaultedValueError> {
        let mut plaintexts = self.plaintexts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plaintext) = plaintexts.get(ciphertext) {
            return Ok(plaintext.clone());
        }
        let plaintext = self
            .secrets
            .decrypt(ciphertext.as_bytes())
            .and_then(|bytes| String::from_utf8(bytes).map_err(|_| VaultError::NotText))
            .map_err(|reason| VaultedValueError {
                origin: self.origins.get(ciphertext).cloned(),
                reason,
            })?;
        plaintexts.insert(ciphertext.to_string(), plaintext.clone());
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::testing::{FIXTURE_PASSWORD, VAULTED_DEPLOY as V11_DEPLOY};

    // Made with ansible-core 2.19's `ansible-vault encrypt_string`: V12 with `--vault-id
    // prod@FILE` holding "prod-secret", V11 with FIXTURE_PASSWORD.
    const V12_PROD_16_BYTES: &str = "$ANSIBLE_VAULT;1.2;AES256;prod
37646132306430376436653733643065316232386564636363303761393837353261303761393632
3137616262326666326339623133666563313537636636310a626533643437316338336630343961
63346139653261636331323631396463646236383866343265666462343766353264356438616339
3336383036323133390a643766663266326261336436643666323663616332306665633763323961
36366465653462353566616164343230613532313536636466356337643961666535
";
    const V11_MULTILINE: &str = "$ANSIBLE_VAULT;1.1;AES256
33643963306261396565666566666261366235346539353461303466646437636661643237383062
3661663135373465353662626263336264656463373363370a626665386462353133663532363038
33353731643038396137366534343361643561376139623035616162306334643635336166633738
6339313239313463330a303536323565343962356136626636383930666232613237366561303762
63393362656535663663323465653365323335386639663238643032303139383365
";
    // A valid HMAC over 16 bytes ending in 0x00, made with ansible's own key derivation and
    // `cryptography` (Ansible itself fails on it with "Invalid padding bytes").
    const V11_BAD_PADDING: &str = "$ANSIBLE_VAULT;1.1;AES256
33303331333233333334333533363337333833393631363236333634363536363330333133323333
3334333533363337333833393631363236333634363536360a323636393439636234373839306332
63633336343531306535313932623563393530636165646337383234373837383833363536663865
3230303730396237390a663038333934316239373163383932326162353139363161346133623463
6662
";

    fn secrets(pairs: &[(&str, &str)]) -> VaultSecrets {
        let mut secrets = VaultSecrets::default();
        for (label, password) in pairs {
            secrets.add(*label, password.as_bytes());
        }
        secrets
    }

    #[test]
    fn decrypts_ansible_vault_1_1_and_1_2() {
        let fixture = secrets(&[("default", FIXTURE_PASSWORD)]);
        assert_eq!(fixture.decrypt(V11_DEPLOY.as_bytes()).unwrap(), b"deploy");
        assert_eq!(
            fixture.decrypt(V11_MULTILINE.as_bytes()).unwrap(),
            b"line one\nline two\n"
        );
        // A whole block of padding, and a 1.2 header whose vault id names the password.
        let prod = secrets(&[("prod", "prod-secret")]);
        assert_eq!(
            prod.decrypt(V12_PROD_16_BYTES.as_bytes()).unwrap(),
            b"exactly 16 bytes"
        );
    }

    #[test]
    fn every_password_is_tried_whatever_its_label() {
        let both = secrets(&[("prod", FIXTURE_PASSWORD), ("other", "prod-secret")]);
        assert_eq!(both.decrypt(V11_DEPLOY.as_bytes()).unwrap(), b"deploy");
        assert_eq!(
            both.decrypt(V12_PROD_16_BYTES.as_bytes()).unwrap(),
            b"exactly 16 bytes"
        );
    }

    #[test]
    fn crlf_line_ends_and_spaces_around_header_fields_are_accepted() {
        let crlf = V11_DEPLOY
            .replace('\n', "\r\n")
            .replace("1.1;AES256", "1.1; AES256 ");
        let fixture = secrets(&[("default", FIXTURE_PASSWORD)]);
        assert_eq!(fixture.decrypt(crlf.as_bytes()).unwrap(), b"deploy");
    }

    #[test]
    fn wrong_password_is_an_hmac_mismatch_naming_the_vault_ids_only() {
        let wrong = secrets(&[("default", "not-it"), ("prod", "nor-this")]);
        let err = wrong.decrypt(V11_DEPLOY.as_bytes()).unwrap_err();
        assert_eq!(
            err,
            VaultError::WrongPassword {
                tried: vec!["default".into(), "prod".into()]
            }
        );
        let text = err.to_string();
        assert!(
            text.starts_with("HMAC mismatch: wrong vault password"),
            "{text}"
        );
        assert!(
            !text.contains("not-it") && !text.contains("nor-this"),
            "{text}"
        );
    }

    #[test]
    fn tampered_hmac_or_ciphertext_is_refused() {
        let fixture = secrets(&[("default", FIXTURE_PASSWORD)]);
        // The inner payload is hex of "hex(salt)\nhex(hmac)\nhex(ciphertext)": change one hex
        // digit of the HMAC (after the first 0a), then one of the ciphertext (the last digit).
        let separator = V11_DEPLOY.find("0a").unwrap();
        let mut hmac_tampered = V11_DEPLOY.to_string();
        let digit = separator + 3;
        assert_eq!(&V11_DEPLOY[digit..=digit], "1");
        hmac_tampered.replace_range(digit..=digit, "2");
        assert!(matches!(
            fixture.decrypt(hmac_tampered.as_bytes()),
            Err(VaultError::WrongPassword { .. })
        ));
        let ciphertext_tampered = V11_DEPLOY.replace("3562\n", "3563\n");
        assert!(matches!(
            fixture.decrypt(ciphertext_tampered.as_bytes()),
            Err(VaultError::WrongPassword { .. })
        ));
    }

    #[test]
    fn bad_padding_behind_a_valid_hmac_is_an_error() {
        let fixture = secrets(&[("default", FIXTURE_PASSWORD)]);
        assert_eq!(
            fixture.decrypt(V11_BAD_PADDING.as_bytes()),
            Err(VaultError::Padding)
        );
        assert_eq!(unpad(vec![4; 15]), Err(VaultError::Padding));
        assert_eq!(unpad(vec![17; 16]), Err(VaultError::Padding));
        assert_eq!(unpad(vec![0; 16]), Err(VaultError::Padding));
        assert_eq!(unpad(Vec::new()), Err(VaultError::Padding));
        assert_eq!(unpad(vec![16; 16]), Ok(Vec::new()));
    }

    #[test]
    fn malformed_envelopes_and_no_password() {
        let fixture = secrets(&[("default", FIXTURE_PASSWORD)]);
        let decrypt = |text: &str| fixture.decrypt(text.as_bytes()).unwrap_err();
        assert_eq!(decrypt("plain: yaml\n"), VaultError::NotVault);
        assert!(matches!(
            decrypt("$ANSIBLE_VAULT\n00\n"),
            VaultError::Format(_)
        ));
        assert!(matches!(
            decrypt("$ANSIBLE_VAULT;1.1;AES256\nzz\n"),
            VaultError::Format(_)
        ));
        assert!(matches!(
            decrypt("$ANSIBLE_VAULT;1.1;AES256\n6162\n"),
            VaultError::Format(_)
        ));
        assert_eq!(
            decrypt("$ANSIBLE_VAULT;1.1;DES\n00\n"),
            VaultError::Cipher("DES".into())
        );
        assert_eq!(
            VaultSecrets::default()
                .decrypt(V11_DEPLOY.as_bytes())
                .unwrap_err(),
            VaultError::NoPassword
        );
    }

    #[test]
    fn debug_output_shows_labels_never_passwords() {
        let shown = format!("{:?}", secrets(&[("prod", "s3cr3t")]));
        assert!(
            shown.contains("prod") && !shown.contains("s3cr3t"),
            "{shown}"
        );
    }
}
