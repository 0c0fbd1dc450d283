//! Where a setting takes effect, so a caller can restrict itself to part of the table.

use std::fmt;
use std::str::FromStr;

use crate::error::ParseScopeError;

/// Where a setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Private to a network namespace: `unshare -n` gets its own copy.
    Netns,
    /// Kernel-global: one value for the whole machine.
    Host,
    /// New login sessions and services (`/etc/security/limits.d`, systemd `LimitNOFILE=`).
    Session,
}

const ALL: [Scope; 3] = [Scope::Netns, Scope::Host, Scope::Session];

impl Scope {
    /// The name `settings.tsv` and `--only` use.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Netns => "netns",
            Scope::Host => "host",
            Scope::Session => "session",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Scope::Netns => 1,
            Scope::Host => 2,
            Scope::Session => 4,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scope {
    type Err = ParseScopeError;

    fn from_str(s: &str) -> Result<Scope, ParseScopeError> {
        ALL.into_iter()
            .find(|scope| scope.name() == s)
            .ok_or_else(|| ParseScopeError { text: s.to_owned() })
    }
}

/// A set of scopes. Parses from `all` or a comma-separated list such as `netns,session`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope: the whole table.
    pub const ALL: Scopes = Scopes(1 | 2 | 4);

    /// Just these scopes.
    pub fn only(scopes: &[Scope]) -> Scopes {
        Scopes(scopes.iter().fold(0, |bits, s| bits | s.bit()))
    }

    /// Whether `scope` is in the set.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

impl FromStr for Scopes {
    type Err = ParseScopeError;

    fn from_str(s: &str) -> Result<Scopes, ParseScopeError> {
        if s == "all" {
            return Ok(Scopes::ALL);
        }
        let list: Result<Vec<Scope>, ParseScopeError> = s.split(',').map(str::parse).collect();
        Ok(Scopes::only(&list?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_lists_and_all() {
        let s: Scopes = "netns,session".parse().unwrap();
        assert!(s.contains(Scope::Netns));
        assert!(s.contains(Scope::Session));
        assert!(!s.contains(Scope::Host));
        assert_eq!("all".parse::<Scopes>(), Ok(Scopes::ALL));
        assert_eq!(
            "host,netns,session".parse::<Scopes>(),
            Ok(Scopes::ALL),
            "listing every scope is the same as all"
        );
    }

    #[test]
    fn rejects_unknown_and_empty_words() {
        assert_eq!(
            "netns,net".parse::<Scopes>(),
            Err(ParseScopeError { text: "net".into() })
        );
        assert_eq!(
            "".parse::<Scopes>(),
            Err(ParseScopeError {
                text: String::new()
            })
        );
    }
}
