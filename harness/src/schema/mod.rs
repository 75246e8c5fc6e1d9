//! The QGA QAPI schema, and replies checked against it.
//!
//! Source: the `qapi-qga` crate (0.13.0), which ships QEMU's
//! `qga/qapi-schema.json` as of QEMU 9.1 and generates the `qapi` crate's
//! `qga` types from it. That file is kept byte for byte in
//! `harness/schema/qga/qapi-schema.json` (a test compares it with the
//! crate's copy, found through `cargo metadata`), and is parsed here with
//! `qapi-parser`, the same crate family's parser. Why not validate through
//! the generated `qapi::qga` types: serde would stop at the first error,
//! say nothing of where it is, and let unknown members through; a
//! conformance report needs every violation, with its JSON path, its schema
//! type, and extra members named.
//!
//! What is checked ([`validate`]): required members present, JSON types,
//! integer ranges of QAPI's int types, enum values, union discriminators,
//! alternates, and members the schema does not have ([`Kind::Extra`]).
//! Members and enum values under an `if` condition (a build option, e.g.
//! Windows only) may be absent.

mod check;

pub use check::{check_reply, SchemaMiss, SchemaMissKind};
use qapi_parser::spec::{self, Spec};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Where the schema comes from, for every message.
pub const SCHEMA_VERSION: &str = "QEMU 9.1 (qapi-qga 0.13.0)";

/// The QEMU release of the schema, as (major, minor).
pub const SCHEMA_QEMU: (u32, u32) = (9, 1);

/// Whether an agent that reports `version` (guest-info's) is a QEMU release
/// newer than the schema's: members and commands the schema lacks may then
/// be ones that release added. Versions that are not `X.Y...` are not.
pub fn newer_than_schema(version: &str) -> bool {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    match (parts.next().and_then(|x| x.parse::<u32>().ok()), parts.next().and_then(|x| x.parse::<u32>().ok())) {
        (Some(major), Some(minor)) => (major, minor) > SCHEMA_QEMU,
        _ => false,
    }
}

/// The schema's text, as shipped by qapi-qga.
pub const SCHEMA_TEXT: &str = include_str!("../../schema/qga/qapi-schema.json");

/// The read-only commands the schema section ([`crate::case::schema_section`]) calls, with no arguments, in
/// the order of its cases (`schema/1` is guest-info). Nothing else is ever
/// sent by the section, and the deny-list still has the last word.
pub const ALLOW_LIST: &[&str] = &[
    "guest-info",
    "guest-ping",
    "guest-get-time",
    "guest-get-osinfo",
    "guest-get-host-name",
    "guest-get-timezone",
    "guest-get-users",
    "guest-get-vcpus",
    "guest-get-memory-blocks",
    "guest-get-memory-block-info",
    "guest-get-fsinfo",
    "guest-get-disks",
    "guest-get-devices",
    "guest-network-get-interfaces",
    "guest-network-get-route",
    "guest-get-load",
    "guest-get-cpustats",
    "guest-get-diskstats",
    "guest-fsfreeze-status",
];

/// Read-only-looking commands of the schema that the section leaves out,
/// and why. A test fails when the schema has a `guest-get-*` command in
/// neither list.
pub const EXCLUDED: &[(&str, &str)] = &[];

/// A reference to a type: a name, maybe an array of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeRef {
    pub name: String,
    pub array: bool,
}

impl std::fmt::Display for TypeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.array {
            write!(f, "[{}]", self.name)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// A struct or union member.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub ty: TypeRef,
    pub optional: bool,
    /// Under an `if`: may be absent whatever `optional` says.
    pub conditional: bool,
}

/// A named type of the schema.
#[derive(Debug, Clone)]
pub enum TypeDef {
    Struct { base: Base, members: Vec<Member> },
    Enum { values: Vec<String> },
    Union { base: Base, discriminator: String, variants: BTreeMap<String, String> },
    Alternate { variants: Vec<TypeRef> },
}

/// A struct's or union's base: inline members or a named struct.
#[derive(Debug, Clone)]
pub enum Base {
    Members(Vec<Member>),
    Named(String),
}

/// A command: what it returns.
#[derive(Debug, Clone)]
pub struct CommandDef {
    pub name: String,
    pub returns: Option<TypeRef>,
}

/// The parsed schema.
#[derive(Debug)]
pub struct Schema {
    pub types: BTreeMap<String, TypeDef>,
    pub commands: BTreeMap<String, CommandDef>,
}

fn type_ref(t: &spec::Type) -> TypeRef {
    TypeRef { name: t.name.clone(), array: t.is_array }
}

