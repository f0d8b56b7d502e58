//! The parsed-record caches mail-auth takes ([`mail_auth::ResolverCache`]):
//! SPF and DMARC records (TXT), and the A/AAAA/MX/PTR answers SPF
//! mechanisms ask for, kept until their DNS TTL runs out.
//!
//! hickory's own cache already answers repeated queries without the
//! network, but each message still paid a resolver lookup per name and
//! mail-auth parsed the SPF and DMARC records again. With these, a sender
//! domain seen within its TTL costs one hash lookup per record. The DNS
//! answers are the same ones, so the results cannot differ from uncached
//! checks except through TTL expiry, which both honour.

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use dashmap::DashMap;
use mail_auth::{MX, RecordSet, ResolverCache, Txt};

/// Most entries one cache keeps; past it, expired entries are dropped, and
/// if that is not enough, all of them (a flood of random domains must not
/// grow memory).
const MAX_ENTRIES: usize = 50_000;

/// A cache of values until an instant.
pub(super) struct TtlCache<K: Hash + Eq, V> {
    map: DashMap<K, (V, Instant)>,
}

impl<K: Hash + Eq, V> Default for TtlCache<K, V> {
    fn default() -> Self {
        Self { map: DashMap::new() }
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for TtlCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hit = self.map.get(name)?;
        if hit.1 > Instant::now() {
            return Some(hit.0.clone());
        }
        drop(hit);
        self.map.remove(name);
        None
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(name).map(|(_, (v, _))| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        if self.map.len() >= MAX_ENTRIES {
            let now = Instant::now();
            self.map.retain(|_, v| v.1 > now);
            if self.map.len() >= MAX_ENTRIES {
                self.map.clear();
            }
        }
        self.map.insert(key, (value, valid_until));
    }
}

/// One cache per record type, shared by every check of an authenticator.
#[derive(Default)]
pub(super) struct Caches {
    pub txt: TtlCache<Box<str>, Txt>,
    pub mx: TtlCache<Box<str>, RecordSet<MX>>,
    pub ipv4: TtlCache<Box<str>, RecordSet<Ipv4Addr>>,
    pub ipv6: TtlCache<Box<str>, RecordSet<Ipv6Addr>>,
    pub ptr: TtlCache<IpAddr, RecordSet<Box<str>>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let c: TtlCache<Box<str>, u32> = TtlCache::default();
        let now = Instant::now();
        c.insert("a".into(), 1, now + Duration::from_secs(60));
        c.insert("b".into(), 2, now);
        assert_eq!(c.get("a"), Some(1));
        assert_eq!(c.get("b"), None, "expired");
        assert_eq!(c.remove("a"), Some(1));
        assert_eq!(c.get("a"), None);
        for i in 0..MAX_ENTRIES + 10 {
            c.insert(i.to_string().into(), 0, now + Duration::from_secs(60));
        }
        assert!(c.map.len() <= MAX_ENTRIES, "{}", c.map.len());
    }
}
