//! The TLS refusal matrix of every Palisade server and client (collector, replicator `serve` and
//! `sync`, agents and CLIs all build their configs with `palisade_wire::tls`): real handshakes on
//! loopback between a server and a client config made from PEM files, one refused certificate
//! at a time. Each refusal must name its reason on the side that refuses.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;

use palisade_wire::tls::{client_config, server_config, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls::pki_types::ServerName;
use time::{Duration, OffsetDateTime};

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn new_ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.key_identifier_method = KeyIdMethod::Sha256;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(30);
    let cert = p.self_signed(&key).unwrap();
    let pem = cert.pem();
    Ca {
        issuer: Issuer::from_ca_cert_pem(&pem, key).unwrap(),
        pem,
    }
}

/// A leaf certificate: `ou` is the role, `from`..`to` its validity relative to now.
struct Leaf<'a> {
    name: &'a str,
    ou: &'a str,
    sans: &'a [&'a str],
    from: Duration,
    to: Duration,
    serial: u8,
}

impl Leaf<'_> {
    fn ok(name: &'static str, ou: &'static str) -> Leaf<'static> {
        Leaf {
            name,
            ou,
            sans: &["127.0.0.1", "localhost"],
            from: Duration::hours(-1),
            to: Duration::days(10),
            serial: 1,
        }
    }
}

/// Writes `NAME.crt`, `NAME.key` and `ca.crt` into `dir`; returns the files.
fn issue(dir: &Path, ca: &Ca, leaf: &Leaf<'_>) -> TlsFiles {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "Palisade");
    p.distinguished_name
        .push(DnType::OrganizationalUnitName, leaf.ou);
    p.distinguished_name.push(DnType::CommonName, leaf.name);
    p.subject_alt_names = leaf
        .sans
        .iter()
        .map(|s| match s.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(s.to_string().try_into().unwrap()),
        })
        .collect();
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p.serial_number = Some(SerialNumber::from_slice(&[leaf.serial]));
    let now = OffsetDateTime::now_utc();
    p.not_before = now + leaf.from;
    p.not_after = now + leaf.to;
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let files = TlsFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join(format!("{}.crt", leaf.name)),
        key: dir.join(format!("{}.key", leaf.name)),
    };
    std::fs::write(&files.ca, &ca.pem).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

fn crl(dir: &Path, ca: &Ca, revoked: &[u8]) -> std::path::PathBuf {
    let now = OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(1),
        crl_number: SerialNumber::from_slice(&[1]),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&[*s]),
                revocation_time: now,
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let path = dir.join("crl.pem");
    std::fs::write(&path, params.signed_by(&ca.issuer).unwrap().pem().unwrap()).unwrap();
    path
}

/// One exchange on loopback: the client writes a byte, the server echoes it. Returns each
/// side's error, if any.
fn exchange(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
    host: &str,
) -> (Option<String>, Option<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(server);
    let srv = std::thread::spawn(move || -> Option<String> {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let conn = rustls::ServerConnection::new(server).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut b = [0u8; 1];
        match s.read_exact(&mut b).and_then(|_| s.write_all(&b)) {
            Ok(()) => {
                let _ = s.flush();
                None
            }
            Err(e) => Some(e.to_string()),
        }
    });
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let name = ServerName::try_from(host.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
    let mut c = rustls::StreamOwned::new(conn, tcp);
    let mut b = [0u8; 1];
    let client_err = c
        .write_all(b"x")
        .and_then(|_| c.flush())
        .and_then(|_| c.read_exact(&mut b))
        .err()
        .map(|e| e.to_string());
    drop(c);
    (srv.join().unwrap(), client_err)
}

/// A server and a client of one CA, both valid.
fn pair(dir: &Path, ca: &Ca) -> (TlsFiles, TlsFiles) {
    (
        issue(&dir.join("srv"), ca, &Leaf::ok("server", "server")),
        issue(&dir.join("cli"), ca, &Leaf::ok("site-a", "replicator")),
    )
}

#[test]
fn valid_certificates_on_both_sides_talk() {
    let d = tempfile::tempdir().unwrap();
    let ca = new_ca("Palisade CA");
    let (s, c) = pair(d.path(), &ca);
    let (srv, cli) = exchange(
        server_config(&s, None).unwrap(),
        client_config(&c).unwrap(),
        "127.0.0.1",
    );
    assert_eq!((srv, cli), (None, None));
}

#[test]
fn client_certificates_outside_their_validity_or_from_another_ca_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let ca = new_ca("Palisade CA");
    let other = new_ca("Somebody else's CA");
    let (s, _) = pair(d.path(), &ca);
    let cases: [(&str, TlsFiles, &str); 3] = [
        (
            "expired",
            issue(
                &d.path().join("expired"),
                &ca,
                &Leaf {
                    from: Duration::days(-10),
                    to: Duration::days(-1),
                    ..Leaf::ok("old", "agent")
                },
            ),
            "expired",
        ),
        (
            "not yet valid",
            issue(
                &d.path().join("future"),
                &ca,
                &Leaf {
                    from: Duration::days(1),
                    to: Duration::days(10),
                    ..Leaf::ok("early", "agent")
                },
            ),
            "not valid yet",
        ),
        (
            "another CA",
            issue(
                &d.path().join("foreign"),
                &other,
                &Leaf::ok("intruder", "agent"),
            ),
            "unknownissuer",
        ),
    ];
    for (what, mut client, reason) in cases {
        // The client trusts our server (only its own certificate is wrong).
        client.ca = s.ca.clone();
        let (srv, cli) = exchange(
            server_config(&s, None).unwrap(),
            client_config(&client).unwrap(),
            "127.0.0.1",
        );
        let srv = srv.unwrap_or_else(|| panic!("{what}: the server accepted it"));
        assert!(
            srv.to_lowercase().contains(reason),
            "{what}: server said {srv:?}"
        );
        assert!(cli.is_some(), "{what}: the client thinks it was served");
    }
}

