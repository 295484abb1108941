//! Body checks: content type, size, UTF-8 and nesting depth, then the JSON parse. Pure.
//!
//! The cheap checks run before the parser sees the bytes: the declared length before the body
//! is read, the size while it is read, the nesting depth in one linear scan before `serde_json`
//! recurses.

use crate::reject::{Reason, Rejection};
use http::{HeaderMap, header};
use serde_json::Value;

/// Accepts `application/json` and `application/<anything>+json`, with an optional
/// `charset=utf-8` parameter. Anything else, or no content type, is refused with 415.
pub fn check_content_type(headers: &HeaderMap) -> Result<(), Rejection> {
    let refuse = |what: &str| {
        Rejection::new(
            Reason::UnsupportedMediaType,
            format!("{what}; send the alert as Content-Type: application/json"),
        )
    };
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Err(refuse("no content type"));
    };
    if values.next().is_some() {
        return Err(refuse("several content types"));
    }
    let text = value.to_str().map_err(|_| refuse("unreadable content type"))?;
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if !json {
        return Err(refuse("content type is not JSON"));
    }
    for param in parts {
        let Some((key, val)) = param.split_once('=') else {
            continue;
        };
        let val = val.trim().trim_matches('"');
        if key.trim().eq_ignore_ascii_case("charset") && !val.eq_ignore_ascii_case("utf-8") {
            return Err(refuse("charset is not utf-8"));
        }
    }
    Ok(())
}

/// Refuses a body whose declared `Content-Length` already exceeds `max` (413), before reading.
pub fn check_declared_length(headers: &HeaderMap, max: usize) -> Result<(), Rejection> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > max as u64 => Err(too_large(max)),
        _ => Ok(()),
    }
}

pub fn too_large(max: usize) -> Rejection {
    Rejection::new(Reason::BodyTooLarge, format!("the body exceeds {max} bytes"))
}

/// How deeply the JSON text nests arrays and objects, counting brackets outside strings.
/// Stops counting once `limit` is exceeded, so the answer is `limit + 1` for anything deeper.
pub fn nesting_depth(bytes: &[u8], limit: usize) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
                if max > limit {
                    return max;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// Checks UTF-8 and nesting depth, then parses one JSON value.
///
/// # Errors
///
/// 400 with reason `invalid_utf8`, `too_deep` or `malformed_json`.
pub fn parse(bytes: &[u8], max_depth: usize) -> Result<Value, Rejection> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(Rejection::new(
            Reason::InvalidUtf8,
            format!("the body is not UTF-8 (first bad byte at offset {})", e.valid_up_to()),
        ));
    }
    let depth = nesting_depth(bytes, max_depth);
    if depth > max_depth {
        return Err(Rejection::new(
            Reason::TooDeep,
            format!("the body nests deeper than {max_depth} levels"),
        ));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Rejection::new(Reason::MalformedJson, "the body is empty"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // serde_json's message names a line and column, never the content.
        Rejection::new(Reason::MalformedJson, format!("the body is not valid JSON: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_type(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn json_content_types_are_accepted() {
        for ok in [
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/vnd.siem.alert+json",
            "application/json;charset=\"utf-8\"",
        ] {
            assert_eq!(check_content_type(&with_type(ok)), Ok(()), "{ok}");
        }
    }

    #[test]
    fn other_content_types_are_refused_with_415() {
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin1",
            "json",
        ] {
            let err = check_content_type(&with_type(bad)).unwrap_err();
            assert_eq!(err.reason, Reason::UnsupportedMediaType, "{bad}");
        }
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }

    #[test]
    fn a_declared_length_over_the_cap_is_refused_before_reading() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1048577"));
        assert_eq!(check_declared_length(&h, 1 << 20).unwrap_err().reason, Reason::BodyTooLarge);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1048576"));
        assert_eq!(check_declared_length(&h, 1 << 20), Ok(()));
    }

    #[test]
    fn depth_ignores_brackets_inside_strings() {
        assert_eq!(nesting_depth(br#"{"a": "[[[[{{{{\"]]"}"#, 64), 1);
        assert_eq!(nesting_depth(br#"[[1], {"b": [2]}]"#, 64), 3);
        assert_eq!(nesting_depth(b"42", 64), 0);
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse(deep.as_bytes(), 64).unwrap_err().reason, Reason::TooDeep);
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(parse(ok.as_bytes(), 64).is_ok());
    }

    #[test]
    fn bad_bodies_get_400_reasons() {
        assert_eq!(parse(b"{\"a\": \xff}", 64).unwrap_err().reason, Reason::InvalidUtf8);
        assert_eq!(parse(b"{\"a\": ", 64).unwrap_err().reason, Reason::MalformedJson);
        assert_eq!(parse(b"  ", 64).unwrap_err().reason, Reason::MalformedJson);
        assert_eq!(parse(b"{} {}", 64).unwrap_err().reason, Reason::MalformedJson);
    }
}
