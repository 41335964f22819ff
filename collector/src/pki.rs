//! The collector's certificate authority: `pki init | issue | revoke | list`.
//!
//! Layout of a PKI directory:
//! ```text
//! ca.crt ca.key            the CA (key 0600)
//! crl.pem                  revocation list, re-signed on every revoke; the collector re-reads it
//! issued.json              register of every certificate issued: serial, name, role, expiry, revocation
//! <name>.crt <name>.key    one pair per identity (collector, security-admin, agent-1, …)
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use palisade_wire::event::valid_agent_id;
use palisade_wire::tls::Role;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// The admin roles `pki init` issues one certificate for.
pub const ADMIN_ROLES: [Role; 3] = [Role::SecurityAdmin, Role::AuditAdmin, Role::SystemAdmin];

/// CN of the collector's server certificate.
pub const SERVER_NAME: &str = "palisade-collector";

/// PKI errors, each naming the file or identity involved.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Filesystem trouble.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// rcgen refused.
    #[error("certificate generation ({context}): {source}")]
    Rcgen {
        /// What was being generated.
        context: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// The register is unreadable.
    #[error("corrupt register {path}: {reason}")]
    Register {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A request that cannot be honoured.
    #[error("{0}")]
    Refused(String),
}

/// One line of the register.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedCert {
    /// Serial (lowercase hex, as `palisade_wire::tls::hex` prints it).
    pub serial: String,
    /// CN.
    pub name: String,
    /// OU.
    pub role: String,
    /// Expiry (RFC 3339).
    pub not_after: String,
    /// When revoked (RFC 3339), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// Paths of one issued identity.
#[derive(Clone, Debug)]
pub struct IssuedFiles {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, 0600).
    pub key: PathBuf,
    /// Serial (hex).
    pub serial: String,
}

/// A PKI directory.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn rc_err(context: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let context = context.into();
    move |source| PkiError::Rcgen { context, source }
}

/// Writes `data` to `path` atomically (temp file + rename) with the given mode.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("cannot create", &tmp))?;
    // `mode` applies only on creation; a leftover temp file keeps its old mode otherwise.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("cannot chmod", &tmp))?;
    f.write_all(data).map_err(io_err("cannot write", &tmp))?;
    f.sync_all().map_err(io_err("cannot sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("cannot rename into", path))
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| PkiError::Refused(format!("no system randomness for a serial: {e}")))?;
    // Positive and without a leading zero byte, so every tool prints it the same way.
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    Ok(SerialNumber::from_slice(&bytes))
}

fn dn(name: &str, role: Role) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Palisade");
    dn.push(DnType::OrganizationalUnitName, role.name());
    dn.push(DnType::CommonName, name);
    dn
}

impl Pki {
    /// A handle on `dir` (which may not exist yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Pki { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// CA certificate path.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// CRL path.
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    fn register_path(&self) -> PathBuf {
        self.dir.join("issued.json")
    }

