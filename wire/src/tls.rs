//! Mutual TLS from PEM files: rustls server and client configs, and the identity (CN) and role (OU)
//! carried by a peer certificate. TLS 1.3 only, ring as the crypto provider.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// What a certificate allows its holder to do; carried in the subject's OU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A probe that sends event batches.
    Agent,
    /// A SOC analyst: reads events, alerts, incidents.
    Analyst,
    /// Manages rules and handles incidents.
    SecurityAdmin,
    /// Reads the audit log, nothing else.
    AuditAdmin,
    /// Manages agents and configuration.
    SystemAdmin,
    /// A replicator peer.
    Replicator,
    /// The collector's own server certificate.
    Server,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 7] = [
        Role::Agent,
        Role::Analyst,
        Role::SecurityAdmin,
        Role::AuditAdmin,
        Role::SystemAdmin,
        Role::Replicator,
        Role::Server,
    ];

    /// The OU string.
    pub fn name(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Analyst => "analyst",
            Role::SecurityAdmin => "security-admin",
            Role::AuditAdmin => "audit-admin",
            Role::SystemAdmin => "system-admin",
            Role::Replicator => "replicator",
            Role::Server => "server",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Role::ALL.iter().map(|r| r.name()).collect();
                format!("unknown role {s:?} (expected one of {})", names.join(", "))
            })
    }
}

/// Who is on the other end of a connection, from its verified certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Subject CN.
    pub name: String,
    /// Subject OU.
    pub role: Role,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// End of the certificate's validity, Unix seconds.
    pub not_after: i64,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, serial {})", self.name, self.role, self.serial)
    }
}

/// TLS setup errors. Each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {reason}")]
    Pem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the material.
    #[error("invalid TLS material ({context}): {source}")]
    Rustls {
        /// What was being built.
        context: String,
        /// rustls's error.
        source: rustls::Error,
    },
    /// The client verifier could not be built (bad CA or CRL).
    #[error("cannot build client-certificate verifier: {0}")]
    Verifier(String),
    /// A certificate lacks the fields an identity needs.
    #[error("certificate identity: {0}")]
    Identity(String),
}

fn pem_err(what: &'static str, path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Reads every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err("certificates", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("certificates", path, e))?;
    if certs.is_empty() {
        return Err(pem_err("certificates", path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Reads the private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_err("private key", path, e))
}

/// Reads every CRL in a PEM file (possibly none).
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| pem_err("certificate revocation list", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err("certificate revocation list", path, e))
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::Rustls {
            context: format!("CA certificate {}", ca.display()),
            source: e,
        })?;
    }
    Ok(roots)
}

/// PEM paths for one side of a mutual-TLS connection.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA that signs every peer.
    pub ca: PathBuf,
    /// This side's certificate chain.
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
}

/// Server config that requires a client certificate signed by the CA and not on the CRL.
pub fn server_config(files: &TlsFiles, crl: Option<&Path>) -> Result<ServerConfig, TlsError> {
    let roots = Arc::new(roots(&files.ca)?);
    let crls = match crl {
        Some(p) if p.exists() => load_crls(p)?,
        _ => Vec::new(),
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .with_crls(crls)
        // Only our CA issues, and it issues only end-entity certificates.
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls {
            context: "protocol versions".into(),
            source: e,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| TlsError::Rustls {
            context: format!("server certificate {}", files.cert.display()),
            source: e,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Client config presenting our certificate and trusting only the CA.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Rustls {
            context: "protocol versions".into(),
            source: e,
        })?
        .with_root_certificates(roots(&files.ca)?)
        .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)
        .map_err(|e| TlsError::Rustls {
            context: format!("client certificate {}", files.cert.display()),
            source: e,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Extracts CN, OU (as a [`Role`]) and serial from a DER certificate.
pub fn identity(cert: &CertificateDer<'_>) -> Result<Identity, TlsError> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| TlsError::Identity(format!("unparseable certificate: {e}")))?;
    let subject = x509.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or_else(|| TlsError::Identity("subject has no CN".into()))?;
    let ou = subject
        .iter_organizational_unit()
        .next()
        .and_then(|a| a.as_str().ok())
        .ok_or_else(|| TlsError::Identity(format!("certificate {cn:?} has no OU (role)")))?;
    let role = ou.parse().map_err(TlsError::Identity)?;
    Ok(Identity {
        name: cn.to_string(),
        role,
        serial: hex(x509.raw_serial()),
        not_after: x509.validity().not_after.timestamp(),
    })
}

/// Lowercase hex without leading zero bytes, as `openssl x509 -serial` prints it (but lowercase).
pub fn hex(bytes: &[u8]) -> String {
    let trimmed: &[u8] = match bytes.iter().position(|&b| b != 0) {
        Some(i) => &bytes[i..],
        None => &[0],
    };
    trimmed.iter().map(|b| format!("{b:02x}")).collect()
}
