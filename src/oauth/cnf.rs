//! The `cnf` (confirmation) claim of a token's verdict (RFC 7800 §3.1): what
//! the token is bound to, read from an introspection answer (RFC 7662 §2.2)
//! or a verified JWT's claims. Two confirmation methods are checked here:
//! `jkt`, the RFC 7638 SHA-256 thumbprint of a DPoP key (RFC 9449 §6), and
//! `x5t#S256`, the SHA-256 of the client's TLS certificate (RFC 8705 §3.1).
//!
//! Fail closed: a `cnf` the module cannot check (not an object, a member
//! that is not a 32-byte base64url value, a confirmation method it does not
//! implement, or no method at all) makes the token `Unverifiable`, never
//! unbound: a bound token must not pass because its binding was not
//! understood.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// What a token's verdict binds it to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// No `cnf`: a bearer token.
    #[default]
    Unbound,
    /// Bound to a DPoP key, a client certificate, or both (both are checked).
    Bound {
        jkt: Option<[u8; 32]>,
        x5t_s256: Option<[u8; 32]>,
    },
    /// A `cnf` the module cannot check: every request with the token is refused.
    Unverifiable,
}

impl Confirmation {
    /// The confirmation of a claims object's `cnf` member (`None`: absent;
    /// JSON `null` counts as absent, as for the other claims).
    pub fn of(cnf: Option<&Value>) -> Confirmation {
        let members = match cnf {
            None | Some(Value::Null) => return Confirmation::Unbound,
            Some(Value::Object(members)) => members,
            Some(_) => return Confirmation::Unverifiable,
        };
        let (mut jkt, mut x5t_s256) = (None, None);
        for (name, value) in members {
            let slot = match name.as_str() {
                "jkt" => &mut jkt,
                "x5t#S256" => &mut x5t_s256,
                _ => return Confirmation::Unverifiable,
            };
            match value.as_str().and_then(sha256_b64u) {
                Some(digest) => *slot = Some(digest),
                None => return Confirmation::Unverifiable,
            }
        }
        match (jkt, x5t_s256) {
            (None, None) => Confirmation::Unverifiable,
            (jkt, x5t_s256) => Confirmation::Bound { jkt, x5t_s256 },
        }
    }

    /// The DPoP key thumbprint the token is bound to.
    pub fn jkt(&self) -> Option<&[u8; 32]> {
        match self {
            Confirmation::Bound { jkt, .. } => jkt.as_ref(),
            _ => None,
        }
    }

    /// The certificate thumbprint the token is bound to.
    pub fn x5t_s256(&self) -> Option<&[u8; 32]> {
        match self {
            Confirmation::Bound { x5t_s256, .. } => x5t_s256.as_ref(),
            _ => None,
        }
    }

    pub fn is_bound(&self) -> bool {
        *self != Confirmation::Unbound
    }
}

/// A SHA-256 digest as base64url without padding (43 characters), strictly.
pub fn sha256_b64u(text: &str) -> Option<[u8; 32]> {
    if text.len() != 43 {
        return None;
    }
    URL_SAFE_NO_PAD.decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const JKT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    #[test]
    fn bindings_are_read() {
        let digest = sha256_b64u(JKT).unwrap();
        assert_eq!(Confirmation::of(None), Confirmation::Unbound);
        assert_eq!(Confirmation::of(Some(&Value::Null)), Confirmation::Unbound);
        let jkt = Confirmation::of(Some(&json!({ "jkt": JKT })));
        assert_eq!(jkt.jkt(), Some(&digest));
        assert_eq!(jkt.x5t_s256(), None);
        let both = Confirmation::of(Some(&json!({ "jkt": JKT, "x5t#S256": JKT })));
        assert_eq!(
            both,
            Confirmation::Bound {
                jkt: Some(digest),
                x5t_s256: Some(digest)
            }
        );
        assert!(both.is_bound() && Confirmation::Unverifiable.is_bound());
    }

    #[test]
    fn what_cannot_be_checked_is_unverifiable() {
        for cnf in [
            json!({}),
            json!("jkt"),
            json!([JKT]),
            json!({ "jkt": 1 }),
            json!({ "jkt": null }),
            json!({ "jkt": "" }),
            json!({ "jkt": &JKT[..42] }),
            json!({ "jkt": format!("{JKT}=") }),
            json!({ "jkt": JKT.replace('-', "+") }),
            json!({ "x5t#S256": "AAAA" }),
            json!({ "jkt": JKT, "jwk": { "kty": "EC" } }),
            json!({ "kid": "k1" }),
            json!({ "x5t": JKT }),
        ] {
            assert_eq!(
                Confirmation::of(Some(&cnf)),
                Confirmation::Unverifiable,
                "{cnf}"
            );
        }
    }
}
