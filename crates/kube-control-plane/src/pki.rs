//! The PKI of one control plane, generated in-process (ECDSA P-256; no `openssl` needed).

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// PEM texts of everything the servers and clients need.
#[derive(Debug)]
pub(crate) struct Pki {
    pub ca_crt: String,
    pub serving_crt: String,
    pub serving_key: String,
    pub admin_crt: String,
    pub admin_key: String,
    /// A client certificate for kube-controller-manager: also `system:masters` (it runs with
    /// `--use-service-account-credentials=false`), but its own user name keeps its requests
    /// apart from the test's `admin` in the audit log.
    pub kcm_crt: String,
    pub kcm_key: String,
    /// The harness's own identity (readiness polls, audit markers, test helpers), so that
    /// `admin` in the audit log is exactly what the test did.
    pub harness_crt: String,
    pub harness_key: String,
    /// The ServiceAccount token signing key (PKCS#8) and its public key (SPKI).
    pub sa_key: String,
    pub sa_pub: String,
}

/// The user name of the admin client certificate.
pub(crate) const ADMIN_USER: &str = "admin";
/// The user name of kube-controller-manager's client certificate.
pub(crate) const KCM_USER: &str = "system:kube-controller-manager";
/// The user name of the harness's own client certificate.
pub(crate) const HARNESS_USER: &str = "kube-control-plane";

fn dn(pairs: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in pairs {
        dn.push(ty.clone(), *value);
    }
    dn
}

impl Pki {
    pub(crate) fn generate(name: &str) -> Result<Self, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = dn(&[(DnType::CommonName, &format!("{name}-ca"))]);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(
            [
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from)
            .to_vec(),
        )?;
        serving.distinguished_name = dn(&[(DnType::CommonName, "kube-apiserver")]);
        serving.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_crt = serving.signed_by(&serving_key, &issuer)?;

        let client = |user: &str| -> Result<(String, String), rcgen::Error> {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name = dn(&[
                (DnType::OrganizationName, "system:masters"),
                (DnType::CommonName, user),
            ]);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let cert = params.signed_by(&key, &issuer)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let (admin_crt, admin_key) = client(ADMIN_USER)?;
        let (kcm_crt, kcm_key) = client(KCM_USER)?;
        let (harness_crt, harness_key) = client(HARNESS_USER)?;

        let sa = KeyPair::generate()?;
        Ok(Self {
            ca_crt: ca_cert.pem(),
            serving_crt: serving_crt.pem(),
            serving_key: serving_key.serialize_pem(),
            admin_crt,
            admin_key,
            kcm_crt,
            kcm_key,
            harness_crt,
            harness_key,
            sa_key: sa.serialize_pem(),
            sa_pub: sa.public_key_pem(),
        })
    }
}