#[test]
fn a_revoked_client_certificate_is_refused_and_others_are_not() {
    let d = tempfile::tempdir().unwrap();
    let ca = new_ca("Palisade CA");
    let (s, good) = pair(d.path(), &ca);
    let bad = issue(
        &d.path().join("bad"),
        &ca,
        &Leaf {
            serial: 66,
            ..Leaf::ok("stolen", "replicator")
        },
    );
    let list = crl(d.path(), &ca, &[66]);
    let (srv, cli) = exchange(
        server_config(&s, Some(&list)).unwrap(),
        client_config(&bad).unwrap(),
        "127.0.0.1",
    );
    let srv = srv.expect("revoked certificate accepted");
    assert!(srv.contains("Revoked"), "{srv}");
    assert!(cli.unwrap().contains("CertificateRevoked"));
    let (srv, cli) = exchange(
        server_config(&s, Some(&list)).unwrap(),
        client_config(&good).unwrap(),
        "127.0.0.1",
    );
    assert_eq!((srv, cli), (None, None));
}

#[test]
fn clients_refuse_servers_with_the_wrong_name_an_expired_certificate_or_another_ca() {
    let d = tempfile::tempdir().unwrap();
    let ca = new_ca("Palisade CA");
    let (_, c) = pair(d.path(), &ca);
    let wrong_san = issue(
        &d.path().join("san"),
        &ca,
        &Leaf {
            sans: &["collector.other.example"],
            ..Leaf::ok("server", "server")
        },
    );
    let expired = issue(
        &d.path().join("exp"),
        &ca,
        &Leaf {
            from: Duration::days(-10),
            to: Duration::days(-1),
            ..Leaf::ok("server", "server")
        },
    );
    let other = new_ca("Somebody else's CA");
    let mut impostor = issue(&d.path().join("imp"), &other, &Leaf::ok("server", "server"));
    impostor.ca = c.ca.clone(); // it would trust our clients; they must not trust it
    for (what, server, reason) in [
        ("a name not in its SANs", wrong_san, "not valid for name"),
        ("an expired certificate", expired, "expired"),
        ("a certificate from another CA", impostor, "unknownissuer"),
    ] {
        let (_, cli) = exchange(
            server_config(&server, None).unwrap(),
            client_config(&c).unwrap(),
            "127.0.0.1",
        );
        let cli = cli.unwrap_or_else(|| panic!("client accepted a server with {what}"));
        assert!(
            cli.to_lowercase().contains(reason),
            "{what}: client said {cli:?}"
        );
    }
}

#[test]
fn a_tls12_only_client_and_a_client_without_a_certificate_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let ca = new_ca("Palisade CA");
    let (s, c) = pair(d.path(), &ca);
    let mut roots = rustls::RootCertStore::empty();
    for cert in palisade_wire::tls::load_certs(&c.ca).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls12 = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(
            palisade_wire::tls::load_certs(&c.cert).unwrap(),
            palisade_wire::tls::load_key(&c.key).unwrap(),
        )
        .unwrap();
    let (srv, _) = exchange(server_config(&s, None).unwrap(), tls12, "127.0.0.1");
    let srv = srv.expect("a TLS 1.2 handshake was accepted");
    assert!(srv.contains("Tls12NotOfferedOrEnabled"), "{srv}");

    let anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let (srv, _) = exchange(server_config(&s, None).unwrap(), anonymous, "127.0.0.1");
    let srv = srv.expect("a client without a certificate was accepted");
    assert!(srv.contains("no certificates"), "{srv}");
}
