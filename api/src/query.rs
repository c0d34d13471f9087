//! Hand-written query-string parsing: every malformed or out-of-range parameter becomes
//! a JSON 400 naming the parameter and what it accepts, never one of axum's plain-text
//! rejections. Unknown parameters are ignored; a known one given twice is a 400, since
//! there is no right way to pick one.

use crate::error::{ApiError, excerpt};

/// Largest integer a query parameter takes (`offset`, `from`, `to`): the OpenAPI
/// document's `int64`, which is what clients and tools generate from.
pub(crate) const MAX_INTEGER: u64 = i64::MAX as u64;

/// The decoded `name=value` pairs of a query string, in order.
#[derive(Debug, Default, Clone)]
pub(crate) struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Decodes `raw` (the part after `?`) as `application/x-www-form-urlencoded`;
    /// invalid percent-escapes and UTF-8 are decoded lossily, never rejected.
    pub(crate) fn parse(raw: Option<&str>) -> QueryParams {
        let pairs = raw
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        QueryParams { pairs }
    }

    /// Every value given for `name`.
    pub(crate) fn all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        let name = name.to_owned();
        self.pairs
            .iter()
            .filter(move |(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `name`, if given; 400 if given more than once, or in a bracketed
    /// form (`name[...]=`, as deep-object and PHP-style encoders write objects and
    /// arrays): silently ignoring that would drop a filter or a limit the client meant.
    pub(crate) fn single(&self, name: &str) -> Result<Option<&str>, ApiError> {
        if let Some((key, _)) = self.pairs.iter().find(|(key, _)| {
            key.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('['))
        }) {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{name}` takes one plain value (`{name}=...`), not `{}`",
                excerpt(key)
            )));
        }
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{name}` is given more than once: give it once"
            )));
        }
        Ok(first)
    }

    /// The integer `name` in `min..=max`, or `default` when absent. Only plain decimal
    /// digits are accepted (no sign, exponent, fraction or whitespace).
    pub(crate) fn integer(
        &self,
        name: &str,
        min: u64,
        max: u64,
        default: u64,
    ) -> Result<u64, ApiError> {
        let Some(raw) = self.single(name)? else {
            return Ok(default);
        };
        let range = format!("an integer from {min} to {max}");
        let bad = || {
            ApiError::BadRequest(format!(
                "query parameter `{name}` must be {range}, got {:?}",
                excerpt(raw)
            ))
        };
        if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // Too many digits for u64 is out of range as well.
        let value: u64 = raw.parse().map_err(|_| bad())?;
        if !(min..=max).contains(&value) {
            return Err(bad());
        }
        Ok(value)
    }

    /// The boolean `name`: exactly `true` or `false` (as JSON and the OpenAPI document
    /// spell it); `None` when absent.
    pub(crate) fn boolean(&self, name: &str, meaning: &str) -> Result<Option<bool>, ApiError> {
        match self.single(name)? {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::BadRequest(format!(
                "query parameter `{name}` must be true or false{meaning}, got {:?}",
                excerpt(other)
            ))),
        }
    }

    /// The comma-separated list `name`, items trimmed of ASCII whitespace (the
    /// document's patterns spell it `[\t\n\f\r ]`), empty items skipped; `None` when
    /// absent or when it lists nothing.
    pub(crate) fn list(&self, name: &str) -> Result<Option<Vec<&str>>, ApiError> {
        let Some(raw) = self.single(name)? else {
            return Ok(None);
        };
        let items: Vec<&str> = raw
            .split(',')
            .map(|item| item.trim_matches(|c: char| c.is_ascii_whitespace()))
            .filter(|s| !s.is_empty())
            .collect();
        Ok((!items.is_empty()).then_some(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> QueryParams {
        QueryParams::parse(Some(s))
    }

    #[test]
    fn decodes_pairs_and_ignores_unknown() {
        let p = q("a=1&search=hello+w%C3%B6rld&x&limit=5");
        assert_eq!(p.single("search").unwrap(), Some("hello wörld"));
        assert_eq!(p.single("x").unwrap(), Some(""));
        assert_eq!(p.single("nope").unwrap(), None);
        assert_eq!(p.integer("limit", 1, 1000, 100).unwrap(), 5);
        assert_eq!(
            QueryParams::parse(None)
                .integer("limit", 1, 1000, 100)
                .unwrap(),
            100
        );
        // Broken escapes are decoded lossily, not rejected.
        assert_eq!(q("s=%ZZ%ff").single("s").unwrap(), Some("%ZZ\u{fffd}"));
    }

    #[test]
    fn integers_are_strict() {
        for bad in [
            "abc",
            "0",
            "-1",
            "+5",
            "1e3",
            "1.0",
            " 5",
            "5 ",
            "",
            "1001",
            "99999999999999999999",
            "0x10",
        ] {
            let p = QueryParams {
                pairs: vec![("limit".into(), bad.into())],
            };
            let err = p.integer("limit", 1, 1000, 100).unwrap_err();
            assert_eq!(err.status(), 400, "{bad:?}");
            assert!(err.message().contains("`limit`"), "{err}");
            assert!(err.message().contains("from 1 to 1000"), "{err}");
        }
        assert_eq!(
            q("limit=1000").integer("limit", 1, 1000, 100).unwrap(),
            1000
        );
        assert_eq!(
            q("offset=0").integer("offset", 0, MAX_INTEGER, 0).unwrap(),
            0
        );
        let err = q("offset=-1")
            .integer("offset", 0, MAX_INTEGER, 0)
            .unwrap_err();
        assert!(
            err.message()
                .contains("an integer from 0 to 9223372036854775807"),
            "{err}"
        );
        // The document's int64 ends there; one more is out of range, as it says.
        assert_eq!(
            q("offset=9223372036854775807")
                .integer("offset", 0, MAX_INTEGER, 0)
                .unwrap(),
            MAX_INTEGER
        );
        for over in ["9223372036854775808", "18446744073709551615"] {
            let err = q(&format!("offset={over}"))
                .integer("offset", 0, MAX_INTEGER, 0)
                .unwrap_err();
            assert_eq!(err.status(), 400, "{over}");
        }
    }

    #[test]
    fn booleans_are_true_or_false() {
        assert_eq!(q("raw=true").boolean("raw", "").unwrap(), Some(true));
        assert_eq!(q("raw=false").boolean("raw", "").unwrap(), Some(false));
        assert_eq!(q("").boolean("raw", "").unwrap(), None);
        for bad in ["TRUE", "True", "1", "yes", "", "true ", "false%00"] {
            let err = q(&format!("raw={bad}")).boolean("raw", "").unwrap_err();
            assert_eq!(err.status(), 400, "{bad:?}");
            assert!(
                err.message().contains("`raw` must be true or false"),
                "{err}"
            );
        }
    }

    #[test]
    fn bracketed_forms_are_rejected() {
        for query in [
            "limit[]=5",
            "limit[a]=5",
            "limit[a][b]=5&limit=1",
            "limit%5B0%5D=5",
        ] {
            let err = q(query).single("limit").unwrap_err();
            assert_eq!(err.status(), 400, "{query}");
            assert!(err.message().contains("one plain value"), "{err}");
        }
        // Other names that merely start the same are other parameters.
        assert_eq!(q("limits[]=5&limit=1").single("limit").unwrap(), Some("1"));
    }

    #[test]
    fn duplicates_are_rejected() {
        let err = q("limit=1&limit=2")
            .integer("limit", 1, 1000, 100)
            .unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.message().contains("more than once"), "{err}");
    }

    #[test]
    fn lists_split_on_commas() {
        assert_eq!(
            q("m=GET,%20post,,").list("m").unwrap(),
            Some(vec!["GET", "post"])
        );
        assert_eq!(q("m=").list("m").unwrap(), None);
        assert_eq!(q("").list("m").unwrap(), None);
    }
}
