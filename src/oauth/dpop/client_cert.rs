//! Client certificates from a trusted front (RFC 9440): where TLS ends
//! before nginx, the front forwards the client's certificate in a
//! `Client-Cert` header, a structured-field byte sequence (`:base64:`) of
//! its DER. Read only from the configured addresses (as `set_real_ip_from`
//! does for addresses): anyone else could name any certificate.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// The largest certificate read: a chain's leaf with many extensions is a
/// few KiB.
pub const MAX_CERT_BYTES: usize = 16 * 1024;

/// The SHA-256 of the certificate in the request's `Client-Cert` headers
/// (all of them): exactly one, a byte sequence holding a DER X.509
/// certificate; `None` for anything else.
pub fn from_header(values: &[&[u8]]) -> Option<[u8; 32]> {
    let [value] = values else {
        return None;
    };
    let inner = value.trim_ascii().strip_prefix(b":")?.strip_suffix(b":")?;
    if inner.len() > MAX_CERT_BYTES * 4 / 3 + 4 {
        return None;
    }
    let der = STANDARD.decode(inner).ok()?;
    // A certificate, not any bytes: what the front passed on must parse.
    openssl::x509::X509::from_der(&der).ok()?;
    Some(Sha256::digest(&der).into())
}

/// An address block of `auth_oauth2_token_client_cert_from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `ADDRESS` or `ADDRESS/PREFIX`, IPv4 or IPv6; host bits must be zero.
    pub fn parse(arg: &[u8]) -> Result<Cidr, String> {
        let text = std::str::from_utf8(arg).map_err(|_| "is not an address".to_string())?;
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("has an invalid address \"{text}\""))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("has an invalid prefix length in \"{text}\""))?,
        };
        let cidr = Cidr { addr, prefix };
        match cidr.contains(&addr) && cidr.network() == bits(&addr) {
            true => Ok(cidr),
            false => Err(format!("\"{text}\" has host bits set")),
        }
    }

    pub fn contains(&self, addr: &IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket comes as ::ffff:a.b.c.d.
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*addr, IpAddr::V4),
            v4 => *v4,
        };
        if addr.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        mask(bits(&addr), self.prefix, self.addr.is_ipv4()) == self.network()
    }

    fn network(&self) -> u128 {
        mask(bits(&self.addr), self.prefix, self.addr.is_ipv4())
    }
}

fn bits(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(*v4)),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

fn mask(bits: u128, prefix: u8, v4: bool) -> u128 {
    let width = if v4 { 32 } else { 128 };
    match prefix {
        0 => 0,
        p => bits & (u128::MAX << (width - u32::from(p))) & (u128::MAX >> (128 - width)),
    }
}

/// Whether `peer` is one of the trusted fronts.
pub fn trusted(from: &[Cidr], peer: &IpAddr) -> bool {
    from.iter().any(|cidr| cidr.contains(peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509Builder, X509NameBuilder};

    fn certificate() -> Vec<u8> {
        let key = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "client").unwrap();
        let name = name.build();
        let mut builder = X509Builder::new().unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        builder.build().to_der().unwrap()
    }

    #[test]
    fn the_header_holds_one_certificate() {
        let der = certificate();
        let value = format!(":{}:", STANDARD.encode(&der));
        let digest: [u8; 32] = Sha256::digest(&der).into();
        assert_eq!(from_header(&[value.as_bytes()]), Some(digest));
        assert_eq!(
            from_header(&[format!(" {value} ").as_bytes()]),
            Some(digest)
        );
        for bad in [
            STANDARD.encode(&der),
            format!(":{}", STANDARD.encode(&der)),
            format!(":{}:", STANDARD.encode(b"not a certificate")),
            // Not base64, and base64 of bytes that are no certificate.
            format!(":{}*:", STANDARD.encode(&der)),
            format!(":{}:", &STANDARD.encode(&der)[4..]),
            "::".to_string(),
        ] {
            assert_eq!(from_header(&[bad.as_bytes()]), None, "{bad}");
        }
        assert_eq!(from_header(&[]), None);
        assert_eq!(from_header(&[value.as_bytes(), value.as_bytes()]), None);
    }

    #[test]
    fn address_blocks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let lan = Cidr::parse(b"10.1.0.0/16").unwrap();
        assert!(lan.contains(&ip("10.1.2.3")) && !lan.contains(&ip("10.2.0.1")));
        assert!(lan.contains(&ip("::ffff:10.1.9.9")));
        assert!(!lan.contains(&ip("::1")));
        let one = Cidr::parse(b"127.0.0.1").unwrap();
        assert!(one.contains(&ip("127.0.0.1")) && !one.contains(&ip("127.0.0.2")));
        let v6 = Cidr::parse(b"2001:db8::/32").unwrap();
        assert!(v6.contains(&ip("2001:db8:1::5")) && !v6.contains(&ip("2001:db9::1")));
        let all = Cidr::parse(b"0.0.0.0/0").unwrap();
        assert!(all.contains(&ip("192.0.2.1")));
        for bad in [
            &b"10.1.0.1/16"[..],
            b"10.0.0.0/33",
            b"nope",
            b"10.0.0.0/x",
            b"::/129",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad:?}");
        }
        assert!(trusted(&[one, lan], &ip("10.1.0.7")));
        assert!(!trusted(&[], &ip("127.0.0.1")));
    }
}