    /// Certificate and key paths for `name`.
    pub fn files(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        )
    }

    /// Creates the CA, the CRL, the collector's server certificate (SANs localhost, 127.0.0.1,
    /// ::1 and `extra_sans`) and one certificate per admin role. Refuses an existing CA.
    pub fn init(&self, extra_sans: &[String], days: u32) -> Result<Vec<IssuedFiles>, PkiError> {
        if self.ca_cert().exists() {
            return Err(PkiError::Refused(format!(
                "{} already holds a CA; refusing to overwrite it",
                self.dir.display()
            )));
        }
        fs::create_dir_all(&self.dir).map_err(io_err("cannot create", &self.dir))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("cannot chmod", &self.dir))?;
        let key = KeyPair::generate().map_err(rc_err("CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = {
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, "Palisade");
            dn.push(DnType::CommonName, "Palisade CA");
            dn
        };
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.key_identifier_method = KeyIdMethod::Sha256;
        params.serial_number = Some(random_serial()?);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(3650);
        let cert = params.self_signed(&key).map_err(rc_err("CA certificate"))?;
        write_file(&self.ca_key(), key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&self.ca_cert(), cert.pem().as_bytes(), 0o644)?;
        self.save_register(&[])?;
        self.write_crl(&[])?;

        let mut issued = Vec::new();
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        sans.extend(extra_sans.iter().cloned());
        issued.push(self.issue(Role::Server, SERVER_NAME, &sans, days)?);
        for role in ADMIN_ROLES {
            issued.push(self.issue(role, role.name(), &[], days)?);
        }
        Ok(issued)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key_pem = fs::read_to_string(self.ca_key())
            .map_err(io_err("cannot read CA key", &self.ca_key()))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(rc_err(format!("CA key {}", self.ca_key().display())))?;
        let cert_pem = fs::read_to_string(self.ca_cert())
            .map_err(io_err("cannot read CA certificate", &self.ca_cert()))?;
        Issuer::from_ca_cert_pem(&cert_pem, key).map_err(rc_err(format!(
            "CA certificate {}",
            self.ca_cert().display()
        )))
    }

    /// Issues a certificate for `name` with `role`, valid `days` days.
    pub fn issue(
        &self,
        role: Role,
        name: &str,
        sans: &[String],
        days: u32,
    ) -> Result<IssuedFiles, PkiError> {
        if !valid_agent_id(name) {
            return Err(PkiError::Refused(format!(
                "name {name:?} must be 1-64 of A-Z a-z 0-9 . _ -"
            )));
        }
        let mut register = self.load_register()?;
        if register
            .iter()
            .any(|c| c.name == name && c.revoked_at.is_none())
        {
            return Err(PkiError::Refused(format!(
                "{name:?} already has a valid certificate; revoke it first"
            )));
        }
        let issuer = self.issuer()?;
        let key = KeyPair::generate().map_err(rc_err(format!("key for {name}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(name, role);
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(rc_err(format!("SAN {s:?}"))),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if role == Role::Server {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        } else if role == Role::Replicator {
            // Replicator peers both serve and connect.
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        params.use_authority_key_identifier_extension = true;
        let serial = random_serial()?;
        let serial_hex = palisade_wire::tls::hex(serial.as_ref());
        params.serial_number = Some(serial);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(i64::from(days.max(1)));
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(rc_err(format!("certificate for {name}")))?;
        let (cert_path, key_path) = self.files(name);
        write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
        register.push(IssuedCert {
            serial: serial_hex.clone(),
            name: name.to_string(),
            role: role.name().to_string(),
            not_after: rfc3339(params.not_after),
            revoked_at: None,
        });
        self.save_register(&register)?;
        Ok(IssuedFiles {
            cert: cert_path,
            key: key_path,
            serial: serial_hex,
        })
    }

    /// Revokes the certificate with `serial` (hex, case and leading zeros ignored) and re-signs
    /// the CRL. Returns the revoked entry.
    pub fn revoke(&self, serial: &str) -> Result<IssuedCert, PkiError> {
        let wanted = normalize_serial(serial);
        let mut register = self.load_register()?;
        let entry = register
            .iter_mut()
            .find(|c| c.serial == wanted)
            .ok_or_else(|| PkiError::Refused(format!("no certificate with serial {serial}")))?;
        if entry.revoked_at.is_some() {
            return Err(PkiError::Refused(format!(
                "serial {serial} ({}) is already revoked",
                entry.name
            )));
        }
        entry.revoked_at = Some(rfc3339(OffsetDateTime::now_utc()));
        let revoked = entry.clone();
        self.write_crl(&register)?;
        self.save_register(&register)?;
        Ok(revoked)
    }

    /// The register.
    pub fn list(&self) -> Result<Vec<IssuedCert>, PkiError> {
        self.load_register()
    }

    fn write_crl(&self, register: &[IssuedCert]) -> Result<(), PkiError> {
        let issuer = self.issuer()?;
        let now = OffsetDateTime::now_utc();
        let revoked_certs = register
            .iter()
            .filter(|c| c.revoked_at.is_some())
            .map(|c| {
                let bytes = parse_hex(&c.serial).ok_or_else(|| PkiError::Register {
                    path: self.register_path(),
                    reason: format!("serial {:?} is not hex", c.serial),
                })?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: now,
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let number = (now.unix_timestamp() as u64).to_be_bytes();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(365),
            crl_number: SerialNumber::from_slice(&number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer).map_err(rc_err("CRL"))?;
        let pem = crl.pem().map_err(rc_err("CRL PEM"))?;
        write_file(&self.crl(), pem.as_bytes(), 0o644)
    }

    fn load_register(&self) -> Result<Vec<IssuedCert>, PkiError> {
        let path = self.register_path();
        if !self.ca_cert().exists() {
            return Err(PkiError::Refused(format!(
                "{} holds no CA; run `palisade-collector pki init --dir {}` first",
                self.dir.display(),
                self.dir.display()
            )));
        }
        let text = fs::read_to_string(&path).map_err(io_err("cannot read", &path))?;
        serde_json::from_str(&text).map_err(|e| PkiError::Register {
            path,
            reason: e.to_string(),
        })
    }

    fn save_register(&self, register: &[IssuedCert]) -> Result<(), PkiError> {
        let json = serde_json::to_vec_pretty(register).map_err(|e| PkiError::Register {
            path: self.register_path(),
            reason: e.to_string(),
        })?;
        write_file(&self.register_path(), &json, 0o600)
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn normalize_serial(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase().replace(':', "");
    let s = s.strip_prefix("0x").unwrap_or(&s);
    let t = s.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else if t.len() % 2 == 1 {
        format!("0{t}")
    } else {
        t.to_string()
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::tls::{identity, load_certs};

    #[test]
    fn init_issue_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path().join("pki"));
        let issued = pki.init(&["soc.example".into()], 30).unwrap();
        assert_eq!(issued.len(), 4);
        let key_mode = fs::metadata(pki.dir().join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
        let a = pki.issue(Role::Agent, "probe-1", &[], 30).unwrap();
        let mode = fs::metadata(&a.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let id = identity(&load_certs(&a.cert).unwrap()[0]).unwrap();
        assert_eq!(id.name, "probe-1");
        assert_eq!(id.role, Role::Agent);
        assert_eq!(id.serial, a.serial);
        assert!(
            pki.issue(Role::Agent, "probe-1", &[], 30).is_err(),
            "duplicate name"
        );
        let r = pki.revoke(&a.serial.to_uppercase()).unwrap();
        assert_eq!(r.name, "probe-1");
        assert!(pki.revoke(&a.serial).is_err(), "double revoke");
        let crls = palisade_wire::tls::load_crls(&pki.crl()).unwrap();
        assert_eq!(crls.len(), 1);
        // A revoked name can be issued again.
        pki.issue(Role::Agent, "probe-1", &[], 30).unwrap();
        assert!(pki.init(&[], 30).is_err(), "init twice");
    }

    #[test]
    fn serial_normalization() {
        assert_eq!(normalize_serial("0x0A:bC"), "0abc");
        assert_eq!(normalize_serial("00ff"), "ff");
        assert_eq!(parse_hex("0abc"), Some(vec![0x0a, 0xbc]));
    }
}
