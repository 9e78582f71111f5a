//! Domain newtypes that parse untrusted input once, at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParseError {
    pub field: &'static str,
    pub reason: String,
}

impl ParseError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// A syntactically valid, lower-cased email address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ParseError> {
        let value = raw.trim().to_lowercase();
        if value.is_empty() {
            return Err(ParseError::new(field, "is required"));
        }
        if value.len() > 254 {
            return Err(ParseError::new(field, "must be at most 254 characters"));
        }
        if !email_address::EmailAddress::is_valid(&value) || !value.contains('.') {
            return Err(ParseError::new(field, "is not a valid email address"));
        }
        Ok(Self(value))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A password that satisfies the policy. Never logged.
pub struct NewPassword(String);

impl NewPassword {
    pub const MIN_LEN: usize = 8;
    pub const MAX_LEN: usize = 128;

    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ParseError> {
        let chars = raw.chars().count();
        if chars < Self::MIN_LEN {
            return Err(ParseError::new(
                field,
                format!("must be at least {} characters", Self::MIN_LEN),
            ));
        }
        if chars > Self::MAX_LEN {
            return Err(ParseError::new(
                field,
                format!("must be at most {} characters", Self::MAX_LEN),
            ));
        }
        if !raw.chars().any(char::is_alphabetic) || !raw.chars().any(|c| c.is_ascii_digit()) {
            return Err(ParseError::new(
                field,
                "must contain at least one letter and one digit",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(***)")
    }
}

/// Trimmed, non-empty, bounded free text such as a person's or a company's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub fn parse(field: &'static str, raw: &str, max: usize) -> Result<Self, ParseError> {
        let value = raw.trim();
        if value.is_empty() {
            return Err(ParseError::new(field, "must not be empty"));
        }
        if value.chars().count() > max {
            return Err(ParseError::new(
                field,
                format!("must be at most {max} characters"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(ParseError::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(value.to_owned()))
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The text of a chat message (staff, visitor or agent test): trimmed, not
/// empty, at most `max` characters; line breaks are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(field: &'static str, raw: &str, max: usize) -> Result<Self, ParseError> {
        let value = raw.trim();
        if value.is_empty() {
            return Err(ParseError::new(field, "must not be empty"));
        }
        if value.chars().count() > max {
            return Err(ParseError::new(
                field,
                format!("must be at most {max} characters"),
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    SuperAdmin,
    TenantAdmin,
    TenantUser,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SuperAdmin => "SUPER_ADMIN",
            Role::TenantAdmin => "TENANT_ADMIN",
            Role::TenantUser => "TENANT_USER",
        }
    }
    pub fn is_admin(self) -> bool {
        matches!(self, Role::SuperAdmin | Role::TenantAdmin)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserStatus {
    Active,
    Inactive,
    Suspended,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "ACTIVE",
            UserStatus::Inactive => "INACTIVE",
            UserStatus::Suspended => "SUSPENDED",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TenantStatus {
    Active,
    Suspended,
}

/// Escapes a user-supplied search term for use inside a MongoDB `$regex`.
pub fn regex_escape(term: &str) -> String {
    let mut out = String::with_capacity(term.len());
    for c in term.chars() {
        if "\\^$.|?*+()[]{}/-".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_normalised_and_checked() {
        assert_eq!(
            Email::parse("email", "  John@Example.COM ").map(|e| e.0),
            Ok("john@example.com".to_owned())
        );
        assert!(Email::parse("email", "not-an-email").is_err());
        assert!(Email::parse("email", "").is_err());
        assert!(Email::parse("email", "a@localhost").is_err());
    }

    #[test]
    fn password_policy() {
        assert!(NewPassword::parse("password", "securePassword123").is_ok());
        assert!(NewPassword::parse("password", "short1").is_err());
        assert!(NewPassword::parse("password", "onlyletters").is_err());
        assert!(NewPassword::parse("password", "12345678901").is_err());
        assert!(NewPassword::parse("password", &"a1".repeat(65)).is_err());
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            Name::parse("name", "  Acme ", 10).map(Name::into_inner),
            Ok("Acme".to_owned())
        );
        assert!(Name::parse("name", "   ", 10).is_err());
        assert!(Name::parse("name", "abcdefghijk", 10).is_err());
        assert!(Name::parse("name", "a\u{0}b", 10).is_err());
    }

    #[test]
    fn regex_escape_neutralises_metacharacters() {
        assert_eq!(regex_escape("a.b*(c)"), "a\\.b\\*\\(c\\)");
    }
}
