//! Which participant a datagram on the SFU's socket belongs to. A STUN check names its peer
//! connection by the server's ICE ufrag; every address such a check came from then routes the
//! rest of that participant's packets (DTLS, SRTP, SRTCP).
//!
//! A browser checks a pair per local candidate (127.0.0.1 and the host's other addresses all
//! reach a loopback SFU) and picks the pair its media takes itself, so every checked address
//! stays routed: keeping only the latest one dropped the chosen pair's media whenever another
//! pair's check came last, until the next check on the chosen pair.

use std::collections::HashMap;
use std::net::SocketAddr;

/// The most source addresses routed to one participant; past it the oldest is dropped.
pub const MAX_ADDRS: usize = 8;

/// A participant: (room, participant id).
pub type Route = (String, String);

/// The SFU's routing table.
#[derive(Debug, Default)]
pub struct Routes {
    by_ufrag: HashMap<String, Route>,
    by_addr: HashMap<SocketAddr, Route>,
    /// Each participant's addresses, oldest first.
    addrs: HashMap<Route, Vec<SocketAddr>>,
    /// Each participant's ufrag.
    ufrags: HashMap<Route, String>,
}

impl Routes {
    /// The participant that the server's ICE username `ufrag` was given to.
    pub fn by_ufrag(&self, ufrag: &str) -> Option<&Route> {
        self.by_ufrag.get(ufrag)
    }

    /// The participant packets from `from` belong to.
    pub fn by_addr(&self, from: &SocketAddr) -> Option<&Route> {
        self.by_addr.get(from)
    }

    /// The server's ICE username for `route`, given in its answer.
    pub fn set_ufrag(&mut self, route: Route, ufrag: String) {
        if let Some(old) = self.ufrags.insert(route.clone(), ufrag.clone()) {
            self.by_ufrag.remove(&old);
        }
        self.by_ufrag.insert(ufrag, route);
    }

    /// A STUN check for `route` came from `from`: packets from there are its from now on (an
    /// address another participant used before is taken from it).
    pub fn learn(&mut self, from: SocketAddr, route: &Route) {
        if self.by_addr.get(&from) == Some(route) {
            return;
        }
        if let Some(previous) = self.by_addr.insert(from, route.clone())
            && let Some(theirs) = self.addrs.get_mut(&previous)
        {
            theirs.retain(|a| *a != from);
        }
        let mine = self.addrs.entry(route.clone()).or_default();
        if mine.len() == MAX_ADDRS {
            let oldest = mine.remove(0);
            self.by_addr.remove(&oldest);
        }
        mine.push(from);
    }

    /// Forgets everything about `route` (it left).
    pub fn forget(&mut self, route: &Route) {
        if let Some(u) = self.ufrags.remove(route) {
            self.by_ufrag.remove(&u);
        }
        for a in self.addrs.remove(route).unwrap_or_default() {
            self.by_addr.remove(&a);
        }
    }

    /// Routed addresses (for tests and leak checks).
    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str) -> Route {
        ("room".to_owned(), id.to_owned())
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn every_checked_address_routes_until_the_participant_leaves() {
        let mut r = Routes::default();
        r.set_ufrag(route("a"), "uA".into());
        assert_eq!(r.by_ufrag("uA"), Some(&route("a")));
        // Checks from two local candidates, the unused pair's last: both still route.
        r.learn(addr("127.0.0.1:4000"), &route("a"));
        r.learn(addr("192.0.2.2:5000"), &route("a"));
        r.learn(addr("192.0.2.2:5000"), &route("a"));
        assert_eq!(r.by_addr(&addr("127.0.0.1:4000")), Some(&route("a")));
        assert_eq!(r.by_addr(&addr("192.0.2.2:5000")), Some(&route("a")));
        assert_eq!(r.addresses(), 2);
        r.forget(&route("a"));
        assert_eq!(r.by_ufrag("uA"), None);
        assert_eq!(r.by_addr(&addr("127.0.0.1:4000")), None);
        assert_eq!(r.addresses(), 0);
    }

    #[test]
    fn addresses_are_bounded_per_participant() {
        let mut r = Routes::default();
        for port in 0..(MAX_ADDRS as u16 + 3) {
            r.learn(SocketAddr::from(([127, 0, 0, 1], 6000 + port)), &route("a"));
        }
        assert_eq!(r.addresses(), MAX_ADDRS);
        // The oldest went first.
        assert_eq!(r.by_addr(&addr("127.0.0.1:6000")), None);
        assert_eq!(r.by_addr(&addr("127.0.0.1:6003")), Some(&route("a")));
    }

    #[test]
    fn an_address_moves_to_the_participant_that_checked_from_it_last() {
        let mut r = Routes::default();
        r.learn(addr("127.0.0.1:7000"), &route("a"));
        r.learn(addr("127.0.0.1:7000"), &route("b"));
        assert_eq!(r.by_addr(&addr("127.0.0.1:7000")), Some(&route("b")));
        // a's leaving does not take b's address with it.
        r.forget(&route("a"));
        assert_eq!(r.by_addr(&addr("127.0.0.1:7000")), Some(&route("b")));
        r.forget(&route("b"));
        assert_eq!(r.addresses(), 0);
    }

    #[test]
    fn a_new_ufrag_replaces_the_old() {
        let mut r = Routes::default();
        r.set_ufrag(route("a"), "u1".into());
        r.set_ufrag(route("a"), "u2".into());
        assert_eq!(r.by_ufrag("u1"), None);
        assert_eq!(r.by_ufrag("u2"), Some(&route("a")));
    }
}
