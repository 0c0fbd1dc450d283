//! Connection tokens: JWTs signed with HS256 (a shared secret) or RS256 (the application's
//! private key; the server holds the public key). A token names the user (`sub`) and when it
//! expires (`exp`, seconds since the epoch; required). A connection presents one at upgrade and
//! may present a new one (`refresh`) before the first expires.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, errors::ErrorKind};
use serde::Deserialize;

/// What a valid token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The user.
    pub user: String,
    /// Expiry, seconds since the Unix epoch.
    pub expires: u64,
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, wrongly signed, or without the claims it needs: HTTP 401.
    Invalid,
    /// Past its `exp`: HTTP 401 at upgrade, close 3500 later.
    Expired,
    /// Valid, but its user is not allowed here (an empty `sub`): HTTP 403.
    Forbidden,
}

impl TokenError {
    /// The HTTP status an upgrade gets for it.
    pub fn status(self) -> u16 {
        match self {
            TokenError::Invalid | TokenError::Expired => 401,
            TokenError::Forbidden => 403,
        }
    }
}

#[derive(Deserialize)]
struct Raw {
    sub: String,
    exp: u64,
}

/// Checks tokens with one key.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish()
    }
}

/// Why a key could not be loaded.
#[derive(Debug)]
pub struct KeyError(jsonwebtoken::errors::Error);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unusable token key: {}", self.0)
    }
}

impl std::error::Error for KeyError {}

impl Verifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        let key = DecodingKey::from_secret(secret).map_err(KeyError)?;
        Ok(Self::with(key, Algorithm::HS256))
    }

    /// RS256 with an RSA public key in PEM.
    pub fn rs256(public_pem: &[u8]) -> Result<Self, KeyError> {
        let key = DecodingKey::from_rsa_pem(public_pem).map_err(KeyError)?;
        Ok(Self::with(key, Algorithm::RS256))
    }

    fn with(key: DecodingKey, alg: Algorithm) -> Self {
        let mut validation = Validation::new(alg);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Verifier { key, validation }
    }

    /// Checks a token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data =
            decode::<Raw>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })?;
        let Raw { sub, exp } = data.claims;
        if sub.is_empty() || !crate::protocol::valid_name(&sub) {
            return Err(TokenError::Forbidden);
        }
        // jsonwebtoken checks `exp` against its clock already; this keeps the rule explicit.
        if exp <= now_secs() {
            return Err(TokenError::Expired);
        }
        Ok(Claims {
            user: sub,
            expires: exp,
        })
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde::Serialize;

    #[derive(Serialize)]
    struct Out<'a> {
        sub: &'a str,
        exp: u64,
    }

    fn hs(secret: &[u8], sub: &str, exp: u64) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &Out { sub, exp },
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn hs256_tokens_are_checked() {
        let v = Verifier::hs256(b"s3cret").unwrap();
        let later = now_secs() + 3600;
        assert_eq!(
            v.verify(&hs(b"s3cret", "alice", later)),
            Ok(Claims {
                user: "alice".into(),
                expires: later
            })
        );
        assert_eq!(
            v.verify(&hs(b"other", "alice", later)),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            v.verify(&hs(b"s3cret", "alice", now_secs() - 10)),
            Err(TokenError::Expired)
        );
        assert_eq!(
            v.verify(&hs(b"s3cret", "", later)),
            Err(TokenError::Forbidden)
        );
        assert_eq!(v.verify("not.a.token"), Err(TokenError::Invalid));
        assert_eq!(v.verify(""), Err(TokenError::Invalid));
    }

    #[test]
    fn rs256_tokens_are_checked_with_the_public_key() {
        let private = include_bytes!("../tests/keys/rs256-private.pem");
        let public = include_bytes!("../tests/keys/rs256-public.pem");
        let v = Verifier::rs256(public).unwrap();
        let later = now_secs() + 3600;
        let token = encode(
            &Header::new(Algorithm::RS256),
            &Out {
                sub: "bob",
                exp: later,
            },
            &EncodingKey::from_rsa_pem(private).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&token).unwrap().user, "bob");
        // An HS256 token signed with the public key as secret (the classic confusion) fails.
        assert_eq!(
            v.verify(&hs(public, "bob", later)),
            Err(TokenError::Invalid)
        );
        assert!(Verifier::rs256(b"not a pem").is_err());
    }
}