fn members(d: &spec::Data) -> Vec<Member> {
    d.fields.iter().map(|v| Member { name: v.name.clone(), ty: type_ref(&v.ty), optional: v.optional, conditional: v.ty.conditional.is_some() }).collect()
}

fn base(b: &spec::DataOrType) -> Base {
    match b {
        spec::DataOrType::Data(d) => Base::Members(members(d)),
        spec::DataOrType::Type(t) => Base::Named(t.name.clone()),
    }
}

impl Schema {
    /// Parse schema text (QAPI's JSON dialect: single quotes, comments).
    pub fn parse(text: &str) -> Result<Schema, String> {
        let mut types = BTreeMap::new();
        let mut commands = BTreeMap::new();
        for spec in qapi_parser::Parser::from_string(qapi_parser::Parser::strip_comments(text)) {
            match spec.map_err(|e| format!("schema: {e}"))? {
                Spec::Command(c) => {
                    commands.insert(c.id.clone(), CommandDef { name: c.id, returns: c.returns.as_ref().map(type_ref) });
                }
                Spec::Struct(s) => {
                    types.insert(s.id.clone(), TypeDef::Struct { base: base(&s.base), members: members(&s.data) });
                }
                Spec::Enum(e) => {
                    types.insert(e.id.clone(), TypeDef::Enum { values: e.data.iter().map(|n| n.name().clone()).collect() });
                }
                Spec::CombinedUnion(u) => {
                    let variants = u.data.fields.iter().map(|v| (v.name.clone(), v.ty.name.clone())).collect();
                    types.insert(u.id.clone(), TypeDef::Union { base: base(&u.base), discriminator: u.discriminator.clone().unwrap_or_default(), variants });
                }
                Spec::Union(u) => {
                    let variants = u.data.fields.iter().map(|v| (v.name.clone(), v.ty.name.clone())).collect();
                    types.insert(u.id.clone(), TypeDef::Union { base: Base::Members(Vec::new()), discriminator: u.discriminator.clone().unwrap_or_default(), variants });
                }
                Spec::Alternate(a) => {
                    types.insert(a.id.clone(), TypeDef::Alternate { variants: a.data.fields.iter().map(|v| type_ref(&v.ty)).collect() });
                }
                _ => {}
            }
        }
        Ok(Schema { types, commands })
    }

    /// The schema this build carries.
    pub fn embedded() -> &'static Schema {
        static S: OnceLock<Schema> = OnceLock::new();
        S.get_or_init(|| Schema::parse(SCHEMA_TEXT).expect("the qapi-qga schema parses"))
    }

    /// The members of a struct (base first), or of a union's base.
    fn base_members(&self, b: &Base) -> Vec<Member> {
        match b {
            Base::Members(m) => m.clone(),
            Base::Named(n) => match self.types.get(n) {
                Some(TypeDef::Struct { base, members }) => {
                    let mut all = self.base_members(base);
                    all.extend(members.iter().cloned());
                    all
                }
                _ => Vec::new(),
            },
        }
    }
}

/// What is wrong at one place of a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A required member is absent.
    Missing,
    /// The JSON type is not the schema's.
    WrongType,
    /// An integer outside its QAPI type's range.
    OutOfRange,
    /// An enum value the schema does not have.
    BadEnum,
    /// A union's discriminator names no variant.
    BadDiscriminator,
    /// A member the schema does not have (NON-STRICT: newer agents add
    /// members; clients generated from the schema drop them).
    Extra,
}

/// One violation, with its JSON path.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub kind: Kind,
    /// e.g. `return[2].ip-addresses[0].prefix`.
    pub path: String,
    /// The schema type expected there.
    pub schema_type: String,
    pub expected: String,
    pub got: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: expected {}, got {} (schema type {}, {SCHEMA_VERSION})", self.path, self.expected, self.got, self.schema_type)
    }
}

fn shown(v: &Value) -> String {
    let t = v.to_string();
    if t.len() > 80 {
        format!("{}...", &t[..t.char_indices().take_while(|(i, _)| *i < 80).last().map_or(0, |(i, c)| i + c.len_utf8())])
    } else {
        t
    }
}

/// Integer ranges of QAPI's builtin int types.
fn int_range(name: &str) -> Option<(i128, i128)> {
    Some(match name {
        "int" | "int64" => (i64::MIN.into(), i64::MAX.into()),
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "uint8" => (0, u8::MAX.into()),
        "uint16" => (0, u16::MAX.into()),
        "uint32" => (0, u32::MAX.into()),
        "uint64" | "size" => (0, u64::MAX.into()),
        _ => return None,
    })
}

