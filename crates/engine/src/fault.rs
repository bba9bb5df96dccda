//! A test hook: a deliberate panic at a chosen place in the engine, so
//! the tests can check that supervision fails only the request it hits.

/// A deliberate panic, for the tests of supervision: it fires at `site`
/// while handling a request whose sampler seed is `seed`.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub site: FaultSite,
    pub seed: u64,
}

#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultSite {
    /// While admitting the request into a slot.
    Admit,
    /// During a forward pass that holds one of its rows.
    Step,
    /// While sampling its next token.
    Sample,
    /// In the scheduler loop itself, outside any supervision: the thread
    /// dies (what `/health` must then report).
    Thread,
}

impl std::str::FromStr for Fault {
    type Err = String;

    /// `SITE:SEED`, e.g. `sample:4242`.
    fn from_str(s: &str) -> Result<Fault, String> {
        let (site, seed) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected SITE:SEED"))?;
        let site = match site {
            "admit" => FaultSite::Admit,
            "step" => FaultSite::Step,
            "sample" => FaultSite::Sample,
            "thread" => FaultSite::Thread,
            _ => {
                return Err(format!(
                    "{site:?}: the site is admit, step, sample or thread"
                ))
            }
        };
        let seed = seed
            .parse()
            .map_err(|_| format!("{seed:?} is not a seed"))?;
        Ok(Fault { site, seed })
    }
}
