//! Join tokens `SKR1.<ca hash>.<id>.<secret>`: their syntax, making them, their stored form (a
//! `JoinToken` object holding only a hash of the secret) and checking a presented secret. It
//! never keeps, prints or logs a secret, and never reads or writes the store itself.
//!
//! The parts: `SKR1` names the format; the CA hash is [`identity::ca_bundle_hash`] (sha256 over
//! the whole PEM bundle, hex), which a joining node checks against the bundle a server sends
//! before it sends anything secret; the id (6 characters of `[a-z0-9]`, as kubeadm's bootstrap
//! tokens) names the stored object and is not secret; the secret is 32 characters of `[a-z0-9]`
//! (≈ 165 bits; 16 to 64 accepted), drawn from the crypto provider's `SecureRandom` (aws-lc's,
//! seeded by the OS) by rejection sampling, so every character is equally likely.
//!
//! Stored: `sha256(<id> "." <secret>)`, hex — the id is the salt, which binds a hash to its token
//! (a 165-bit random secret needs no slow hash). [`verify`] compares hashes in constant time
//! (`subtle`) and checks in this order: unknown (never created or deleted), wrong secret,
//! expired, used up — so only a holder of the secret learns that a token expired or ran out. The
//! join endpoint should answer a peer with one "token not valid" for the first two.
//!
//! Spending a use is [`StoredToken::used`], written back with the object's `resourceVersion` as a
//! precondition, so two nodes racing for the last use cannot both win.

use std::fmt;
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::identity::{self, Role};
use crate::objects::meta;

/// The first part of every token of this format.
pub const PREFIX: &str = "SKR1";
/// Length of a token id.
pub const ID_LEN: usize = 6;
/// Length of a generated secret.
pub const SECRET_LEN: usize = 32;
/// The shortest secret accepted.
pub const SECRET_MIN: usize = 16;
/// The longest secret accepted.
pub const SECRET_MAX: usize = 64;

/// The stored form's `apiVersion`.
pub const API_VERSION: &str = "skerry.io/v1";
/// The stored form's `kind` (cluster-scoped; the name is the token id).
pub const KIND: &str = "JoinToken";
/// The resource's plural name.
pub const RESOURCE: &str = "jointokens";

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const HASH_PREFIX: &str = "sha256:";

/// What is wrong with a token, its making, its use or its stored form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a join token has four parts separated by dots (SKR1.<ca hash>.<id>.<secret>); this one has {0}")]
    Parts(usize),
    #[error("the token's first part is not SKR1: not a Skerry join token, or one of a newer format")]
    Prefix,
    #[error("the token's CA hash (second part) must be 64 lower-case hex characters (sha256)")]
    CaHash,
    #[error("the token's id (third part) must be 6 characters of a-z and 0-9")]
    Id,
    #[error("the token's secret (fourth part) must be 16 to 64 characters of a-z and 0-9")]
    Secret,
    #[error("join token {0} is unknown: it was never created or has been deleted")]
    Unknown(String),
    #[error("wrong secret for join token {0}")]
    WrongSecret(String),
    #[error("join token {id} expired at {at}; create a new one")]
    Expired { id: String, at: Timestamp },
    #[error("join token {0} has no uses left; create a new one")]
    UsedUp(String),
    #[error("invalid token request: {0}")]
    Spec(String),
    #[error("invalid JoinToken object: {0}")]
    Object(String),
    #[error("the random number generator failed")]
    Random,
}

/// A token secret. Prints as `<redacted>`; compares in constant time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// A secret as a peer presented it (checked by [`verify`]).
    pub fn presented(s: String) -> Secret {
        Secret(s)
    }

    /// The secret itself: only to hash it or to show a new token once.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A join token as a node is given it. `Display` and `Debug` hide the secret;
/// [`JoinToken::reveal`] writes the whole token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_hash: String,
    pub id: String,
    pub secret: Secret,
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}.{}.{}.{}", self.ca_hash, self.id, self.secret)
    }
}

impl FromStr for JoinToken {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        parse(s)
    }
}

impl JoinToken {
    /// The whole token, secret included: to show once when it is made.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}.{}.{}.{}", self.ca_hash, self.id, self.secret.expose())
    }

    /// Whether `bundle_pem` (the CA bundle a server sent) is the one this token names.
    pub fn names_ca(&self, bundle_pem: &[u8]) -> bool {
        identity::ca_bundle_hash(bundle_pem) == self.ca_hash
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn check_ca_hash(s: &str) -> Result<(), TokenError> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(TokenError::CaHash)
    }
}

