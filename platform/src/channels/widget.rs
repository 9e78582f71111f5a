//! Website widget visitors: a visitor id per browser and a signed token
//! that proves it, scoped to one channel. Signed with a key derived from the
//! deployment's JWT secret, so every api replica accepts it and nothing is
//! stored per session.

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// How long a visitor token stays valid; the widget asks for a new session
/// (keeping its visitor id) when it expires.
pub const VISITOR_TOKEN_TTL_SECS: i64 = 7 * 24 * 3600;

/// Keeps visitor tokens and staff JWTs apart even though both are HS256.
const AUDIENCE: &str = "aigentable-widget-visitor";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitorClaims {
    /// Channel id.
    pub c: String,
    /// Visitor id.
    pub v: String,
    /// Expiry, Unix seconds.
    #[serde(rename = "exp")]
    pub e: i64,
    aud: String,
}

fn key(secret: &[u8]) -> Vec<u8> {
    // Domain-separated from the JWT signing key.
    let mut k = b"aigentable-widget-visitor:".to_vec();
    k.extend_from_slice(secret);
    k
}

/// An HS256 JWT for this visitor on this channel.
pub fn issue(secret: &[u8], channel_id: &str, visitor_id: &str) -> String {
    let claims = VisitorClaims {
        c: channel_id.to_owned(),
        v: visitor_id.to_owned(),
        e: Utc::now().timestamp() + VISITOR_TOKEN_TTL_SECS,
        aud: AUDIENCE.to_owned(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&key(secret)),
    )
    .unwrap_or_default()
}

/// The claims of a valid, unexpired token.
pub fn verify(secret: &[u8], token: &str) -> Option<VisitorClaims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    validation.leeway = 0;
    jsonwebtoken::decode::<VisitorClaims>(
        token,
        &DecodingKey::from_secret(&key(secret)),
        &validation,
    )
    .ok()
    .map(|data| data.claims)
}

/// How long after its expiry a visitor token still lets its browser resume
/// the same visitor (and conversation) with a new session.
pub const RESUME_WINDOW_SECS: i64 = 90 * 24 * 3600;

/// The claims of a token this server issued for `channel_id`, expired or
/// not (within [`RESUME_WINDOW_SECS`]): how a returning browser proves its
/// visitor id, which is never taken from the client as such.
pub fn resumable(secret: &[u8], token: &str, channel_id: &str) -> Option<VisitorClaims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_required_spec_claims(&["exp", "aud"]);
    validation.validate_exp = false;
    let claims = jsonwebtoken::decode::<VisitorClaims>(
        token,
        &DecodingKey::from_secret(&key(secret)),
        &validation,
    )
    .ok()?
    .claims;
    (claims.c == channel_id && claims.e + RESUME_WINDOW_SECS > Utc::now().timestamp())
        .then_some(claims)
}

/// A client-chosen id (e.g. a widget message id) must look like one of ours.
pub fn valid_visitor_id(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_with_the_same_secret_only() {
        let t = issue(b"k1", "chan", "visitor-1");
        let c = verify(b"k1", &t).expect("valid");
        assert_eq!((c.c.as_str(), c.v.as_str()), ("chan", "visitor-1"));
        assert!(verify(b"k2", &t).is_none());
        let (p, s) = t.split_once('.').expect("dot");
        let forged = format!("{}x.{s}", p);
        assert!(verify(b"k1", &forged).is_none());
        assert!(verify(b"k1", "garbage").is_none());
        assert_eq!(
            resumable(b"k1", &t, "chan").map(|c| c.v).as_deref(),
            Some("visitor-1")
        );
        assert!(resumable(b"k1", &t, "other-chan").is_none());
        assert!(resumable(b"k2", &t, "chan").is_none());
    }
}
