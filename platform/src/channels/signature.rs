//! Webhook authenticity: Meta's `X-Hub-Signature-256` (HMAC-SHA256 of the
//! raw body with the app secret) and Telegram's secret token header. Both
//! compared in constant time, on the raw bytes, before anything is parsed
//! or stored.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a delivery was refused (logged, never shown in detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature header is missing")]
    Missing,
    #[error("signature header is malformed")]
    Malformed,
    #[error("signature does not match")]
    Mismatch,
}

/// Checks `header` (`sha256=<hex>`) against HMAC-SHA256(`app_secret`, `body`).
pub fn verify_meta(
    app_secret: &str,
    body: &[u8],
    header: Option<&str>,
) -> Result<(), SignatureError> {
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(SignatureError::Missing)?;
    let hex_sig = header
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed)?;
    let expected = hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?;
    let mut mac =
        HmacSha256::new_from_slice(app_secret.as_bytes()).map_err(|_| SignatureError::Mismatch)?;
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

/// The header value Meta would send for `body` (tests, benchmarks, fakes).
pub fn sign_meta(app_secret: &str, body: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(app_secret.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length.
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Compares Telegram's `X-Telegram-Bot-Api-Secret-Token` with ours.
pub fn verify_secret_token(expected: &str, header: Option<&str>) -> Result<(), SignatureError> {
    let given = header.ok_or(SignatureError::Missing)?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_signatures_verify_only_with_the_right_secret_and_body() {
        let body = br#"{"object":"page"}"#;
        let sig = sign_meta("s3cret", body);
        assert!(sig.starts_with("sha256="));
        assert_eq!(verify_meta("s3cret", body, Some(&sig)), Ok(()));
        assert_eq!(
            verify_meta("other", body, Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_meta("s3cret", b"{\"object\":\"page\"} ", Some(&sig)),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_meta("s3cret", body, None),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify_meta("s3cret", body, Some("sha1=abc")),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_meta("s3cret", body, Some("sha256=zz")),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn telegram_secret_token_must_match_exactly() {
        assert_eq!(verify_secret_token("abc_DEF-1", Some("abc_DEF-1")), Ok(()));
        assert_eq!(
            verify_secret_token("abc", Some("abd")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_secret_token("abc", Some("abcd")),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_secret_token("abc", None),
            Err(SignatureError::Missing)
        );
    }
}