/// Parses a token; surrounding white space (a trailing newline from a file) is ignored. The
/// error names the part that is wrong and never repeats the input.
pub fn parse(s: &str) -> Result<JoinToken, TokenError> {
    let parts: Vec<&str> = s.trim().split('.').collect();
    let [prefix, ca_hash, id, secret] = parts[..] else {
        return Err(TokenError::Parts(parts.len()));
    };
    if prefix != PREFIX {
        return Err(TokenError::Prefix);
    }
    check_ca_hash(ca_hash)?;
    if id.len() != ID_LEN || !id.bytes().all(is_token_char) {
        return Err(TokenError::Id);
    }
    if !(SECRET_MIN..=SECRET_MAX).contains(&secret.len()) || !secret.bytes().all(is_token_char) {
        return Err(TokenError::Secret);
    }
    Ok(JoinToken { ca_hash: ca_hash.into(), id: id.into(), secret: Secret(secret.into()) })
}

/// What a new token allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// The role a node that joins with it gets.
    pub role: Role,
    /// How long it lasts; `None`: until deleted.
    pub ttl: Option<SignedDuration>,
    /// How many joins it allows; `None`: any number.
    pub uses: Option<u32>,
    pub description: String,
}

/// A token as the store keeps it: no secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub id: String,
    /// `sha256(<id> "." <secret>)`, hex.
    pub secret_hash: String,
    pub role: Role,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    /// `None`: any number.
    pub uses_left: Option<u32>,
    pub description: String,
}

impl StoredToken {
    /// The token after one more join.
    pub fn used(&self) -> StoredToken {
        StoredToken { uses_left: self.uses_left.map(|n| n.saturating_sub(1)), ..self.clone() }
    }
}

fn hash_secret(id: &str, secret: &Secret) -> String {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update(b".");
    h.update(secret.expose().as_bytes());
    hex::encode(h.finalize())
}

/// `len` characters of `[a-z0-9]`, each equally likely: bytes of 252 and up are dropped, so the
/// remainder modulo 36 is uniform.
fn random_string(len: usize) -> Result<String, TokenError> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        identity::random_bytes(&mut buf).map_err(|_| TokenError::Random)?;
        for b in buf.iter().filter(|b| **b < 252).take(len - out.len()) {
            out.push(ALPHABET[usize::from(b % 36)] as char);
        }
    }
    Ok(out)
}

/// A new token for the cluster whose CA bundle hashes to `ca_hash`, and what to store of it.
/// Times are kept to the second, as the stored object writes them.
pub fn create(ca_hash: &str, spec: &TokenSpec, now: Timestamp) -> Result<(JoinToken, StoredToken), TokenError> {
    check_ca_hash(ca_hash)?;
    if spec.ttl.is_some_and(|ttl| ttl < SignedDuration::from_secs(1)) {
        return Err(TokenError::Spec("the time to live must be at least a second".into()));
    }
    if spec.uses == Some(0) {
        return Err(TokenError::Spec("a token must allow at least one use".into()));
    }
    let created = Timestamp::from_second(now.as_second()).map_err(|e| TokenError::Spec(e.to_string()))?;
    let expires = match spec.ttl {
        Some(ttl) => {
            let at = created.checked_add(ttl).map_err(|_| TokenError::Spec("the time to live is too long".into()))?;
            Some(Timestamp::from_second(at.as_second()).map_err(|e| TokenError::Spec(e.to_string()))?)
        }
        None => None,
    };
    let token =
        JoinToken { ca_hash: ca_hash.into(), id: random_string(ID_LEN)?, secret: Secret(random_string(SECRET_LEN)?) };
    let stored = StoredToken {
        id: token.id.clone(),
        secret_hash: hash_secret(&token.id, &token.secret),
        role: spec.role,
        created,
        expires,
        uses_left: spec.uses,
        description: spec.description.clone(),
    };
    Ok((token, stored))
}

/// Checks a presented secret for token `id` against what is stored (`None`: no such token) at
/// `now`; on success, the role the joining node gets. The caller then stores
/// [`StoredToken::used`].
pub fn verify(stored: Option<&StoredToken>, id: &str, secret: &Secret, now: Timestamp) -> Result<Role, TokenError> {
    let stored = match stored {
        Some(s) if s.id == id => s,
        _ => return Err(TokenError::Unknown(id.into())),
    };
    let presented = hash_secret(id, secret);
    if !bool::from(presented.as_bytes().ct_eq(stored.secret_hash.as_bytes())) {
        return Err(TokenError::WrongSecret(id.into()));
    }
    if let Some(at) = stored.expires.filter(|at| now >= *at) {
        return Err(TokenError::Expired { id: id.into(), at });
    }
    if stored.uses_left == Some(0) {
        return Err(TokenError::UsedUp(id.into()));
    }
    Ok(stored.role)
}

