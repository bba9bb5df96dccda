//! Request fields whose JSON has more than one shape (a string or an array,
//! token ids or texts) or a bounded length, read straight from the body's
//! bytes. No `serde_json::Value` tree is built: it costs about 80 bytes per
//! element, so a 4 MiB body of small numbers would take 300 MB. Arrays
//! with a bound in `limits.rs` are only counted past it, never stored.
//! Errors inside an element carry its path (`prompt[3]`, `stop[1]`).

use crate::limits::{MAX_CONTENT_PARTS, MAX_LOGIT_BIAS, MAX_STOP, MAX_STOP_BYTES};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

/// Reads at most `max` elements; past that, counts the rest without
/// keeping them and fails with the count.
fn bounded<'de, A, T>(mut seq: A, max: usize, what: &str) -> Result<Vec<T>, A::Error>
where
    A: SeqAccess<'de>,
    T: Deserialize<'de>,
{
    let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(max));
    while let Some(x) = seq.next_element()? {
        if out.len() == max {
            let mut n = max + 1;
            while seq.next_element::<IgnoredAny>()?.is_some() {
                n += 1;
            }
            return Err(de::Error::custom(format!("{n} {what}, at most {max}")));
        }
        out.push(x);
    }
    Ok(out)
}

/// An array of at most `N` elements.
#[derive(Debug)]
pub struct AtMost<T, const N: usize>(pub Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for AtMost<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = AtMost<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an array of at most {N} elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                bounded(seq, N, "elements").map(AtMost)
            }
        }
        d.deserialize_seq(V::<T, N>(PhantomData))
    }
}

