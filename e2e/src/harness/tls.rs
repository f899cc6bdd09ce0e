//! Certificates made at test time with the `openssl` command: a CA, and a broker
//! certificate it signs for the loopback addresses.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::tools;

/// How the harness finds `openssl`.
pub const OPENSSL_INSTALL: &str = "apt-get install openssl, or scripts/setup";

/// A CA and a broker certificate signed by it, as PEM files.
#[derive(Clone, Debug)]
pub struct Certificates {
    /// The CA's certificate: what a client trusts (`ssl.ca.location`).
    pub ca: PathBuf,
    /// The broker's private key (PKCS#8) followed by its certificate: a PEM keystore
    /// (`ssl.keystore.type=PEM`).
    pub keystore: PathBuf,
}

/// Makes a CA named `name` in `dir` and returns its certificate; its key lies beside it
/// (`<name>.key`).
pub fn ca(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "7",
        "-subj",
        &format!("/CN={name}"),
        "-keyout",
        path(&key)?,
        "-out",
        path(&cert)?,
    ])?;
    Ok(cert)
}

/// Makes a CA and a broker certificate for `127.0.0.1` and `localhost` in `dir`.
pub fn broker(dir: &Path) -> anyhow::Result<Certificates> {
    let ca = ca(dir, "gameshard-test-ca")?;
    let (key, csr, cert) = (dir.join("broker.key"), dir.join("broker.csr"), dir.join("broker.crt"));
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        path(&key)?,
        "-out",
        path(&csr)?,
    ])?;
    let extensions = dir.join("broker.ext");
    std::fs::write(&extensions, "subjectAltName=IP:127.0.0.1,DNS:localhost\n")?;
    openssl(&[
        "x509",
        "-req",
        "-days",
        "7",
        "-in",
        path(&csr)?,
        "-CA",
        path(&ca)?,
        "-CAkey",
        path(&dir.join("gameshard-test-ca.key"))?,
        "-CAcreateserial",
        "-extfile",
        path(&extensions)?,
        "-out",
        path(&cert)?,
    ])?;
    let keystore = dir.join("broker-keystore.pem");
    std::fs::write(&keystore, [std::fs::read(&key)?, std::fs::read(&cert)?].concat())?;
    Ok(Certificates { ca, keystore })
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| format!("{} is not UTF-8", p.display()))
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let binary = tools::find("openssl")
        .with_context(|| format!("openssl is required: {OPENSSL_INSTALL}"))?;
    let out = Command::new(binary).args(args).output().context("running openssl")?;
    if !out.status.success() {
        bail!("openssl {} failed: {}", args[0], String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
