//! TLS to the state database, with libpq's `sslmode` meanings so that a URL that works
//! with `psql` works with pony: `disable` (plain TCP), `prefer` (the default: TLS when the
//! server offers it, its certificate not checked), `require` (TLS or no connection,
//! certificate not checked), `verify-ca` (TLS, the certificate chains to a trusted root)
//! and `verify-full` (and names the host connected to). The roots are
//! `sslrootcert=FILE` (PEM), `sslrootcert=system` (the machine's store) or, as libpq,
//! `~/.postgresql/root.crt`.
//!
//! pony takes `sslmode` and `sslrootcert` off the URL itself: the driver knows no
//! `verify-*` modes. TLS is rustls with the ring provider: no OpenSSL to build against.

use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(text: &str) -> Result<Mode, String> {
        Ok(match text {
            "disable" => Mode::Disable,
            "prefer" | "allow" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(format!(
                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            ))
            }
        })
    }

    fn verifies(self) -> bool {
        matches!(self, Mode::VerifyCa | Mode::VerifyFull)
    }
}

/// Where the roots of a verifying mode come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    File(PathBuf),
    System,
}

/// The TLS settings a URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: Mode,
    roots: Option<Roots>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            mode: Mode::Prefer,
            roots: None,
        }
    }
}

impl TlsSettings {
    /// Takes `sslmode=` and `sslrootcert=` from a URL query's `key=value` pairs; the
    /// other pairs are left for the driver.
    pub fn take(pairs: &mut Vec<&str>) -> Result<TlsSettings, String> {
        let mut settings = TlsSettings::default();
        let mut rest = Vec::new();
        for pair in pairs.drain(..) {
            if let Some(mode) = pair.strip_prefix("sslmode=") {
                settings.mode = Mode::parse(mode)?;
            } else if let Some(root) = pair.strip_prefix("sslrootcert=") {
                settings.roots = Some(match root {
                    "system" => Roots::System,
                    file => Roots::File(PathBuf::from(file)),
                });
            } else if pair.starts_with("sslcert=") || pair.starts_with("sslkey=") {
                return Err(
                    "client certificates (sslcert, sslkey) are not supported: authenticate with a password in the URL".into(),
                );
            } else {
                rest.push(pair);
            }
        }
        *pairs = rest;
        Ok(settings)
    }

    /// The driver's mode: it only knows whether TLS is tried and whether it is a must.
    pub fn driver_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The connector for these settings (`None` for `disable`). Reads the roots now, so
    /// a missing or unreadable root file is an error before anything connects.
    pub fn connector(&self) -> Result<Option<MakeRustlsConnect>, String> {
        if self.mode == Mode::Disable {
            return Ok(None);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let verifier: Arc<dyn ServerCertVerifier> = if self.mode.verifies() {
            let roots = self.root_store()?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| e.to_string())?;
            if self.mode == Mode::VerifyFull {
                webpki
            } else {
                Arc::new(AnyName(webpki))
            }
        } else {
            Arc::new(Unverified(provider))
        };
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Some(MakeRustlsConnect::new(config)))
    }

    fn root_store(&self) -> Result<rustls::RootCertStore, String> {
        let mut store = rustls::RootCertStore::empty();
        let file = match &self.roots {
            Some(Roots::System) => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = store.add(cert);
                }
                if store.is_empty() {
                    return Err("sslrootcert=system: this machine's certificate store holds no certificate".into());
                }
                return Ok(store);
            }
            Some(Roots::File(file)) => file.clone(),
            None => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(".postgresql/root.crt"),
                None => {
                    return Err(format!(
                        "sslmode={} needs the root certificates: add sslrootcert=FILE or sslrootcert=system",
                        self.mode_name()
                    ))
                }
            },
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&file)
            .and_then(|certs| certs.collect())
            .map_err(|e| {
                format!(
                    "sslmode={} reads its root certificates from {}: {e}\n  hint: give them with sslrootcert=FILE (PEM), or sslrootcert=system",
                    self.mode_name(),
                    file.display()
                )
            })?;
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!("{}: no certificate in it", file.display()));
        }
        Ok(store)
    }

    fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Disable => "disable",
            Mode::Prefer => "prefer",
            Mode::Require => "require",
            Mode::VerifyCa => "verify-ca",
            Mode::VerifyFull => "verify-full",
        }
    }
}

/// What to try when connecting failed, by what failed.
pub fn hint(mode: Mode, error: &postgres::Error) -> String {
    let text = format!(
        "{error:#} {}",
        std::error::Error::source(error)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    if text.contains("certificate") || text.contains("TLS") || text.contains("tls") {
        return match mode {
            Mode::VerifyFull => "the server's certificate must chain to a root of sslrootcert and name the host of the URL (sslmode=verify-ca checks only the chain)".into(),
            Mode::VerifyCa => "the server's certificate must chain to a root of sslrootcert".into(),
            _ => "the TLS handshake failed; sslmode=disable connects without TLS (on a trusted network only)".into(),
        };
    }
    if text.contains("SSL") || text.contains("no encryption") || text.contains("pg_hba") {
        return "the server refuses the connection as it is made: check its pg_hba.conf (hostssl or host lines) and the URL's sslmode".into();
    }
    "check that PostgreSQL runs there and accepts this user, or leave --state/PONY_STATE unset to keep state in the local folder".into()
}

/// `prefer` and `require`: encrypted, the server's certificate taken as it comes (what
/// libpq does); the handshake's signatures are still checked.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the name in the certificate is
/// not compared with the host connected to.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_and_the_rest_left() {
        let mut pairs = vec![
            "sslmode=verify-full",
            "connect_timeout=5",
            "sslrootcert=/ca.pem",
        ];
        let settings = TlsSettings::take(&mut pairs).unwrap();
        assert_eq!(settings.mode, Mode::VerifyFull);
        assert_eq!(settings.roots, Some(Roots::File("/ca.pem".into())));
        assert_eq!(pairs, ["connect_timeout=5"]);
        assert_eq!(settings.driver_mode(), SslMode::Require);
        let mut none: Vec<&str> = Vec::new();
        assert_eq!(
            TlsSettings::take(&mut none).unwrap(),
            TlsSettings::default()
        );
        assert!(TlsSettings::take(&mut vec!["sslmode=always"]).is_err());
        assert!(TlsSettings::take(&mut vec!["sslcert=/c.pem"])
            .unwrap_err()
            .contains("not supported"));
    }

    #[test]
    fn a_verifying_mode_without_readable_roots_is_an_error_before_connecting() {
        let settings = TlsSettings {
            mode: Mode::VerifyFull,
            roots: Some(Roots::File("/nonexistent/ca.pem".into())),
        };
        let error = settings.connector().err().unwrap();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        assert!(error.contains("sslrootcert"), "{error}");
    }
}