/// A message's content: a string, or an array of content parts.
#[derive(Debug)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize, Debug)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a string or an array of at most {MAX_CONTENT_PARTS} content parts"
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Content, E> {
                Ok(Content::Text(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Content, E> {
                Ok(Content::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Content, A::Error> {
                bounded(seq, MAX_CONTENT_PARTS, "content parts").map(Content::Parts)
            }
        }
        d.deserialize_any(V)
    }
}

/// Stop strings: one, or an array of at most [`MAX_STOP`], each at most
/// [`MAX_STOP_BYTES`].
#[derive(Debug)]
pub struct Stop(pub Vec<String>);

fn stop_string<E: de::Error>(s: String) -> Result<String, E> {
    if s.len() > MAX_STOP_BYTES {
        return Err(E::custom(format!(
            "a stop string of {} bytes, at most {MAX_STOP_BYTES}",
            s.len()
        )));
    }
    Ok(s)
}

impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Stop;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a string or an array of at most {MAX_STOP} strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Stop, E> {
                self.visit_string(s.to_string())
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Stop, E> {
                Ok(Stop(vec![stop_string(s)?]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Stop, A::Error> {
                let stops: Vec<String> = bounded(seq, MAX_STOP, "stop strings")?;
                let stops = stops
                    .into_iter()
                    .map(stop_string)
                    .collect::<Result<_, _>>()?;
                Ok(Stop(stops))
            }
        }
        d.deserialize_any(V)
    }
}

/// `prompt`: text, token ids, or a batch (an array) of either. The first
/// element of an array decides which; the others must match it.
#[derive(Debug)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    Texts(Vec<String>),
    TokenLists(Vec<Vec<u32>>),
}

/// The first element of a prompt array.
enum First {
    Id(u32),
    Text(String),
    Ids(Vec<u32>),
}

impl<'de> Deserialize<'de> for First {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = First;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a token id, a string, or an array of token ids")
            }
            fn visit_u64<E: de::Error>(self, id: u64) -> Result<First, E> {
                u32::try_from(id)
                    .map(First::Id)
                    .map_err(|_| E::custom(format!("{id} is not a token id")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<First, E> {
                Ok(First::Text(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<First, E> {
                Ok(First::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<First, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element()? {
                    ids.push(id);
                }
                Ok(First::Ids(ids))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        /// The rest of an array whose first element was `first`.
        fn rest<'de, A: SeqAccess<'de>, T: Deserialize<'de>>(
            first: T,
            mut seq: A,
        ) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).saturating_add(1));
            out.push(first);
            while let Some(x) = seq.next_element()? {
                out.push(x);
            }
            Ok(out)
        }
        impl<'de> Visitor<'de> for V {
            type Value = Prompt;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a string, an array of token ids, or an array of strings or of token arrays"
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Prompt, E> {
                Ok(Prompt::Text(s.to_string()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Prompt, E> {
                Ok(Prompt::Text(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prompt, A::Error> {
                Ok(match seq.next_element::<First>()? {
                    None => return Err(de::Error::custom("the prompt is empty")),
                    Some(First::Id(id)) => Prompt::Tokens(rest(id, seq)?),
                    Some(First::Text(s)) => Prompt::Texts(rest(s, seq)?),
                    Some(First::Ids(ids)) => Prompt::TokenLists(rest(ids, seq)?),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether an optional field was given: `[]` and `"none"` are not, and
/// `"auto"` is told apart (tool_choice). Its contents are skipped unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    Empty,
    Auto,
    Other,
}

impl<'de> Deserialize<'de> for Given {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Given;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Given, E> {
                Ok(Given::Empty)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Given, E> {
                Ok(Given::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Given, E> {
                Ok(Given::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Given, E> {
                Ok(Given::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Given, E> {
                Ok(Given::Other)
            }
            fn visit_str<E>(self, s: &str) -> Result<Given, E> {
                Ok(match s {
                    "none" => Given::Empty,
                    "auto" => Given::Auto,
                    _ => Given::Other,
                })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Given, A::Error> {
                let mut given = Given::Empty;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    given = Given::Other;
                }
                Ok(given)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Given, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Given::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A `logit_bias` key: a token id, or a text whose tokens are all biased.
#[derive(Debug, Clone, PartialEq)]
pub enum BiasKey {
    Id(u32),
    Text(String),
}

/// `logit_bias`: at most [`MAX_LOGIT_BIAS`] entries, as OpenAI's object
/// (`{"15043": -1}`; a key that is not a number is a text) or
/// llama-server's array of pairs (`[[15043, -1], ["hello", false]]`). A
/// value is a number or `false` (banned: minus infinity); the ids and
/// ranges are checked later against the vocabulary.
#[derive(Debug, Default)]
pub struct LogitBias(pub Vec<(BiasKey, f64)>);

/// A bias value: a number, or `false` for a ban.
struct BiasValue(f64);

impl<'de> Deserialize<'de> for BiasValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BiasValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a number, or false to ban the token")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<BiasValue, E> {
                if b {
                    Err(E::custom(
                        "true is not a bias: give a number, or false to ban",
                    ))
                } else {
                    Ok(BiasValue(f64::NEG_INFINITY))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<BiasValue, E> {
                Ok(BiasValue(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<BiasValue, E> {
                Ok(BiasValue(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<BiasValue, E> {
                Ok(BiasValue(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `[key, value]` pair of the array form.
struct BiasPair(BiasKey, f64);

impl<'de> Deserialize<'de> for BiasPair {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BiasPair;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a pair [token id or text, bias]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<BiasPair, A::Error> {
                let key: First = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("an empty pair: give [token, bias]"))?;
                let key = match key {
                    First::Id(id) => BiasKey::Id(id),
                    First::Text(t) => BiasKey::Text(t),
                    First::Ids(_) => {
                        return Err(de::Error::custom("a pair's key is a token id or a text"))
                    }
                };
                let BiasValue(v) = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::custom("a pair without its bias"))?;
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::custom("a pair has two elements"));
                }
                Ok(BiasPair(key, v))
            }
        }
        d.deserialize_seq(V)
    }
}

impl<'de> Deserialize<'de> for LogitBias {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LogitBias;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "an object of at most {MAX_LOGIT_BIAS} token ids to numbers, or an array of \
                     [token, bias] pairs"
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LogitBias, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    if out.len() == MAX_LOGIT_BIAS {
                        let mut n = MAX_LOGIT_BIAS + 1;
                        map.next_value::<IgnoredAny>()?;
                        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                            n += 1;
                        }
                        return Err(de::Error::custom(format!(
                            "{n} entries, at most {MAX_LOGIT_BIAS}"
                        )));
                    }
                    let BiasValue(v) = map.next_value()?;
                    let key = match k.parse::<u32>() {
                        Ok(id) => BiasKey::Id(id),
                        Err(_) => BiasKey::Text(k),
                    };
                    out.push((key, v));
                }
                Ok(LogitBias(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<LogitBias, A::Error> {
                let pairs: Vec<BiasPair> = bounded(seq, MAX_LOGIT_BIAS, "entries")?;
                Ok(LogitBias(pairs.into_iter().map(|p| (p.0, p.1)).collect()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: for<'de> Deserialize<'de>>(json: &str) -> Result<T, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn given_tells_empty_auto_and_other_apart() {
        for (json, want) in [
            ("[]", Given::Empty),
            ("\"none\"", Given::Empty),
            ("\"auto\"", Given::Auto),
            ("[{\"type\": \"function\"}]", Given::Other),
            ("{}", Given::Other),
            ("0", Given::Other),
            ("false", Given::Other),
            ("\"required\"", Given::Other),
        ] {
            assert_eq!(read::<Given>(json).unwrap(), want, "{json}");
        }
    }

    #[test]
    fn bounded_arrays_count_past_the_bound() {
        let ok: AtMost<u8, 3> = read("[1, 2, 3]").unwrap();
        assert_eq!(ok.0, [1, 2, 3]);
        let e = read::<AtMost<u8, 3>>("[1, 2, 3, 4, [5], {\"a\": 6}]").unwrap_err();
        assert!(e.starts_with("6 elements, at most 3"), "{e}");
        let many = format!(
            "{{{}}}",
            (0..2000)
                .map(|i| format!("\"{i}\": 1"))
                .collect::<Vec<_>>()
                .join(",")
        );
        let e = read::<LogitBias>(&many).unwrap_err();
        assert!(e.starts_with("2000 entries, at most 1024"), "{e}");
    }

    #[test]
    fn prompt_arrays_follow_their_first_element() {
        assert!(
            matches!(read::<Prompt>("[[1, 2], [3]]"), Ok(Prompt::TokenLists(v)) if v == [vec![1, 2], vec![3]])
        );
        for bad in [
            "[1, \"a\"]",
            "[\"a\", 1]",
            "[[1], 2]",
            "[4294967296]",
            "[-1]",
            "[1.0]",
            "[]",
            "[{}]",
            "[true]",
            "{}",
            "1",
        ] {
            assert!(read::<Prompt>(bad).is_err(), "{bad}");
        }
    }
}
