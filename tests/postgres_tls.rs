//! TLS to the state database, on a real PostgreSQL that takes TCP clients over TLS only
//! (`hostnossl … reject`) and presents a certificate for 127.0.0.1 signed by a CA made
//! for the test: libpq's `sslmode` meanings (disable, prefer, require, verify-ca,
//! verify-full, `sslrootcert=FILE`), each checked by whether pony gets in, and a run whose
//! journal goes over TLS.

mod support;

use support::code;

use pony::lab::postgres::{Postgres, ServerTls, Sync};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::process::Output;
use support::{deploy_args, pony, text, write_plan};

/// A CA (its certificate in PEM) and an issuer to sign with.
fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// A server certificate for `names`, signed by `issuer`.
fn server_cert(names: &[&str], issuer: &Issuer<'static, KeyPair>) -> ServerTls {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    ServerTls {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// `pony history` against `url`: it connects and reads the schema (none yet: no runs).
fn history(dir: &Path, url: &str) -> Output {
    pony(dir, &["history"])
        .env("PONY_STATE", url)
        .output()
        .unwrap()
}

fn server_and_ca(dir: &Path) -> (Postgres, std::path::PathBuf) {
    let (ca_pem, issuer) = authority("pony test CA");
    let tls = server_cert(&["127.0.0.1"], &issuer);
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let server = Postgres::start_tls(Sync::Fast, &tls)
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e:#}"));
    (server, ca)
}

#[test]
fn sslmodes_mean_what_they_mean_for_psql() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = server_and_ca(dir.path());
    let url = server.url();
    let port = url.rsplit(':').next().unwrap().split('/').next().unwrap();
    let by_name = format!("postgres://pony@localhost:{port}/postgres");
    let ca = ca.display();
    let (other_ca, _) = authority("someone else's CA");
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    let other = other.display();

    // Gets in: the server takes TLS only, so each of these went over TLS.
    for url in [
        url.clone(), // prefer, libpq's default
        format!("{url}?sslmode=require"),
        format!("{url}?sslmode=verify-ca&sslrootcert={ca}"),
        format!("{url}?sslmode=verify-full&sslrootcert={ca}&connect_timeout=10"),
        // The certificate names 127.0.0.1, not localhost: only the chain is checked.
        format!("{by_name}?sslmode=verify-ca&sslrootcert={ca}"),
    ] {
        let out = history(dir.path(), &url);
        assert_eq!(code(&out), 0, "{url}: {}", text(&out));
    }

    // Refused, each with its reason and a hint.
    let refused = |url: String, expected: &[&str]| {
        let out = history(dir.path(), &url);
        assert_eq!(code(&out), 2, "{url}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        for part in expected {
            assert!(err.contains(part), "{url}: `{part}` missing from: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    };
    // Plain TCP: the server's pg_hba.conf rejects it.
    refused(
        format!("{url}?sslmode=disable"),
        &["cannot reach the state database", "no encryption", "hint:"],
    );
    // verify-full also names the host: localhost is not in the certificate.
    refused(
        format!("{by_name}?sslmode=verify-full&sslrootcert={ca}"),
        &["certificate", "hint: the server's certificate must chain"],
    );
    // A certificate from a CA not trusted here.
    refused(
        format!("{url}?sslmode=verify-full&sslrootcert={other}"),
        &["certificate", "hint:"],
    );
    // Verifying without readable roots: an error before connecting.
    refused(
        format!("{url}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
        &["/nonexistent/ca.pem", "sslrootcert"],
    );
    refused(
        format!("{url}?sslmode=sometimes"),
        &["sslmode `sometimes`", "hint: give it as postgres://"],
    );
}

#[test]
fn a_run_over_verify_full_keeps_its_journal_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = server_and_ca(dir.path());
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        server.url(),
        ca.display()
    );
    let (inventory, playbook) = write_plan(
        dir.path(),
        "name: tls\ndefaults: { connection: local }\nregions:\n  r1:\n    clusters:\n      c1:\n        hosts:\n          h1: {}\n          h2: {}\n",
        "name: tls\nsteps:\n  - { name: mark, run: \"echo deployed > marker\" }\n",
    );
    let state = dir.path().join("state-a");
    let deploy = pony(&state, &deploy_args(&inventory, &playbook))
        .env("PONY_STATE", &url)
        .output()
        .unwrap();
    assert_eq!(code(&deploy), 0, "{}", text(&deploy));
    for host in ["h1", "h2"] {
        let marker = state.join("hosts").join(host).join("marker");
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "deployed\n");
    }
    // Another machine (another state folder) reads the run from the database, over TLS.
    let status = pony(&dir.path().join("state-b"), &["status", "--output", "json"])
        .env("PONY_STATE", &url)
        .output()
        .unwrap();
    assert_eq!(code(&status), 0, "{}", text(&status));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["outcome"], "succeeded", "{report}");
    assert_eq!(report["tasks"]["total"]["succeeded"], 2, "{report}");
}