/// The stored form as a Kubernetes-shaped object (`skerry.io/v1` `JoinToken`, cluster-scoped,
/// named by the id).
pub fn to_object(t: &StoredToken) -> Value {
    let mut spec = json!({
        "role": t.role.as_str(),
        "secretHash": format!("{HASH_PREFIX}{}", t.secret_hash),
    });
    if let Some(at) = t.expires {
        spec["expirationTimestamp"] = json!(meta::timestamp(at));
    }
    if let Some(n) = t.uses_left {
        spec["usesLeft"] = json!(n);
    }
    if !t.description.is_empty() {
        spec["description"] = json!(t.description);
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": t.id, "creationTimestamp": meta::timestamp(t.created)},
        "spec": spec,
    })
}

/// Reads the stored form back; every field is checked, since the object may have been written
/// by hand through the API.
pub fn from_object(obj: &Value) -> Result<StoredToken, TokenError> {
    let bad = |what: &str| TokenError::Object(what.to_string());
    if obj["apiVersion"] != API_VERSION || obj["kind"] != KIND {
        return Err(bad("apiVersion must be skerry.io/v1 and kind JoinToken"));
    }
    let id = obj.pointer("/metadata/name").and_then(Value::as_str).ok_or_else(|| bad("metadata.name is missing"))?;
    if id.len() != ID_LEN || !id.bytes().all(is_token_char) {
        return Err(bad("metadata.name must be a token id: 6 characters of a-z and 0-9"));
    }
    let created = meta::parse_time(obj.pointer("/metadata/creationTimestamp"))
        .ok_or_else(|| bad("metadata.creationTimestamp is missing or not a time"))?;
    let spec = &obj["spec"];
    let role = spec["role"]
        .as_str()
        .ok_or_else(|| bad("spec.role is missing"))?
        .parse::<Role>()
        .map_err(|e| TokenError::Object(format!("spec.role: {e}")))?;
    let secret_hash = spec["secretHash"]
        .as_str()
        .and_then(|h| h.strip_prefix(HASH_PREFIX))
        .filter(|h| check_ca_hash(h).is_ok())
        .ok_or_else(|| bad("spec.secretHash must be sha256: and 64 lower-case hex characters"))?;
    let expires = match spec.get("expirationTimestamp") {
        None | Some(Value::Null) => None,
        Some(v) => Some(meta::parse_time(Some(v)).ok_or_else(|| bad("spec.expirationTimestamp is not a time"))?),
    };
    let uses_left = match spec.get("usesLeft") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| bad("spec.usesLeft must be a whole number"))?,
        ),
    };
    let description = spec.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
    Ok(StoredToken { id: id.into(), secret_hash: secret_hash.into(), role, created, expires, uses_left, description })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn t0() -> Timestamp {
        "2026-03-01T12:00:00Z".parse().unwrap()
    }

    fn spec(role: Role) -> TokenSpec {
        TokenSpec { role, ttl: None, uses: None, description: String::new() }
    }

    #[test]
    fn a_new_token_has_the_documented_shape() {
        let (token, stored) = create(HASH, &spec(Role::Agent), t0()).unwrap();
        let text = token.reveal();
        let parts: Vec<_> = text.split('.').collect();
        assert_eq!(parts[0], "SKR1");
        assert_eq!(parts[1], HASH);
        assert_eq!(parts[2].len(), ID_LEN);
        assert_eq!(parts[3].len(), SECRET_LEN);
        assert!(parts[2..].iter().all(|p| p.bytes().all(is_token_char)));
        assert_eq!(parse(&text).unwrap(), token);
        assert_eq!(stored.id, token.id);
        assert_eq!(stored.secret_hash, hex::encode(Sha256::digest(format!("{}.{}", parts[2], parts[3]))));
        assert!(!stored.secret_hash.contains(parts[3]));
        // Two tokens never share an id or secret.
        let (other, _) = create(HASH, &spec(Role::Agent), t0()).unwrap();
        assert_ne!(other.id, token.id);
        assert_ne!(other.secret, token.secret);
    }

    #[test]
    fn random_strings_use_the_whole_alphabet_evenly() {
        let sample = random_string(36 * 400).unwrap();
        let mut counts = [0usize; 36];
        for b in sample.bytes() {
            counts[ALPHABET.iter().position(|a| *a == b).unwrap()] += 1;
        }
        // 400 expected per character; a fair generator stays far inside these bounds.
        assert!(counts.iter().all(|c| (250..=550).contains(c)), "{counts:?}");
    }

    #[test]
    fn malformed_tokens_say_which_part_is_wrong() {
        let secret = "abcdefghij0123456789";
        let cases: &[(String, TokenError)] = &[
            (String::new(), TokenError::Parts(1)),
            (format!("SKR1.{HASH}.abc123"), TokenError::Parts(3)),
            (format!("SKR1.{HASH}.abc123.{secret}.x"), TokenError::Parts(5)),
            (format!("K10.{HASH}.abc123.{secret}"), TokenError::Prefix),
            (format!("skr1.{HASH}.abc123.{secret}"), TokenError::Prefix),
            (format!("SKR1.{}.abc123.{secret}", &HASH[1..]), TokenError::CaHash),
            (format!("SKR1.{}.abc123.{secret}", HASH.to_uppercase()), TokenError::CaHash),
            (format!("SKR1.{}g.abc123.{secret}", &HASH[1..]), TokenError::CaHash),
            (format!("SKR1.{HASH}.abc12.{secret}"), TokenError::Id),
            (format!("SKR1.{HASH}.ABC123.{secret}"), TokenError::Id),
            (format!("SKR1.{HASH}.abc123.short"), TokenError::Secret),
            (format!("SKR1.{HASH}.abc123.{}", "a".repeat(65)), TokenError::Secret),
            (format!("SKR1.{HASH}.abc123.{secret}!"), TokenError::Secret),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text).as_ref(), Err(want), "{text}");
            // The message never repeats the input.
            let message = parse(text).unwrap_err().to_string();
            assert!(!message.contains(secret) && !message.contains(HASH), "{message}");
        }
        let ok = format!("  SKR1.{HASH}.abc123.{secret}\n");
        assert_eq!(ok.parse::<JoinToken>().unwrap().secret.expose(), secret);
    }

    #[test]
    fn verify_tells_each_failure_apart() {
        let s = TokenSpec { ttl: Some(SignedDuration::from_hours(24)), uses: Some(2), ..spec(Role::Server) };
        let (token, stored) = create(HASH, &s, t0()).unwrap();
        let id = token.id.as_str();
        assert_eq!(verify(Some(&stored), id, &token.secret, t0()), Ok(Role::Server));

        assert_eq!(verify(None, id, &token.secret, t0()), Err(TokenError::Unknown(id.into())));
        assert_eq!(verify(Some(&stored), "zzzzzz", &token.secret, t0()), Err(TokenError::Unknown("zzzzzz".into())));
        let wrong = Secret("abcdefghijklmnopqrstuvwxyz012345".into());
        assert_eq!(verify(Some(&stored), id, &wrong, t0()), Err(TokenError::WrongSecret(id.into())));

        let day_later = t0() + SignedDuration::from_hours(24);
        let err = verify(Some(&stored), id, &token.secret, day_later).unwrap_err();
        assert_eq!(err, TokenError::Expired { id: id.into(), at: day_later });
        assert_eq!(err.to_string(), format!("join token {id} expired at 2026-03-02T12:00:00Z; create a new one"));
        // A wrong secret is reported as such even once expired: expiry is only told to holders.
        assert_eq!(verify(Some(&stored), id, &wrong, day_later), Err(TokenError::WrongSecret(id.into())));

        let once = stored.used();
        assert_eq!(once.uses_left, Some(1));
        assert_eq!(verify(Some(&once), id, &token.secret, t0()), Ok(Role::Server));
        let spent = once.used();
        assert_eq!(verify(Some(&spent), id, &token.secret, t0()), Err(TokenError::UsedUp(id.into())));
        assert_eq!(spent.used().uses_left, Some(0));

        // Unlimited tokens stay valid.
        let (token, stored) = create(HASH, &spec(Role::Agent), t0()).unwrap();
        let much_later = t0() + SignedDuration::from_hours(24 * 3650);
        assert_eq!(verify(Some(&stored.used().used()), &token.id, &token.secret, much_later), Ok(Role::Agent));
    }

    #[test]
    fn bad_specs_are_refused() {
        let zero = TokenSpec { uses: Some(0), ..spec(Role::Agent) };
        assert!(matches!(create(HASH, &zero, t0()), Err(TokenError::Spec(_))));
        let negative = TokenSpec { ttl: Some(SignedDuration::from_secs(-5)), ..spec(Role::Agent) };
        assert!(matches!(create(HASH, &negative, t0()), Err(TokenError::Spec(_))));
        assert_eq!(create("nothex", &spec(Role::Agent), t0()).unwrap_err(), TokenError::CaHash);
    }

    #[test]
    fn the_ca_hash_names_the_bundle() {
        let pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let (token, _) = create(&identity::ca_bundle_hash(pem), &spec(Role::Agent), t0()).unwrap();
        assert!(token.names_ca(pem));
        assert!(!token.names_ca(b"another bundle"));
    }

    #[test]
    fn the_stored_object_is_kubernetes_shaped() {
        let s = TokenSpec {
            ttl: Some(SignedDuration::from_hours(2)),
            uses: Some(3),
            description: "rack 4".into(),
            ..spec(Role::Agent)
        };
        let (token, stored) = create(HASH, &s, t0()).unwrap();
        let obj = to_object(&stored);
        assert_eq!(
            obj,
            json!({
                "apiVersion": "skerry.io/v1",
                "kind": "JoinToken",
                "metadata": {"name": token.id, "creationTimestamp": "2026-03-01T12:00:00Z"},
                "spec": {
                    "role": "agent",
                    "secretHash": format!("sha256:{}", stored.secret_hash),
                    "expirationTimestamp": "2026-03-01T14:00:00Z",
                    "usesLeft": 3,
                    "description": "rack 4",
                },
            })
        );
        assert!(!obj.to_string().contains(token.secret.expose()));
        assert_eq!(from_object(&obj).unwrap(), stored);

        let mut broken = obj.clone();
        broken["spec"]["role"] = json!("admin");
        assert!(from_object(&broken).unwrap_err().to_string().contains("spec.role"));
        let mut broken = obj.clone();
        broken["spec"]["secretHash"] = json!(stored.secret_hash);
        assert!(from_object(&broken).unwrap_err().to_string().contains("spec.secretHash"));
        let mut broken = obj.clone();
        broken["spec"]["usesLeft"] = json!(-1);
        assert!(from_object(&broken).unwrap_err().to_string().contains("spec.usesLeft"));
        let mut broken = obj;
        broken["kind"] = json!("Secret");
        assert!(from_object(&broken).is_err());
    }

    #[test]
    fn nothing_secret_is_printed() {
        let (token, stored) = create(HASH, &spec(Role::Agent), t0()).unwrap();
        let secret = token.secret.expose();
        for text in [
            format!("{token}"),
            format!("{token:?}"),
            format!("{:?}", token.secret),
            format!("{}", token.secret),
            format!("{stored:?}"),
        ] {
            assert!(!text.contains(secret), "{text}");
        }
        assert_eq!(token.to_string(), format!("SKR1.{HASH}.{}.<redacted>", token.id));
        assert!(format!("{token:?}").contains("<redacted>"));
    }

    fn arb_token() -> impl Strategy<Value = JoinToken> {
        ("[0-9a-f]{64}", "[a-z0-9]{6}", "[a-z0-9]{16,64}").prop_map(|(ca_hash, id, secret)| JoinToken {
            ca_hash,
            id,
            secret: Secret(secret),
        })
    }

    fn arb_stored() -> impl Strategy<Value = StoredToken> {
        (
            "[a-z0-9]{6}",
            "[0-9a-f]{64}",
            prop_oneof![Just(Role::Agent), Just(Role::Server)],
            0i64..4_000_000_000,
            proptest::option::of(0i64..4_000_000_000),
            proptest::option::of(any::<u32>()),
            ".{0,40}",
        )
            .prop_map(|(id, secret_hash, role, created, expires, uses_left, description)| StoredToken {
                id,
                secret_hash,
                role,
                created: Timestamp::from_second(created).unwrap(),
                expires: expires.map(|s| Timestamp::from_second(s).unwrap()),
                uses_left,
                description,
            })
    }

    proptest! {
        #[test]
        fn parse_reads_back_what_reveal_writes(token in arb_token()) {
            prop_assert_eq!(parse(&token.reveal()), Ok(token));
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_near_tokens(s in "(SKR1|skr1|K10)?[.0-9a-fA-Z!]{0,140}") {
            if let Ok(token) = parse(&s) {
                prop_assert_eq!(token.reveal(), s.trim());
            }
        }

        #[test]
        fn stored_objects_read_back(stored in arb_stored()) {
            prop_assert_eq!(from_object(&to_object(&stored)), Ok(stored));
        }

        #[test]
        fn from_object_never_panics(v in any::<String>().prop_map(|s| json!({
            "apiVersion": "skerry.io/v1", "kind": "JoinToken", "metadata": {"name": s.clone(), "creationTimestamp": s.clone()},
            "spec": {"role": s.clone(), "secretHash": s.clone(), "usesLeft": s}
        }))) {
            let _ = from_object(&v);
        }
    }
}
