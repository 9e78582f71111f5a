//! Reading request input into typed values, with 4xx errors that name the
//! offending field.

use salvo::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::json;

use aigentable_platform::db::PageRequest;
use aigentable_platform::ids::looks_like_id;

use crate::error::ApiError;

/// JSON bodies are small; uploads have their own limit on their own routes.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

/// Parses the JSON body. Errors name the field that failed, e.g.
/// `email: invalid type: integer, expected a string`.
pub async fn json_body<T: DeserializeOwned>(req: &mut Request) -> Result<T, ApiError> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !content_type.starts_with("application/json") {
        return Err(ApiError::UnsupportedMediaType(
            "request body must be JSON (Content-Type: application/json)".to_owned(),
        ));
    }
    let bytes = req
        .payload_with_max_size(JSON_BODY_LIMIT)
        .await
        .map_err(|e| match e {
            salvo::http::ParseError::PayloadTooLarge => ApiError::PayloadTooLarge {
                limit: JSON_BODY_LIMIT,
            },
            other => ApiError::bad_request(format!("could not read request body: {other}")),
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("request body is required"));
    }
    parse_json(bytes)
}

/// An optional JSON body: empty is `T::default()`, anything else is parsed
/// like [`json_body`] parses.
pub async fn json_body_or_default<T: DeserializeOwned + Default>(
    req: &mut Request,
) -> Result<T, ApiError> {
    let bytes = req
        .payload_with_max_size(JSON_BODY_LIMIT)
        .await
        .map_err(|e| match e {
            salvo::http::ParseError::PayloadTooLarge => ApiError::PayloadTooLarge {
                limit: JSON_BODY_LIMIT,
            },
            other => ApiError::bad_request(format!("could not read request body: {other}")),
        })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(bytes)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let first = serde_path_to_error::deserialize(de);
    // JSON has one number type: `584.0` is the integer 584 (as the spec's
    // `type: integer` says), so integral floats get a second chance.
    let first = match first {
        Err(e) if e.inner().is_data() => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(mut value) => {
                if integral_floats(&mut value) {
                    serde_json::from_value(value).map_err(|_| e)
                } else {
                    Err(e)
                }
            }
            Err(_) => Err(e),
        },
        other => other,
    };
    first.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::BadRequest {
                message: format!("request body is not valid JSON: {inner}"),
                details: json!({ "line": inner.line(), "column": inner.column() }),
            };
        }
        let reason = strip_position(&inner.to_string());
        if path == "." || path.is_empty() {
            // Missing fields are reported at the parent; the message names them.
            ApiError::BadRequest {
                message: reason.clone(),
                details: json!({ "field": missing_field(&reason) }),
            }
        } else {
            ApiError::BadRequest {
                message: format!("{path}: {reason}"),
                details: json!({ "field": path }),
            }
        }
    })
}

/// Rewrites floats without a fraction (`584.0`) as integers; true if any was.
fn integral_floats(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let whole = if f.fract() != 0.0 || !f.is_finite() {
                None
            } else if (-9_007_199_254_740_992.0..0.0).contains(&f) {
                Some(json!(f as i64))
            } else if (0.0..=18_446_744_073_709_549_568.0).contains(&f) {
                Some(json!(f as u64))
            } else {
                None
            };
            match whole {
                Some(whole) => {
                    *value = whole;
                    true
                }
                None => false,
            }
        }
        Value::Array(items) => items.iter_mut().fold(false, |a, v| integral_floats(v) | a),
        Value::Object(map) => map.values_mut().fold(false, |a, v| integral_floats(v) | a),
        _ => false,
    }
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn missing_field(reason: &str) -> Option<String> {
    let rest = reason.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// An optional query parameter parsed as `T`; a malformed value is a 400
/// naming the parameter.
/// The boundary of a `multipart/form-data` body; any other body is a 415
/// whose message is `hint` (what to send instead).
pub fn multipart_boundary(req: &Request, hint: &str) -> Result<String, ApiError> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        return Err(ApiError::UnsupportedMediaType(hint.to_owned()));
    }
    multra::parse_boundary(content_type)
        .map_err(|e| ApiError::bad_request(format!("the upload could not be read: {e}")))
}