/// Check `value` at `path` against `ty`.
pub fn validate(schema: &Schema, value: &Value, ty: &TypeRef, path: &str) -> Vec<Violation> {
    let mut out = Vec::new();
    check(schema, value, ty, path, &mut out);
    out
}

fn check(schema: &Schema, v: &Value, ty: &TypeRef, path: &str, out: &mut Vec<Violation>) {
    let mut bad = |kind: Kind, expected: String| out.push(Violation { kind, path: path.to_owned(), schema_type: ty.to_string(), expected, got: shown(v) });
    if ty.array {
        let Value::Array(items) = v else { return bad(Kind::WrongType, format!("an array of {}", ty.name)) };
        let one = TypeRef { name: ty.name.clone(), array: false };
        for (i, item) in items.iter().enumerate() {
            check(schema, item, &one, &format!("{path}[{i}]"), out);
        }
        return;
    }
    let name = ty.name.as_str();
    if let Some((lo, hi)) = int_range(name) {
        let n = v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from));
        match n {
            Some(n) if n < lo || n > hi => bad(Kind::OutOfRange, format!("{name} ({lo}..={hi})")),
            Some(_) => {}
            None if v.is_number() => bad(Kind::WrongType, format!("{name} (an integer)")),
            None => bad(Kind::WrongType, name.to_owned()),
        }
        return;
    }
    match name {
        "str" => {
            if !v.is_string() {
                bad(Kind::WrongType, "str".into());
            }
            return;
        }
        "bool" => {
            if !v.is_boolean() {
                bad(Kind::WrongType, "bool".into());
            }
            return;
        }
        "number" => {
            if !v.is_number() {
                bad(Kind::WrongType, "number".into());
            }
            return;
        }
        "null" => {
            if !v.is_null() {
                bad(Kind::WrongType, "null".into());
            }
            return;
        }
        "any" => return,
        _ => {}
    }
    match schema.types.get(name) {
        None => bad(Kind::WrongType, format!("{name} (a type this schema does not define)")),
        Some(TypeDef::Enum { values }) => match v.as_str() {
            Some(s) if values.iter().any(|x| x == s) => {}
            Some(_) => bad(Kind::BadEnum, format!("one of {name}'s values ({})", values.join(", "))),
            None => bad(Kind::WrongType, format!("{name} (a string)")),
        },
        Some(TypeDef::Alternate { variants }) => {
            if !variants.iter().any(|t| validate(schema, v, t, path).is_empty()) {
                bad(Kind::WrongType, format!("one of {}", variants.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")));
            }
        }
        Some(TypeDef::Struct { base, members }) => {
            let mut all = schema.base_members(base);
            all.extend(members.iter().cloned());
            object(schema, v, ty, path, &all, out);
        }
        Some(TypeDef::Union { base, discriminator, variants }) => {
            let mut all = schema.base_members(base);
            let tag = v.get(discriminator).and_then(Value::as_str);
            if let Some(variant) = tag.and_then(|t| variants.get(t)) {
                if let Some(TypeDef::Struct { base, members }) = schema.types.get(variant) {
                    all.extend(schema.base_members(base));
                    all.extend(members.iter().cloned());
                }
            }
            object(schema, v, ty, path, &all, out);
            if let Some(t) = tag {
                // A tag that is a valid enum value but has no variant is a
                // union with only its base members: legal.
                let in_enum = all.iter().find(|m| &m.name == discriminator).and_then(|m| schema.types.get(&m.ty.name)).is_some_and(|d| matches!(d, TypeDef::Enum { values } if values.iter().any(|x| x == t)));
                if !in_enum && !variants.contains_key(t) {
                    out.push(Violation {
                        kind: Kind::BadDiscriminator,
                        path: format!("{path}.{discriminator}"),
                        schema_type: ty.to_string(),
                        expected: format!("a variant of {name} ({})", variants.keys().cloned().collect::<Vec<_>>().join(", ")),
                        got: shown(&Value::String(t.to_owned())),
                    });
                }
            }
        }
    }
}

fn object(schema: &Schema, v: &Value, ty: &TypeRef, path: &str, members: &[Member], out: &mut Vec<Violation>) {
    let Value::Object(map) = v else {
        out.push(Violation { kind: Kind::WrongType, path: path.to_owned(), schema_type: ty.to_string(), expected: format!("{} (an object)", ty.name), got: shown(v) });
        return;
    };
    for m in members {
        let at = format!("{path}.{}", m.name);
        match map.get(&m.name) {
            Some(x) => {
                let from = out.len();
                check(schema, x, &m.ty, &at, out);
                // A member's own value is named by its place in the struct.
                for v in &mut out[from..] {
                    if v.path == at {
                        v.schema_type = format!("{}.{}: {}", ty.name, m.name, m.ty);
                    }
                }
            }
            None if m.optional || m.conditional => {}
            None => out.push(Violation { kind: Kind::Missing, path: at, schema_type: ty.to_string(), expected: format!("member {} ({})", m.name, m.ty), got: "nothing".into() }),
        }
    }
    for (k, x) in map {
        if !members.iter().any(|m| &m.name == k) {
            out.push(Violation {
                kind: Kind::Extra,
                path: format!("{path}.{k}"),
                schema_type: ty.to_string(),
                expected: format!("only {}'s members", ty.name),
                got: shown(x),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(name: &str, array: bool) -> TypeRef {
        TypeRef { name: name.into(), array }
    }

    #[test]
    fn agent_versions_against_the_schemas() {
        assert!(newer_than_schema("10.0.2") && newer_than_schema("9.2.0"));
        assert!(!newer_than_schema("9.1.0") && !newer_than_schema("7.2.22") && !newer_than_schema("0.1.0-ref") && !newer_than_schema("weird"));
    }

    #[test]
    fn the_schema_parses_with_every_type_a_safe_command_returns() {
        let s = Schema::embedded();
        for c in ["guest-info", "guest-get-osinfo", "guest-network-get-interfaces", "guest-get-fsinfo", "guest-get-cpustats"] {
            let r = s.commands.get(c).and_then(|c| c.returns.clone()).unwrap_or_else(|| panic!("{c}"));
            assert!(s.types.contains_key(&r.name), "{c} returns {r}");
        }
        assert!(matches!(s.types.get("GuestCpuStats"), Some(TypeDef::Union { .. })));
        assert!(matches!(s.types.get("GuestFileWhence"), Some(TypeDef::Alternate { .. })));
    }

    #[test]
    fn violations_name_the_path_the_type_and_the_version() {
        let s = Schema::embedded();
        let good = json!({"version": "7.2", "supported_commands": [{"name": "guest-ping", "enabled": true, "success-response": true}]});
        assert_eq!(validate(s, &good, &t("GuestAgentInfo", false), "return"), vec![]);
        let bad = json!({"version": 7, "supported_commands": [{"name": "guest-ping", "enabled": "yes"}], "uptime": 5});
        let v = validate(s, &bad, &t("GuestAgentInfo", false), "return");
        let kinds: Vec<(Kind, &str)> = v.iter().map(|x| (x.kind, x.path.as_str())).collect();
        assert!(kinds.contains(&(Kind::WrongType, "return.version")), "{v:?}");
        assert!(kinds.contains(&(Kind::WrongType, "return.supported_commands[0].enabled")), "{v:?}");
        assert!(kinds.contains(&(Kind::Missing, "return.supported_commands[0].success-response")), "{v:?}");
        assert!(kinds.contains(&(Kind::Extra, "return.uptime")), "{v:?}");
        let msg = v.iter().find(|x| x.path == "return.version").unwrap().to_string();
        assert!(msg.contains("expected str, got 7") && msg.contains("QEMU 9.1"), "{msg}");
        // Ranges, enums, discriminators.
        let addr = json!([{"name": "eth0", "ip-addresses": [{"ip-address": "10.0.0.1", "ip-address-type": "ipv5", "prefix": "24"}]}]);
        let v = validate(s, &addr, &t("GuestNetworkInterface", true), "return");
        assert!(v.iter().any(|x| x.kind == Kind::BadEnum && x.path == "return[0].ip-addresses[0].ip-address-type"), "{v:?}");
        assert!(v.iter().any(|x| x.kind == Kind::WrongType && x.path == "return[0].ip-addresses[0].prefix" && x.to_string().contains(r#"got "24""#)), "{v:?}");
        let neg = json!({"count": -1, "statistics": {}});
        let stats = json!([{"name": "eth0", "statistics": {"rx-bytes": -5, "rx-packets": 0, "rx-errs": 0, "rx-dropped": 0, "tx-bytes": 0, "tx-packets": 0, "tx-errs": 0, "tx-dropped": 0}}]);
        let v = validate(s, &stats, &t("GuestNetworkInterface", true), "return");
        assert!(v.iter().any(|x| x.kind == Kind::OutOfRange && x.path == "return[0].statistics.rx-bytes"), "{v:?} {neg}");
        let cpu = json!([{"type": "beos", "cpu": 0}]);
        let v = validate(s, &cpu, &t("GuestCpuStats", true), "return");
        assert!(v.iter().any(|x| x.kind == Kind::BadEnum || x.kind == Kind::BadDiscriminator), "{v:?}");
    }
}
