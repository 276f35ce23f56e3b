//! Redirect URIs: checked when a client is registered, then matched byte for byte.
//!
//! Matching is exact on purpose: any normalisation (case of the host, a trailing slash, dot
//! segments, default ports) is a chance for an attacker's URI to pass as a registered one.

use url::Url;

use crate::{Error, Result};

/// Longest redirect URI accepted at registration.
const MAX_LEN: usize = 2048;

/// Checks a redirect URI for registration: absolute, no fragment, not a scheme that runs
/// code, and written the way it will be compared (its parsed form must serialise back to the
/// same bytes, so that what a client sends can match it exactly).
///
/// # Errors
///
/// [`Error::InvalidField`] naming what is wrong.
pub(crate) fn check_for_registration(uri: &str) -> Result<()> {
    let invalid = |reason: &'static str| Error::InvalidField {
        field: "redirect_uri",
        reason,
    };
    if uri.is_empty() || uri.len() > MAX_LEN {
        return Err(invalid("must be 1 to 2048 characters"));
    }
    let parsed = Url::parse(uri).map_err(|_| invalid("must be an absolute URI"))?;
    if parsed.fragment().is_some() || uri.contains('#') {
        return Err(invalid("must not have a fragment"));
    }
    if matches!(
        parsed.scheme(),
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about"
    ) {
        return Err(invalid("must not use that scheme"));
    }
    if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("must not carry user information"));
    }
    // The url crate lower-cases the host of http(s) URIs only; a custom scheme's host, a
    // host's trailing dot and an empty query are twins it leaves as written.
    let twin_host = parsed
        .host_str()
        .is_some_and(|h| h.ends_with('.') || h.bytes().any(|b| b.is_ascii_uppercase()));
    let empty_query = parsed.query() == Some("");
    if parsed.as_str() != uri || !normal_percent_encoding(uri) || twin_host || empty_query {
        return Err(invalid(
            "must be written in normal form (lower-case scheme and host, a path, no dot \
             segments, no empty query, upper-case percent-encoding of reserved characters \
             only)",
        ));
    }
    Ok(())
}

/// RFC 3986 6.2.2: percent-encodings in upper case, and none of an unreserved character (which
/// browsers and libraries decode). A URI written otherwise has a twin that means the same and
/// would not match it byte for byte.
fn normal_percent_encoding(uri: &str) -> bool {
    let bytes = uri.as_bytes();
    let mut at = 0;
    while let Some(offset) = bytes
        .get(at..)
        .and_then(|rest| rest.iter().position(|&b| b == b'%'))
    {
        let start = at + offset;
        let Some(&[high, low]) = bytes.get(start + 1..start + 3) else {
            return false;
        };
        let hex = |b: u8| matches!(b, b'0'..=b'9' | b'A'..=b'F');
        if !hex(high) || !hex(low) {
            return false;
        }
        let decoded = u8::from_str_radix(&uri[start + 1..start + 3], 16).unwrap_or(b'%');
        if decoded.is_ascii_alphanumeric() || matches!(decoded, b'-' | b'.' | b'_' | b'~') {
            return false;
        }
        at = start + 3;
    }
    true
}

/// Adds query parameters to a redirect URI, keeping any query it already has.
pub(crate) fn with_params<'a>(
    uri: &str,
    params: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> String {
    match Url::parse(uri) {
        Ok(mut url) => {
            {
                let mut query = url.query_pairs_mut();
                for (name, value) in params {
                    if let Some(value) = value {
                        query.append_pair(name, value);
                    }
                }
            }
            url.into()
        }
        // Registered URIs always parse; this is never reached.
        Err(_) => uri.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_refuses_what_cannot_match_exactly() {
        assert!(check_for_registration("https://rp.example/cb").is_ok());
        assert!(check_for_registration("https://rp.example/cb?x=1").is_ok());
        assert!(check_for_registration("com.example.app:/callback").is_ok());
        assert!(check_for_registration("https://rp.example/a%2Fb?next=%2Fhome%20page").is_ok());
        for bad in [
            "",
            "/cb",
            "rp.example/cb",
            "https://rp.example/cb#frag",
            "https://rp.example/cb#",
            "javascript:alert(1)",
            "https://user@rp.example/cb",
            "https://RP.example/cb",
            "https://rp.example/a/../cb",
            "https://rp.example",
            "https://rp.example/%7Eme/cb",
            "https://rp.example/a%2fb",
            "https://rp.example/cb?x=%41",
            "https://rp.example./cb",
            "https://rp.example/cb?",
            "myapp://RP.Example/cb",
        ] {
            assert!(check_for_registration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn params_are_added_to_an_existing_query() {
        let out = with_params(
            "https://rp.example/cb?x=1",
            [
                ("code", Some("a.b")),
                ("state", Some("s+/= ~")),
                ("none", None),
            ],
        );
        assert_eq!(
            out,
            "https://rp.example/cb?x=1&code=a.b&state=s%2B%2F%3D+%7E"
        );
    }
}