pub fn query<T: std::str::FromStr>(req: &Request, name: &str) -> Result<Option<T>, ApiError> {
    match req.queries().get(name) {
        None => Ok(None),
        Some(raw) if raw.trim().is_empty() => Err(ApiError::field(name, "must not be empty")),
        Some(raw) => raw
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ApiError::field(name, format!("has an invalid value '{raw}'"))),
    }
}

pub fn query_string(req: &Request, name: &str, max_len: usize) -> Result<Option<String>, ApiError> {
    match req.queries().get(name).map(|s| s.trim()) {
        None | Some("") => Ok(None),
        Some(v) if v.chars().count() > max_len => Err(ApiError::field(
            name,
            format!("must be at most {max_len} characters"),
        )),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

/// An optional query parameter with a fixed syntax (a date, a keyword):
/// present but blank is a 400, as the spec's formats and enums say.
pub fn query_token(req: &Request, name: &str, max_len: usize) -> Result<Option<String>, ApiError> {
    match req.queries().get(name) {
        Some(raw) if raw.trim().is_empty() => Err(ApiError::field(name, "must not be empty")),
        _ => query_string(req, name, max_len),
    }
}

/// An optional query parameter naming a variant of an upper-case enum
/// (`status=ready` is `READY`); anything else is a 400 listing `expected`.
pub fn query_enum<T: DeserializeOwned>(
    req: &Request,
    name: &str,
    expected: &str,
) -> Result<Option<T>, ApiError> {
    match query_token(req, name, 64)? {
        None => Ok(None),
        Some(raw) => serde_json::from_value(serde_json::Value::String(raw.to_uppercase()))
            .map(Some)
            .map_err(|_| ApiError::field(name, format!("must be {expected}"))),
    }
}

/// `page` (from 1) and `limit` (1 to 100, default 10).
pub fn pagination(req: &Request) -> Result<PageRequest, ApiError> {
    let page: u64 = query(req, "page")?.unwrap_or(1);
    let limit: u64 = query(req, "limit")?.unwrap_or(10);
    if page == 0 || page > 1_000_000 {
        return Err(ApiError::field("page", "must be between 1 and 1000000"));
    }
    if limit == 0 || limit > 100 {
        return Err(ApiError::field("limit", "must be between 1 and 100"));
    }
    Ok(PageRequest { page, limit })
}

/// A path id; malformed ids cannot exist, so they are answered like unknown ones.
pub fn path_id(req: &Request, what: &'static str) -> Result<String, ApiError> {
    path_id_named(req, "id", what)
}

/// [`path_id`] for a route's other id parameter (`{evalId}`).
pub fn path_id_named(req: &Request, param: &str, what: &'static str) -> Result<String, ApiError> {
    let id: String = req.param(param).unwrap_or_default();
    if looks_like_id(&id) {
        Ok(id)
    } else {
        Err(ApiError::NotFound(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        email: String,
        first_name: Option<String>,
        nested: Option<Nested>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Nested {
        count: u32,
    }

    fn err(json: &str) -> ApiError {
        match parse_json::<Body>(json.as_bytes()) {
            Err(e) => e,
            Ok(b) => panic!("expected an error, got {b:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        let e = err(r#"{"email": 5}"#);
        assert!(e.to_string().starts_with("email: invalid type"), "{e}");
        let e = err(r#"{"email": "a", "nested": {"count": -1}}"#);
        assert!(e.to_string().starts_with("nested.count:"), "{e}");
        let e = err(r#"{"firstName": "x"}"#);
        assert_eq!(
            e.body().details,
            json!({"field": "email", "reason": "invalid_field"})
        );
        let e = err(r#"{"email": "#);
        assert!(e.to_string().contains("not valid JSON"), "{e}");
        let e = err(r#"[1,2]"#);
        assert!(matches!(e, ApiError::BadRequest { .. }));
    }

    #[test]
    fn integral_floats_are_integers() {
        #[derive(Debug, Deserialize)]
        struct Counts {
            n: u32,
            m: i64,
        }
        let c: Counts = parse_json(br#"{"n": 584.0, "m": -3.0}"#).expect("integral floats");
        assert_eq!((c.n, c.m), (584, -3));
        let err = parse_json::<Counts>(br#"{"n": 584.5, "m": 1}"#).expect_err("a fraction");
        assert!(err.to_string().contains("n: invalid type"), "{err}");
    }
}
