//! Reply shapes with placeholders, for `expect` steps.
//!
//! A pattern is JSON. Strings starting with `$` are placeholders:
//!
//! | placeholder | matches |
//! |---|---|
//! | `$any` | any value |
//! | `$int` | any integer |
//! | `$string` | any string |
//! | `$object` | any object |
//! | `$array` | any array |
//! | `$sync` | the integer sync id of the request this reply answers |
//!
//! An array pattern whose first element is `"$contains"` matches any array
//! that has, for each of the remaining patterns, some element matching it.
//!
//! Objects match with key order ignored (qemu-ga emits hash order) and the
//! same set of keys, unless the pattern has the key `"$more" = true`, which
//! allows others. Numbers compare as numbers, never as text.

use serde_json::Value;

/// Values the placeholders refer to.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bindings {
    pub sync_id: Option<i64>,
}

/// Does `actual` match `pattern`? On mismatch, a path and reason.
pub fn matches(pattern: &Value, actual: &Value, b: &Bindings) -> Result<(), String> {
    at(pattern, actual, b, "$")
}

fn at(pattern: &Value, actual: &Value, b: &Bindings, path: &str) -> Result<(), String> {
    let mismatch = || Err(format!("at {path}: expected {pattern}, got {actual}"));
    match pattern {
        Value::String(p) if p.starts_with('$') => {
            let ok = match p.as_str() {
                "$any" => true,
                "$int" => actual.is_i64() || actual.is_u64(),
                "$string" => actual.is_string(),
                "$object" => actual.is_object(),
                "$array" => actual.is_array(),
                "$sync" => match b.sync_id {
                    Some(id) => actual.as_i64() == Some(id),
                    None => return Err(format!("at {path}: $sync used, but the request had no sync id")),
                },
                other => return Err(format!("at {path}: unknown placeholder {other}")),
            };
            if ok {
                Ok(())
            } else {
                mismatch()
            }
        }
        Value::Object(p) => {
            let Value::Object(a) = actual else { return mismatch() };
            let more = p.get("$more") == Some(&Value::Bool(true));
            for (k, pv) in p.iter().filter(|(k, _)| k.as_str() != "$more") {
                match a.get(k) {
                    Some(av) => at(pv, av, b, &format!("{path}.{k}"))?,
                    None => return Err(format!("at {path}: missing member {k:?} in {actual}")),
                }
            }
            if !more {
                if let Some(extra) = a.keys().find(|k| !p.contains_key(*k)) {
                    return Err(format!("at {path}: unexpected member {extra:?} in {actual}"));
                }
            }
            Ok(())
        }
        Value::Array(p) if p.first().and_then(Value::as_str) == Some("$contains") => {
            let Value::Array(a) = actual else { return mismatch() };
            for want in &p[1..] {
                if !a.iter().any(|x| at(want, x, b, path).is_ok()) {
                    return Err(format!("at {path}: no element matches {want}"));
                }
            }
            Ok(())
        }
        Value::Array(p) => {
            let Value::Array(a) = actual else { return mismatch() };
            if p.len() != a.len() {
                return mismatch();
            }
            for (i, (pv, av)) in p.iter().zip(a).enumerate() {
                at(pv, av, b, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        Value::Number(p) => match (p.as_i64(), actual.as_i64(), p.as_f64(), actual.as_f64()) {
            (Some(x), Some(y), _, _) if x == y => Ok(()),
            (None, _, Some(x), Some(y)) if x == y => Ok(()),
            _ => mismatch(),
        },
        _ if pattern == actual => Ok(()),
        _ => mismatch(),
    }
}

/// Placeholders that a pattern may use; for validating case files.
pub fn check_placeholders(pattern: &Value) -> Result<(), String> {
    match pattern {
        Value::String(p) if p.starts_with('$') => match p.as_str() {
            "$any" | "$int" | "$string" | "$object" | "$array" | "$sync" => Ok(()),
            other => Err(format!("unknown placeholder {other}")),
        },
        Value::Object(o) => o.values().try_for_each(check_placeholders),
        Value::Array(a) if a.first().and_then(Value::as_str) == Some("$contains") => a[1..].iter().try_for_each(check_placeholders),
        Value::Array(a) => a.iter().try_for_each(check_placeholders),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_ignored_and_placeholders_work() {
        let b = Bindings { sync_id: Some(-3) };
        assert!(matches(&json!({"a": "$int", "b": "$sync"}), &json!({"b": -3, "a": 1}), &b).is_ok());
        assert!(matches(&json!({"a": "$int"}), &json!({"a": 1, "c": 2}), &b).is_err());
        assert!(matches(&json!({"a": "$int", "$more": true}), &json!({"a": 1, "c": 2}), &b).is_ok());
        assert!(matches(&json!("$sync"), &json!(-4), &b).is_err());
        assert!(matches(&json!({}), &json!({}), &b).is_ok());
        assert!(matches(&json!({}), &json!([]), &b).is_err());
        assert!(matches(&json!(1000), &json!(1000), &b).is_ok());
        assert!(matches(&json!("$bogus"), &json!(1), &b).is_err());
        assert!(check_placeholders(&json!({"x": ["$bogus"]})).is_err());
        let cmds = json!([{"name": "a", "enabled": true}, {"name": "b", "enabled": false}]);
        assert!(matches(&json!(["$contains", {"name": "a", "$more": true}]), &cmds, &b).is_ok());
        assert!(matches(&json!(["$contains", {"name": "b", "enabled": true}]), &cmds, &b).is_err());
        assert!(check_placeholders(&json!(["$contains", "$int"])).is_ok());
    }
}
