//! HS256 access tokens with pinned algorithm and checked `exp`, `iss`, `aud`.

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;
use crate::domain::Role;
use crate::ids::{TenantId, UserId};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Tenant of the user.
    pub tid: String,
    pub role: Role,
    /// Token id, the key of its revocation entry.
    pub jti: String,
    pub iat: i64,
    /// Issue time in milliseconds, to compare with a password change that
    /// happened within the same second.
    #[serde(default)]
    pub iat_ms: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

impl Claims {
    pub fn user_id(&self) -> UserId {
        UserId::from_trusted(self.sub.clone())
    }
    pub fn tenant_id(&self) -> TenantId {
        TenantId::from_trusted(self.tid.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
    #[error("could not sign token: {0}")]
    Sign(String),
}

#[derive(Clone)]
pub struct TokenIssuer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_seconds: i64,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    pub fn new(config: &JwtConfig) -> Self {
        let secret = config.secret.expose();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl_seconds: config.ttl_seconds,
        }
    }

    pub fn ttl_seconds(&self) -> i64 {
        self.ttl_seconds
    }

    pub fn issue(
        &self,
        user: &UserId,
        tenant: &TenantId,
        role: Role,
    ) -> Result<(String, Claims), JwtError> {
        let now_ms = Utc::now().timestamp_millis();
        let now = now_ms / 1000;
        let claims = Claims {
            sub: user.to_string(),
            tid: tenant.to_string(),
            role,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat: now,
            iat_ms: now_ms,
            exp: now + self.ttl_seconds,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| JwtError::Sign(e.to_string()))?;
        Ok((token, claims))
    }

    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => JwtError::Expired,
                _ => JwtError::Invalid,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config(issuer: &str, audience: &str, secret: &str) -> JwtConfig {
        JwtConfig {
            secret: Secret::new(secret.as_bytes().to_vec()),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_seconds: 3600,
        }
    }

    #[test]
    fn issued_tokens_verify_and_foreign_ones_do_not() -> Result<(), JwtError> {
        let secret = "0123456789abcdef0123456789abcdef";
        let issuer = TokenIssuer::new(&config("iss", "aud", secret));
        let (token, claims) = issuer.issue(&UserId::new(), &TenantId::new(), Role::TenantAdmin)?;
        let verified = issuer.verify(&token)?;
        assert_eq!(verified.jti, claims.jti);
        assert_eq!(verified.role, Role::TenantAdmin);

        let other_aud = TokenIssuer::new(&config("iss", "other", secret));
        assert!(matches!(other_aud.verify(&token), Err(JwtError::Invalid)));
        let other_iss = TokenIssuer::new(&config("other", "aud", secret));
        assert!(matches!(other_iss.verify(&token), Err(JwtError::Invalid)));
        let other_key = TokenIssuer::new(&config("iss", "aud", "ffffffffffffffffffffffffffffffff"));
        assert!(matches!(other_key.verify(&token), Err(JwtError::Invalid)));
        assert!(matches!(issuer.verify("garbage"), Err(JwtError::Invalid)));
        Ok(())
    }

    #[test]
    fn expired_tokens_are_rejected() -> Result<(), JwtError> {
        let secret = "0123456789abcdef0123456789abcdef";
        let issuer = TokenIssuer::new(&config("iss", "aud", secret));
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: "u".into(),
            tid: "t".into(),
            role: Role::TenantUser,
            jti: "j".into(),
            iat: now - 7200,
            iat_ms: 0,
            exp: now - 3600,
            iss: "iss".into(),
            aud: "aud".into(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .map_err(|e| JwtError::Sign(e.to_string()))?;
        assert!(matches!(issuer.verify(&token), Err(JwtError::Expired)));
        Ok(())
    }

    #[test]
    fn unsigned_tokens_are_rejected() -> Result<(), JwtError> {
        use base64::Engine as _;
        let secret = "0123456789abcdef0123456789abcdef";
        let issuer = TokenIssuer::new(&config("iss", "aud", secret));
        let (token, _) = issuer.issue(&UserId::new(), &TenantId::new(), Role::SuperAdmin)?;
        let payload = token.split('.').nth(1).unwrap_or_default();
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"alg":"none","typ":"JWT"}"#);
        assert!(issuer.verify(&format!("{header}.{payload}.")).is_err());
        Ok(())
    }
}
